"""Grids beyond one process: the PostgreSQL store, the Ray executor and SLURM jobs through submitit.

The same small grid (2 methods × 2 seeds, a few steps each) must give the same results rows whatever the store
and the executor; a job killed mid-cell loses no finished cell and duplicates none. PostgreSQL and Ray are real
(a server in a temporary directory, a local Ray cluster); SLURM's job scripts are submitit's own, handed to a
stand-in `sbatch`, and its requeue path runs through submitit's local executor.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from rich.console import Console

from augbench.analysis.store import ResultsStore, load_results
from augbench.benchmark import plan, run_benchmark
from augbench.executors import SlurmCells, pending_work, portable, slurm_executor
from tests.conftest import REPO, import_or_skip
from tests.test_benchmark import TASK, TINY_PRETRAIN, _write

# What differs between two runs of the same cell by design: when it ran and how long it took.
CLOCK_COLUMNS = ["time", "seconds"]


@pytest.fixture
def grid4(tmp_path):
    """4 cells: MoCo v2 and BYOL × seeds 0, 1 on tiny Shapes World, one kNN task."""
    _write(tmp_path / "shape_task.yaml", TASK)
    _write(tmp_path / "tiny.yaml", {"name": "tiny", "tasks": ["shape_task.yaml"], "knn": {"k": 5}})
    config = {
        "name": "grid4", "output_dir": str(tmp_path / "bench"),
        "methods": {"moco_v2": {}, "byol": {}},
        "datasets": {"photo": {"name": "shapes_world", "backgrounds": ["photo"], "train_size": 32, "val_size": 8,
                               "test_size": 8}},
        "seeds": [0, 1], "suites": ["tiny.yaml"], "pretrain": TINY_PRETRAIN, "reference_task": "shape",
        "lease_seconds": 600,
        "random_baseline": False,  # these tests count and compare the trained cells; test_benchmark.py covers it
    }
    return _write(tmp_path / "grid4.yaml", config)


def _longer(grid, steps: int):
    """Cells long enough to be killed mid-training, with a checkpoint every step to resume from."""
    values = yaml.safe_load(grid.read_text())
    values["pretrain"] = {**TINY_PRETRAIN, "trainer": {**TINY_PRETRAIN["trainer"], "max_steps": steps,
                                                       "max_epochs": steps, "checkpoint_every_n_steps": 1}}
    _write(grid, values)


def _rows(results: pd.DataFrame) -> pd.DataFrame:
    return results.drop(columns=CLOCK_COLUMNS).reset_index(drop=True)


def _where(grid, tmp_path, label: str, store: str | None = None) -> list[str]:
    return [f"output_dir={tmp_path / label}", *([f"store={store}"] if store else [])]


def _running_owner(store: str, timeout: float = 900, with_checkpoint: bool = False, runs=None) -> tuple[str, int]:
    """Wait for a running cell (and its run's first checkpoint); its cell_id and owner pid."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with ResultsStore(store) as opened:
                cells = opened.table("cells")
        except Exception:  # not created yet
            cells = None
        if cells is not None:
            for row in cells[cells["state"] == "running"].itertuples():
                ready = not with_checkpoint or (runs[row.run_name].run_dir / "checkpoints" / "last.ckpt").is_file()
                if ready and row.owner:
                    return row.cell_id, int(row.owner.split(":")[1])
        time.sleep(0.1)
    raise AssertionError("no cell started running")


def _finished_after_resuming(run_dir: Path) -> None:
    """The run finished, having resumed from one of its own checkpoints: last.ckpt, or a step
    checkpoint when the kill came between that one's write and last.ckpt's (train/run_dir.newest_checkpoint)."""
    status = json.loads((run_dir / "status.json").read_text())
    resumed_from = Path(status["resumed_from"])
    assert status["state"] == "finished" and resumed_from.parent == run_dir / "checkpoints"
    assert re.fullmatch(r"last\.ckpt|step=[1-9]\d*\.ckpt", resumed_from.name), resumed_from.name


def _assert_every_cell_once(store: str, cells: int = 4) -> pd.DataFrame:
    results = load_results(store)
    assert len(results) == cells and not results.duplicated(["method", "seed", "task", "protocol"]).any()
    with ResultsStore(store) as opened:
        assert opened.table("cells")["state"].tolist() == ["finished"] * cells
    return results


@pytest.fixture
def ray_cluster():
    ray = import_or_skip("ray", "ray", "the Ray executor's tests need Ray: pip install 'augbench[ray]'")
    ray.init(num_cpus=torch.get_num_threads(), include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_the_same_grid_gives_identical_rows_with_every_store_and_executor(grid4, tmp_path, postgres_url,
                                                                           ray_cluster):
    reference = run_benchmark(grid4, overrides=_where(grid4, tmp_path, "sqlite-local"), console=Console(quiet=True))
    assert reference.states == {"finished": 4} and len(reference.results) == 4
    server_url = postgres_url.rsplit("/", 1)[0]
    import psycopg

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {postgres_url.rsplit('/', 1)[1]}_ray")
    others = {
        "postgresql-local": ("local", postgres_url),
        "sqlite-ray": ("ray", None),
        "postgresql-ray": ("ray", f"{postgres_url}_ray"),
    }
    # A Ray task runs torch with as many threads as CPUs it asked for; the same count as this process gives the
    # same floating-point sums, so the same weights (encoder_id), not merely the same rounded accuracies.
    threads = f"ray.num_cpus={torch.get_num_threads()}"
    for label, (executor, store) in others.items():
        result = run_benchmark(grid4, overrides=[*_where(grid4, tmp_path, label, store), threads], executor=executor,
                               console=Console(quiet=True))
        assert result.states == {"finished": 4}, label
        pd.testing.assert_frame_equal(_rows(result.results), _rows(reference.results), obj=label)


@pytest.mark.slow
def test_two_runners_in_two_processes_split_a_grid_on_one_server_store(grid4, postgres_url, tmp_path):
    script = textwrap.dedent(f"""
        import json
        from rich.console import Console
        from augbench.benchmark import run_benchmark
        result = run_benchmark({str(grid4)!r}, overrides=["store={postgres_url}"], console=Console(quiet=True))
        print(json.dumps(result.ran))
    """)
    runners = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    ran = [json.loads(runner.communicate(timeout=600)[0].strip().splitlines()[-1]) for runner in runners]
    assert all(ran), f"one runner ran no cell: {ran}"
    assert sorted(ran[0] + ran[1]) == sorted(cell.cell_id for cell in plan(grid4).cells)
    single = run_benchmark(grid4, overrides=[f"output_dir={tmp_path / 'single'}"], console=Console(quiet=True))
    pd.testing.assert_frame_equal(_rows(load_results(postgres_url)), _rows(single.results))


@pytest.mark.slow
def test_a_ray_worker_killed_mid_cell_is_retried_and_the_rerun_adds_nothing(grid4, tmp_path, ray_cluster):
    _longer(grid4, steps=12)
    store = str(tmp_path / "bench" / "results.sqlite")
    runs = plan(grid4).runs
    outcome = {}
    driver = threading.Thread(target=lambda: outcome.update(result=run_benchmark(
        grid4, executor="ray", console=Console(quiet=True))))
    driver.start()
    killed, pid = _running_owner(store, with_checkpoint=True, runs=runs)
    os.kill(pid, signal.SIGKILL)  # the Ray worker running the cell
    driver.join(1800)
    assert not driver.is_alive(), "the grid's jobs did not end within 30 minutes"
    assert outcome["result"].states == {"finished": 4}
    _assert_every_cell_once(store)
    with ResultsStore(store) as opened:
        cells = opened.table("cells").set_index("cell_id")
    assert cells.loc[killed, "attempts"] == 2  # the retried task took its cell over at once
    _finished_after_resuming(runs[cells.loc[killed, "run_name"]].run_dir)
    again = run_benchmark(grid4, executor="ray", console=Console(quiet=True))
    assert again.ran == [] and len(again.results) == 4


@pytest.fixture
def local_jobs_ended(tmp_path):
    """submitit's local jobs outlive a failed test (their tasks ignore SIGTERM, as on SLURM): end those whose
    command line names this test's folder."""
    yield
    for process in Path("/proc").glob("[0-9]*"):
        try:
            command = (process / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "submitit" in command and str(tmp_path) in command:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(process.name), signal.SIGKILL)


@pytest.mark.slow
def test_a_submitit_job_killed_mid_cell_loses_nothing_when_the_grid_is_rerun(grid4, tmp_path, local_jobs_ended):
    pytest.importorskip("submitit", reason="the SLURM executor's tests need submitit: pip install 'augbench[slurm]'")
    _longer(grid4, steps=12)
    # submitit's local executor runs a whole array at once: two cells (MoCo v2, BYOL) keep two cores busy
    overrides = ["slurm.cluster=local", "slurm.timeout_min=20", "seeds=[0]"]
    store = str(tmp_path / "bench" / "results.sqlite")
    runs = plan(grid4, overrides=overrides).runs
    outcome = {}
    driver = threading.Thread(target=lambda: outcome.update(result=run_benchmark(
        grid4, overrides=overrides, executor="slurm", console=Console(quiet=True))))
    driver.start()
    killed, pid = _running_owner(store, with_checkpoint=True, runs=runs)
    os.kill(pid, signal.SIGKILL)  # the job's process: submitit reports the job failed, not requeued
    driver.join(1800)
    assert not driver.is_alive(), "the grid's jobs did not end within 30 minutes"
    first = outcome["result"]
    assert first.states.get("finished") == 1 and killed not in first.ran and first.unfinished_jobs == [killed]
    rerun = run_benchmark(grid4, overrides=overrides, executor="slurm", console=Console(quiet=True))
    assert rerun.ran == [killed] and rerun.states == {"finished": 2}
    _assert_every_cell_once(store, cells=2)
    _finished_after_resuming(runs[killed.rsplit("__", 1)[0]].run_dir)


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_resumes_its_cell(grid4, tmp_path, local_jobs_ended):
    pytest.importorskip("submitit", reason="the SLURM executor's tests need submitit: pip install 'augbench[slurm]'")
    _longer(grid4, steps=12)
    overrides = ["slurm.cluster=local", "slurm.timeout_min=20", "seeds=[0]", "methods.byol=null"]
    run_benchmark(grid4, overrides=overrides, max_cells=0, console=Console(quiet=True))  # the store and its cells
    grid = portable(plan(grid4, overrides=overrides))
    store = grid.store
    [job] = slurm_executor(grid).map_array(SlurmCells(grid, None), pending_work(grid))
    preempted, pid = _running_owner(store, with_checkpoint=True, runs=grid.runs)
    os.kill(pid, signal.SIGUSR2)  # what SLURM sends the job before preempting it or at its time limit
    assert job.result() == [preempted]
    _assert_every_cell_once(store, cells=1)
    with ResultsStore(store) as opened:
        assert opened.table("cells")["attempts"].tolist() == [2]
    _finished_after_resuming(grid.runs[preempted.rsplit("__", 1)[0]].run_dir)
    log = "".join(p.read_text() for p in (grid.directory / "slurm").glob("*_log.err"))
    assert "Caught signal SIGUSR2" in log and log.count("Trainer.fit` stopped") == 1  # one attempt trained to the end


def test_the_slurm_job_array_script_carries_the_grid_settings(grid4, tmp_path, monkeypatch):
    pytest.importorskip("submitit", reason="the SLURM executor's tests need submitit: pip install 'augbench[slurm]'")
    stand_in = tmp_path / "bin"
    stand_in.mkdir()
    (stand_in / "sbatch").write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\n"
                                     "echo 'Submitted batch job 4242'\n")
    (stand_in / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit checks that srun exists
    for tool in ("sbatch", "srun"):
        (stand_in / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{stand_in}:{os.environ['PATH']}")
    overrides = ["slurm.partition=gpu", "slurm.gpus_per_node=1", "slurm.cpus_per_task=8", "slurm.timeout_min=90",
                 "slurm.array_parallelism=2", "slurm.mem_gb=32", "slurm.additional_parameters.account=vision"]
    run_benchmark(grid4, overrides=overrides, max_cells=0, console=Console(quiet=True))
    grid = portable(plan(grid4, overrides=overrides))
    jobs = slurm_executor(grid).map_array(SlurmCells(grid, "cuda"), pending_work(grid))
    assert [job.job_id for job in jobs] == [f"4242_{i}" for i in range(4)]
    [script] = (grid.directory / "slurm").glob("*_submission.sh")
    lines = script.read_text().splitlines()
    for expected in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                     "#SBATCH --cpus-per-task=8", "#SBATCH --time=90", "#SBATCH --mem=32GB",
                     "#SBATCH --account=vision", "#SBATCH --signal=USR2@90", "#SBATCH --job-name=augbench-grid4"):
        assert expected in lines, f"{expected} not in {script}"
    assert any("submitit.core._submit" in line for line in lines)
