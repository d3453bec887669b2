import hashlib
import multiprocessing
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
from rich.console import Console

import augbench
from augbench.analysis.queue import CellQueue, owner_id
from augbench.analysis.store import SCHEMA_VERSION, ResultsStore, load_results
from augbench.cli import main
from augbench.errors import DataError
from tests.analysis.conftest import DATASETS, METHODS, SEEDS, TASKS


def _cells(n: int, suites=("quick",)) -> list[dict]:
    return [{"cell_id": f"m__d__seed{i}__{s}", "method": "m", "dataset": "d", "seed": i, "suite": s,
             "run_name": f"m__d__seed{i}"} for i in range(n) for s in suites]


def test_a_new_store_is_versioned_and_in_wal_mode(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite", create=True) as store:
        assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.meta()["schema_version"] == str(SCHEMA_VERSION)


def test_opening_a_missing_store_without_create_names_the_path(tmp_path):
    with pytest.raises(DataError, match=r"results\.sqlite: no results store"):
        ResultsStore(tmp_path)


@pytest.mark.parametrize("version", [0, SCHEMA_VERSION + 1])
def test_another_schema_is_refused_and_the_file_left_unchanged(tmp_path, version):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE results (encoder TEXT, task TEXT, value REAL)")
    db.execute("INSERT INTO results VALUES ('moco', 'shape', 51.0)")
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = f"schema version {version}" if version else "an unversioned file with tables \\['results'\\]"
    with pytest.raises(DataError, match=f"old.sqlite: results store has {expected}; this augbench reads schema "
                                        f"version {SCHEMA_VERSION} and does not change the file"):
        ResultsStore(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_file_that_is_not_sqlite_is_refused_unchanged(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("encoder,task,value\nmoco,shape,51.0\n" * 100)
    before = path.read_bytes()
    with pytest.raises(DataError, match=r"results\.csv: not a results store"):
        ResultsStore(path)
    assert path.read_bytes() == before


def test_adding_the_same_grid_twice_keeps_one_row_per_cell(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite", create=True) as store:
        CellQueue(store).add_cells(_cells(3))
        CellQueue(store).add_cells(_cells(3))
        assert len(store.table("cells")) == 3


def test_a_live_lease_blocks_and_an_expired_one_is_taken_over(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite", create=True) as store:
        CellQueue(store).add_cells(_cells(1))
        first = CellQueue(store).claim("elsewhere:1:a", lease_seconds=0.5)
        assert first["cell_id"] == "m__d__seed0__quick" and first["taken_over_from"] is None
        assert CellQueue(store).claim("elsewhere:2:b", lease_seconds=0.5) is None
        time.sleep(0.6)
        second = CellQueue(store).claim("elsewhere:2:b", lease_seconds=0.5)
        assert second["taken_over_from"] == "elsewhere:1:a"
        # the first runner's late numbers are not written: the cell is no longer its own
        assert not CellQueue(store).finish(first["cell_id"], "elsewhere:1:a", "m__d__seed0", [
            {"task": "shape", "protocol": "knn", "metric": "top1", "value": 1.0, "seed": 0}])
        assert CellQueue(store).finish(second["cell_id"], "elsewhere:2:b", "m__d__seed0", [
            {"task": "shape", "protocol": "knn", "metric": "top1", "value": 2.0, "seed": 0}])
        evaluations = store.table("evaluations")
        assert evaluations["value"].tolist() == [2.0]
        assert store.table("cells")["attempts"].tolist() == [2]


def test_a_cell_whose_owner_process_died_on_this_host_is_taken_over_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with ResultsStore(tmp_path / "r.sqlite", create=True) as store:
        queue = CellQueue(store)
        queue.add_cells(_cells(1))
        queue.claim(owner_id("x").replace(f":{__import__('os').getpid()}:", f":{dead.pid}:"), lease_seconds=3600)
        taken = queue.claim(owner_id("y"), lease_seconds=3600)
        assert taken is not None and taken["taken_over_from"].split(":")[1] == str(dead.pid)


def test_two_suites_of_one_pretraining_run_are_never_held_by_two_runners(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite", create=True) as store:
        CellQueue(store).add_cells(_cells(1, suites=("quick", "full")))
        assert CellQueue(store).claim("h:1:a", 60)["suite"] == "quick"
        assert CellQueue(store).claim("h:2:b", 60) is None  # the other suite's run is being trained by runner a
        assert CellQueue(store).claim("h:1:a", 60)["suite"] == "full"


def _claim_all(path, token, queue):
    with ResultsStore(path) as store:
        owner = f"elsewhere:{token}:{token}"
        while (cell := CellQueue(store).claim(owner, 3600)) is not None:
            time.sleep(0.002)
            CellQueue(store).finish(cell["cell_id"], owner, cell["run_name"], [])
            queue.put(cell["cell_id"])


def test_concurrent_runners_claim_every_cell_exactly_once(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path, create=True) as store:
        CellQueue(store).add_cells(_cells(40))
    queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_claim_all, args=(path, i + 1, queue)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    claimed = [queue.get(timeout=5) for _ in range(queue.qsize())]
    assert sorted(claimed) == sorted(c["cell_id"] for c in _cells(40))
    with ResultsStore(path) as store:
        assert (store.table("cells")["attempts"] == 1).all()


def test_evaluations_of_a_cell_cannot_be_written_twice(filled_store):
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"), filled_store.transaction() as db:
        db.run("INSERT INTO evaluations (cell_id, run_name, task, category, protocol, budget, seed, metric, "
               "value, time) SELECT cell_id, run_name, task, category, protocol, budget, seed, metric, value, "
               "time FROM evaluations LIMIT 1")


def test_load_results_returns_one_row_per_evaluation_with_its_cell(filled_store):
    results = augbench.load_results(filled_store.path.parent)
    standard = results[results["kind"] == "standard"]
    assert len(standard) == len(METHODS) * len(DATASETS) * len(SEEDS) * len(TASKS) * 2
    assert set(results["method"]) == set(METHODS) and set(results["pretrain_dataset"]) == set(DATASETS)
    assert not standard.duplicated(["method", "pretrain_dataset", "seed", "task", "protocol", "metric"]).any()
    assert (results["code_version"] == "test").all()


def test_results_command_prints_and_exports_csv_and_parquet(filled_store, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("augbench.cli.console", Console(width=250))
    csv, parquet = tmp_path / "r.csv", tmp_path / "r.parquet"
    assert main(["results", str(filled_store.path.parent), "--csv", str(csv), "--parquet", str(parquet)]) == 0
    expected = load_results(filled_store.path)
    for exported in (pd.read_csv(csv), pd.read_parquet(parquet)):
        assert len(exported) == len(expected)
        assert exported["value"].sum() == pytest.approx(expected["value"].sum())
    printed = capsys.readouterr().out
    assert "288 evaluations" in printed and "moco_v2 · photo" in printed and "mask · linear" in printed
