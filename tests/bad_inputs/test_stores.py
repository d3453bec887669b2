"""Bad results stores and grids through the command line: each is one line naming the file or value at fault,
with its exit code, and nothing written where the command only reads (docs/failures.md, "Results stores and
grids")."""

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rich.console import Console

from augbench.cli import main
from tests.analysis.conftest import fill_store
from tests.test_benchmark import TASK, TINY_PRETRAIN, _write


@dataclass
class Case:
    """`prepare(tmp_path)` makes the bad input and returns the command's words; `check(tmp_path)` asserts what
    must hold on disk afterwards."""

    prepare: Callable[[Path], list[str]]
    exit_code: int
    message: str  # a regular expression, matched against the output with its whitespace collapsed
    check: Callable[[Path], None] = field(default=lambda tmp_path: None)


def _grid(tmp_path: Path, train_size: int = 32) -> Path:
    _write(tmp_path / "shape_task.yaml", TASK)
    _write(tmp_path / "tiny.yaml", {"name": "tiny", "tasks": ["shape_task.yaml"], "knn": {"k": 5}})
    return _write(tmp_path / "bench.yaml", {
        "name": "tiny", "output_dir": str(tmp_path / "bench"), "methods": {"moco_v2": {}},
        "datasets": {"photo": {"name": "shapes_world", "backgrounds": ["photo"], "train_size": train_size,
                               "val_size": 8, "test_size": 8}},
        "seeds": [0], "suites": ["tiny.yaml"], "pretrain": TINY_PRETRAIN, "reference_task": "shape",
        "random_baseline": False})  # one trained cell; tests/test_benchmark.py covers the random baseline


def _empty_store(tmp_path: Path) -> Path:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results.sqlite").touch()
    return tmp_path / "bench"


def _still_empty(tmp_path: Path) -> None:
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == ["results.sqlite"]
    assert (tmp_path / "bench" / "results.sqlite").stat().st_size == 0


def _nothing_created(tmp_path: Path) -> None:
    assert not (tmp_path / "bench").exists()


def _every_cell_fails(tmp_path: Path) -> list[str]:
    # 8 training images cannot fill a batch of 16: valid config, refused when each cell's pretraining starts
    return ["benchmark", str(_grid(tmp_path, train_size=8))]


def _corrected_after_failure(tmp_path: Path) -> list[str]:
    assert main(_every_cell_fails(tmp_path)) == 1  # leaves each run's config.yaml, and no checkpoint
    return ["benchmark", str(_grid(tmp_path))]


@pytest.fixture
def read_only_place():
    """A directory nothing can be written into, not even by root (whom permission bits do not stop): chattr's
    immutable flag under root, else the permission bits."""
    directory = Path(os.path.realpath(os.environ.get("TMPDIR", "/tmp"))) / f"augbench-read-only-{os.getpid()}"
    directory.mkdir()
    yield directory
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(directory)], check=False)
    directory.chmod(0o755)
    shutil.rmtree(directory)


def _lock(directory: Path) -> None:
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(directory)]).returncode:
        pytest.skip("running as root without chattr +i: no way to make a directory read-only for this test")
    with pytest.raises(PermissionError):
        (directory / "probe").touch()


CASES = {
    "results on a zero-byte results.sqlite": Case(
        lambda tmp_path: ["results", str(_empty_store(tmp_path))], 2,
        r"error: \S+/bench/results\.sqlite: not a results store \(an empty file; `augbench benchmark` writes one\) "
        r"and left unchanged", _still_empty),
    "report on a zero-byte results.sqlite": Case(
        lambda tmp_path: ["report", str(_empty_store(tmp_path))], 2,
        r"error: \S+/bench/results\.sqlite: not a results store \(an empty file", _still_empty),
    "a grid whose every cell failed": Case(
        _every_cell_fails, 1,
        r"cells: 1 failed; .* error: 1 of 1 cells failed \(first: moco_v2__photo__seed0__tiny: ConfigError: data: "
        r"8 training images, fewer than trainer\.batch_size=16\); fix the cause and run the same command again"),
    "--plan with a model name no registry knows": Case(
        lambda tmp_path: ["benchmark", str(_grid(tmp_path)), "--plan", "pretrain.model.name=resnet1B"], 2,
        r"error: .*bench\.yaml: cell moco_v2__photo__seed0: model: name='resnet1B' is unknown",
        _nothing_created),
    "the corrected grid in the output_dir of one that trained nothing": Case(
        _corrected_after_failure, 0, r"cells: 1 finished; this run ran 1"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_bad_store_or_grid_gets_its_exit_code_and_one_line(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("augbench.cli.console", Console(width=100_000))
    words = case.prepare(tmp_path)
    capsys.readouterr()
    assert main(words) == case.exit_code
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1 and "Traceback" not in out
    assert re.search(case.message, " ".join(out.split())), out
    case.check(tmp_path)


def test_a_valid_store_on_a_read_only_filesystem_is_read(read_only_place, capsys, monkeypatch):
    fill_store(read_only_place / "results.sqlite", probes=True).close()
    before = sorted(p.name for p in read_only_place.iterdir())
    _lock(read_only_place)
    monkeypatch.setattr("augbench.cli.console", Console(width=250))
    assert main(["results", str(read_only_place)]) == 0
    assert "288 evaluations" in capsys.readouterr().out
    assert main(["report", str(read_only_place), "--output", str(read_only_place.parent / f"{os.getpid()}.html")]) == 0
    assert sorted(p.name for p in read_only_place.iterdir()) == before
    for written in read_only_place.parent.glob(f"{os.getpid()}*"):
        shutil.rmtree(written) if written.is_dir() else written.unlink()
