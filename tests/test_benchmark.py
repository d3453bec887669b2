import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from augbench.analysis.store import ResultsStore, load_results
from augbench.benchmark import load_benchmark, plan, plan_summary, run_benchmark, task_category
from augbench.errors import ConfigError
from tests.conftest import REPO

TASK = {"name": "shape", "dataset": {"name": "shapes_world", "train_size": 48, "val_size": 16, "test_size": 24},
        "label": "shape", "protocols": ["knn"]}
TINY_PRETRAIN = {"model": {"width": 0.125},
                 "trainer": {"batch_size": 16, "max_steps": 2, "max_epochs": 1, "progress_bar": False,
                             "log_every_n_steps": 1}}


def _write(path, values):
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


@pytest.fixture
def grid(tmp_path):
    """A benchmark of tiny runs and a one-task suite, all in tmp_path."""
    _write(tmp_path / "shape_task.yaml", TASK)
    _write(tmp_path / "hue_task.yaml", {**TASK, "name": "hue", "label": "hue_bin"})
    _write(tmp_path / "tiny.yaml", {"name": "tiny", "tasks": ["shape_task.yaml"], "knn": {"k": 5}})
    _write(tmp_path / "tiny_hue.yaml", {"name": "tiny_hue", "tasks": ["hue_task.yaml"], "knn": {"k": 5}})
    config = {
        "name": "tiny", "output_dir": str(tmp_path / "bench"),
        "methods": {"moco_v2": {}},
        "datasets": {"photo": {"name": "shapes_world", "backgrounds": ["photo"], "train_size": 32, "val_size": 8,
                               "test_size": 8}},
        "seeds": [0], "suites": ["tiny.yaml"], "pretrain": TINY_PRETRAIN, "reference_task": "shape",
        "random_baseline": False,  # the tests below count trained cells; the random baseline's tests turn it on
        "small": {"datasets": {"photo": None, "flat": {"name": "shapes_world", "backgrounds": ["flat"]}}},
    }
    return _write(tmp_path / "bench.yaml", config)


def _edit(path, **changes):
    values = yaml.safe_load(path.read_text())
    values.update(changes)
    return _write(path, values)


def test_an_unknown_method_fails_before_anything_is_created(grid, tmp_path):
    _edit(grid, methods={"moco_v2": {}, "moco_v9": {}})
    with pytest.raises(ConfigError, match=r"bench\.yaml: methods\.moco_v9: unknown method 'moco_v9'.*known: \["):
        run_benchmark(grid)
    assert not (tmp_path / "bench").exists()


def test_an_unknown_task_in_a_suite_fails_naming_it(grid, tmp_path):
    _write(tmp_path / "tiny.yaml", {"name": "tiny", "tasks": ["shape_task.yaml", "no_such_task.yaml"]})
    with pytest.raises(ConfigError, match=r"no_such_task\.yaml: config file not found"):
        plan(grid)
    _write(tmp_path / "tiny.yaml", {"name": "tiny", "tasks": ["shape_task.yaml"]})
    _edit(grid, reference_task="imagenet")
    with pytest.raises(ConfigError, match=r"reference_task: 'imagenet' is not a task of suites \['tiny.yaml'\]"):
        plan(grid)
    _edit(grid, suites=["nonexistent_suite"])
    with pytest.raises(ConfigError, match="unknown suite 'nonexistent_suite'"):
        plan(grid)


def test_a_bad_method_override_or_dataset_names_its_entry(grid):
    _edit(grid, methods={"moco_v2": {"overrides": ["method.negatives=sometimes"]}})
    with pytest.raises(ConfigError, match=r"bench\.yaml: methods\.moco_v2\.overrides.*negatives='sometimes'"):
        plan(grid)
    _edit(grid, methods={"moco_v2": {}}, datasets={"photo": {"backgrounds": ["photo"]}})
    with pytest.raises(ConfigError, match=r"datasets\.photo: expected a data section with a `name`"):
        plan(grid)


