import subprocess
import sys

import pytest
import yaml

from augbench.cli import main
from augbench.config import shipped_config
from tests.conftest import TINY_OVERRIDES


def test_bad_config_key_exits_2_naming_key_and_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rate: 0.1\n")
    assert main(["pretrain", str(bad)]) == 2
    out = capsys.readouterr().out
    assert "optim.learning_rate" in out and "bad.yaml" in out


def test_missing_checkpoint_exits_2_naming_the_path(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: checkpoint not found" in capsys.readouterr().out


def test_data_preview_writes_a_png(tmp_path):
    output = tmp_path / "grid.png"
    assert main(["data", "shapes_world", "--output", str(output), "train_size=16", "image_size=48"]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "augbench.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "quickstart" in result.stdout


def test_pretrain_merges_several_config_files_in_order_before_the_overrides(tmp_path):
    scale = tmp_path / "scale.yaml"
    scale.write_text("model: {width: 0.25}\noptim: {momentum: 0.8}\n")
    words = [str(shipped_config("methods/byol.yaml")), str(scale), *TINY_OVERRIDES, f"output_dir={tmp_path}",
             "name=merged"]
    assert main(["pretrain", *words]) == 0
    stored = yaml.safe_load((tmp_path / "merged" / "config.yaml").read_text())
    assert stored["method"]["negatives"] == "none" and stored["optim"]["name"] == "lars"  # from byol.yaml
    assert stored["optim"]["momentum"] == 0.8  # scale.yaml, merged over byol.yaml's 0.9
    assert stored["model"]["width"] == 0.125  # the overrides win over every file


def test_a_config_file_after_the_overrides_is_refused(capsys):
    moco = str(shipped_config("methods/moco_v2.yaml"))
    assert main(["pretrain", moco, "trainer.max_epochs=1", "b.yaml"]) == 2
    assert "override 'b.yaml' is not of the form key=value" in capsys.readouterr().out


def test_print_config_prints_the_composed_config_and_trains_nothing(tmp_path, capsys):
    words = [str(shipped_config("fair/06_symmetric_loss.yaml")), str(shipped_config("quickstart.yaml")),
             "trainer.max_epochs=3", f"output_dir={tmp_path}", "--print-config"]
    assert main(["pretrain", *words]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["method"]["symmetric"] and printed["method"]["enqueue"] == "one_view"  # from the fair step
    assert printed["data"]["name"] == "shapes_world" and printed["trainer"]["max_epochs"] == 3
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("words", "message"), [
    (["--seeds", "0,one"], "'0,one': expected seeds as whole numbers separated by commas"),
    (["--seeds", "1,1"], "'1,1': a seed appears twice"),
    (["--presets", "moco_v2,mocov3"], "unknown presets ['mocov3']; known: ["),
])
def test_bad_quickstart_seeds_and_presets_exit_2_naming_the_value(words, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["quickstart", *words])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
