import pandas as pd
import pytest

from augbench.quickstart import quickstart
from tests.conftest import TINY_OVERRIDES


@pytest.mark.slow  # evaluates three encoders on the full-size quick suite: minutes on two cores
def test_quickstart_compares_both_presets_with_a_random_encoder_and_reuses_finished_runs(tmp_path):
    results = quickstart(tmp_path, TINY_OVERRIDES, presets=["moco_v2", "byol"])

    written = pd.read_csv(tmp_path / "results.csv")
    assert sorted(written["encoder"].unique()) == ["byol", "moco_v2", "random"]
    assert set(written["task"]) == {"shape", "hue", "orientation", "scale", "position", "background"}
    assert len(written) == len(results) and set(written["seed"]) == {0}
    assert written.loc[written["metric"] != "r2", "value"].between(0, 100).all()
    assert "random" in (tmp_path / "results.md").read_text()
    for preset in ("moco_v2", "byol"):
        assert (tmp_path / f"{preset}_seed0" / "encoder.safetensors").is_file()

    checkpoint = tmp_path / "moco_v2_seed0" / "encoder.safetensors"
    trained_at = checkpoint.stat().st_mtime_ns
    again = quickstart(tmp_path, TINY_OVERRIDES, presets=["moco_v2", "byol"])
    assert checkpoint.stat().st_mtime_ns == trained_at  # reused, not retrained
    # Features of the reloaded encoder may differ from the in-memory one's by float rounding.
    pd.testing.assert_series_equal(again["value"], results["value"], atol=1.0, check_exact=False)


@pytest.mark.slow  # pretrains once and evaluates on the full-size quick suite
def test_a_finished_quickstart_run_with_another_config_is_refused_not_reused(tmp_path):
    from augbench.config import ConfigError

    quickstart(tmp_path, TINY_OVERRIDES, presets=["moco_v2"])
    with pytest.raises(ConfigError, match=r"moco_v2_seed0: holds a finished run with another config .*model.width"):
        quickstart(tmp_path, [*TINY_OVERRIDES, "model.width=0.25"], presets=["moco_v2"])