def test_the_plan_lists_each_run_with_its_state_and_runs_nothing(grid, tmp_path, capsys):
    from augbench.cli import main

    _edit(grid, seeds=[0, 1])
    assert main(["benchmark", str(grid), "--plan"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(2 runs) × 1 suites (tiny) = 2 cells" in out and "no results store yet" in out
    assert not (tmp_path / "bench").exists()
    assert list(plan_summary(plan(grid))["state"]) == ["not started"] * 2
    run_benchmark(grid, max_cells=1)
    summary = plan_summary(plan(grid))
    assert list(summary["state"]) == ["finished (2 steps)", "not started"]
    assert list(summary[["method", "dataset", "seed", "epochs", "batch"]].iloc[0]) == ["moco_v2", "photo", 0, 1, 16]


def test_comparisons_name_labels_of_the_grid(grid):
    _edit(grid, comparisons=[["moco_v2", "byol"]])
    with pytest.raises(ConfigError, match=r"comparisons: \['moco_v2', 'byol'\] must be two method labels of "
                                          r"`methods` \(unknown: \['byol'\]"):
        plan(grid)
    _edit(grid, comparisons=[], dataset_comparisons=[["photo", "flat"]])
    with pytest.raises(ConfigError, match=r"dataset_comparisons: \['photo', 'flat'\] must be two dataset labels "
                                          r"of `datasets` \(unknown: \['flat'\]; known: \['photo'\]\)"):
        plan(grid)


def test_small_merges_its_section_and_null_leaves_an_entry_out(grid):
    assert list(load_benchmark(grid).datasets) == ["photo"]
    small = plan(grid, small=True)
    assert list(small.config.datasets) == ["flat"]
    assert [cell.cell_id for cell in small.cells] == ["moco_v2__flat__seed0__tiny"]
    assert small.runs["moco_v2__flat__seed0"].data.backgrounds == ["flat"]
    _edit(grid, small=None)
    with pytest.raises(ConfigError, match="small: --small asks for this section"):
        plan(grid, small=True)


def test_the_grid_is_methods_by_datasets_by_seeds_by_suites(grid):
    _edit(grid, methods={"moco_v2": {}, "byol": {}}, seeds=[0, 1], suites=["tiny.yaml", "tiny_hue.yaml"],
          datasets={"photo": {"name": "shapes_world"}, "digits": {"name": "digits"}})
    planned = plan(grid)
    assert len(planned.cells) == 2 * 2 * 2 * 2 and len(planned.runs) == 8
    run = planned.runs["byol__digits__seed1"]
    assert (run.seed, run.data.name, run.model.width, run.method.negatives) == (1, "digits", 0.125, "none")


def test_a_grid_whose_run_changed_config_is_refused(grid):
    planned = plan(grid)
    run = planned.runs["moco_v2__photo__seed0"]
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "optim": {"lr": 9.0}}))
    (run.run_dir / "checkpoints").mkdir()
    (run.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"trained weights")
    with pytest.raises(ConfigError, match=r"another config here \(differs at \[.*'optim.lr'"):
        plan(grid)


def test_task_category_reads_strings_and_mappings(tmp_path):
    assert task_category(_write(tmp_path / "a.yaml", {"category": "semantic/pixel"})) == "semantic/pixel"
    assert task_category(_write(tmp_path / "b.yaml", {"category": {"type": "structural", "level": "image"}})) == \
        "structural/image"
    assert task_category(_write(tmp_path / "c.yaml", {"name": "x"})) == "uncategorised"


def test_a_benchmark_runs_records_and_resumes_without_repeating_a_cell(grid, tmp_path):
    first = run_benchmark(grid)
    assert first.ran == ["moco_v2__photo__seed0__tiny"] and first.states == {"finished": 1}
    results = load_results(tmp_path / "bench")
    assert list(results["task"]) == ["shape"] and list(results["protocol"]) == ["knn"]
    assert 0 <= results["value"].iloc[0] <= 100
    with ResultsStore(tmp_path / "bench") as store:
        runs, checkpoints = store.table("runs"), store.table("checkpoints")
    encoder = tmp_path / "bench" / "runs" / "moco_v2__photo__seed0" / "encoder.safetensors"
    assert checkpoints["sha256"].iloc[0] == hashlib.sha256(encoder.read_bytes()).hexdigest()
    assert runs["code_version"].iloc[0].startswith("0.") and '"torch"' in runs["environment"].iloc[0]
    modified = encoder.stat().st_mtime_ns

    again = run_benchmark(grid)
    assert again.ran == [] and len(load_results(tmp_path / "bench")) == 1

    _edit(grid, suites=["tiny.yaml", "tiny_hue.yaml"])  # a new suite: the finished run is evaluated, not retrained
    extended = run_benchmark(grid)
    assert extended.ran == ["moco_v2__photo__seed0__tiny_hue"]
    assert encoder.stat().st_mtime_ns == modified
    assert sorted(load_results(tmp_path / "bench")["task"]) == ["hue", "shape"]


