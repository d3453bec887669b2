import subprocess
import sys

from augbench.cli import main


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
