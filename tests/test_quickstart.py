import pandas as pd
import pytest

from augbench.quickstart import quickstart
from tests.conftest import TINY_OVERRIDES


@pytest.mark.slow  # evaluates three encoders on the full-size quick suite: minutes on two cores
def test_quickstart_compares_both_presets_with_a_random_encoder_and_reuses_finished_runs(tmp_path):
    results = quickstart(tmp_path, TINY_OVERRIDES)

    written = pd.read_csv(tmp_path / "results.csv")
    assert sorted(written["encoder"].unique()) == ["byol", "moco_v2", "random"]
    assert {"shape", "hue", "orientation"} <= set(written["task"])
    assert len(written) == len(results)
    assert written["value"].between(0, 100).all()
    assert "random" in (tmp_path / "results.md").read_text()
    for preset in ("moco_v2", "byol"):
        assert (tmp_path / preset / "encoder.safetensors").is_file()

    checkpoint = tmp_path / "moco_v2" / "encoder.safetensors"
    trained_at = checkpoint.stat().st_mtime_ns
    again = quickstart(tmp_path, TINY_OVERRIDES)
    assert checkpoint.stat().st_mtime_ns == trained_at  # reused, not retrained
    # Features of the reloaded encoder may differ from the in-memory one's by float rounding.
    pd.testing.assert_series_equal(again["value"], results["value"], atol=1.0, check_exact=False)