@pytest.mark.slow
def test_a_runner_killed_mid_grid_is_resumed_with_every_cell_once(grid, tmp_path):
    _edit(grid, seeds=[0, 1, 2], pretrain={**TINY_PRETRAIN, "trainer": {**TINY_PRETRAIN["trainer"], "max_steps": 6,
                                                                         "max_epochs": 6}})
    script = textwrap.dedent(f"""
        from augbench.benchmark import run_benchmark
        run_benchmark({str(grid)!r})
    """)
    runner = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    database = tmp_path / "bench" / "results.sqlite"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once the first cell finished and the second is training
        if database.is_file():
            with ResultsStore(database) as store:
                states = store.table("cells")["state"].tolist()
            if states.count("finished") >= 1 and "running" in states:
                break
        time.sleep(0.2)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    with ResultsStore(database) as store:
        assert "running" in store.table("cells")["state"].tolist()  # the killed runner's cell

    resumed = run_benchmark(grid)
    assert resumed.states == {"finished": 3}
    results = load_results(tmp_path / "bench")
    assert len(results) == 3 and not results.duplicated(["method", "pretrain_dataset", "seed", "task"]).any()


def test_the_command_reports_a_bad_grid_without_a_traceback(grid, capsys):
    from augbench.cli import main

    _edit(grid, methods={"moco_v9": {}})
    assert main(["benchmark", str(grid)]) == 2
    assert "unknown method 'moco_v9'" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("small", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_every_shipped_study_preset_plans(small, tmp_path):
    # A fresh output directory: runs an earlier version of a preset left in ./runs must not decide the outcome.
    for name in ("fair_moco_byol", "virb", "looc", "hai"):
        planned = plan(REPO / "configs" / "benchmarks" / f"{name}.yaml", small=small,
                       overrides=[f"output_dir={tmp_path / name}"])
        assert {run.seed for run in planned.runs.values()} == set(planned.config.seeds)
        assert len(planned.runs) == len(planned.config.methods) * len(planned.config.datasets) * len(
            planned.config.seeds)
    if not small:
        virb = plan(REPO / "configs" / "benchmarks" / "virb.yaml", overrides=[f"output_dir={tmp_path / 'virb'}"])
        domains = {(r.data.name, tuple(getattr(r.data, "backgrounds", ()))) for r in virb.runs.values()}
        assert len(domains) >= 3  # photo and flat backgrounds of Shapes World, and digits


def test_the_random_baseline_adds_a_cell_per_architecture_seed_and_suite_and_reserves_its_labels(grid):
    _edit(grid, random_baseline=True, seeds=[0, 1], suites=["tiny.yaml", "tiny_hue.yaml"],
          methods={"moco_v2": {}, "byol": {}, "moco_wide": {"config": "moco_v2", "overrides": ["model.width=0.25"]}})
    planned = plan(grid)
    random_cells = [cell.cell_id for cell in planned.cells if cell.dataset == "none"]
    assert random_cells == [f"random_{a}__none__seed{s}__{suite}" for a in (1, 2) for s in (0, 1)
                            for suite in ("tiny", "tiny_hue")]
    assert planned.baseline_of == {"moco_v2": "random_1", "byol": "random_1", "moco_wide": "random_2"}
    assert planned.baselines["random_2__none__seed1"].width == 0.25
    assert len(planned.cells) == 3 * 2 * 2 + len(random_cells)
    _edit(grid, methods={"moco_v2": {}, "random": {"config": "byol"}})
    with pytest.raises(ConfigError, match=r"methods: \['random'\] are the random-encoder baselines' labels"):
        plan(grid)


def test_the_random_cell_stores_what_the_seeded_untrained_architecture_scores(grid, tmp_path):
    import torch

    from augbench.evaluate.evaluate import evaluate
    from augbench.models.backbones import build_backbone

    _edit(grid, random_baseline=True)
    result = run_benchmark(grid)
    assert result.ran == ["moco_v2__photo__seed0__tiny", "random__none__seed0__tiny"]
    results = load_results(tmp_path / "bench").set_index("method")
    torch.manual_seed(0)
    expected = evaluate(build_backbone(plan(grid).runs["moco_v2__photo__seed0"].model).eval(), tmp_path / "tiny.yaml",
                        progress=False)
    assert results.loc["random", "value"] == pytest.approx(expected["value"].iloc[0])
    assert results.loc["random", "pretrain_dataset"] == "none"
    with ResultsStore(tmp_path / "bench") as store:
        assert json.loads(store.meta()["baselines"]) == {"moco_v2": "random"}
        runs = store.table("runs").set_index("method")
        assert set(store.table("checkpoints")["run_name"]) == {"moco_v2__photo__seed0"}  # nothing trained, no file
    assert "random initialisation" in runs.loc["random", "config"]
