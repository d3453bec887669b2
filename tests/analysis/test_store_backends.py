"""The store's interface on both back ends: the SQLite file and a real PostgreSQL server (skipped, with the
reason, where none starts)."""

import multiprocessing
import time

import pandas as pd
import pytest

from augbench.analysis.queue import CellQueue
from augbench.analysis.store import SCHEMA_VERSION, ResultsStore, load_results
from augbench.errors import DataError
from tests.analysis.conftest import fill_store


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "results.sqlite")
    return request.getfixturevalue("postgres_url")


def _cells(n: int, suites=("quick",)) -> list[dict]:
    return [{"cell_id": f"m__d__seed{i}__{s}", "method": "m", "dataset": "d", "seed": i, "suite": s,
             "run_name": f"m__d__seed{i}"} for i in range(n) for s in suites]


def _claim_all(location, token, claimed):
    with ResultsStore(location) as store:
        queue, owner = CellQueue(store), f"elsewhere:{token}:{token}"
        while (cell := queue.claim(owner, 3600)) is not None:
            time.sleep(0.002)
            assert queue.finish(cell["cell_id"], owner, cell["run_name"], [])
            claimed.put(cell["cell_id"])


def test_concurrent_runners_claim_every_cell_exactly_once(location):
    with ResultsStore(location, create=True) as store:
        CellQueue(store).add_cells(_cells(40))
    claimed = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_claim_all, args=(location, i + 1, claimed)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * 4
    ids = [claimed.get(timeout=5) for _ in range(40)]
    assert sorted(ids) == sorted(c["cell_id"] for c in _cells(40))
    with ResultsStore(location) as store:
        cells = store.table("cells")
    assert (cells["attempts"] == 1).all() and (cells["state"] == "finished").all()


def test_leases_takeovers_and_one_run_per_runner(location):
    with ResultsStore(location, create=True) as store:
        queue = CellQueue(store)
        queue.add_cells(_cells(1, suites=("quick", "full")))
        first = queue.claim("elsewhere:1:a", lease_seconds=0.5)
        assert first["suite"] == "quick" and first["taken_over_from"] is None
        assert queue.claim("elsewhere:2:b", lease_seconds=0.5) is None  # its run is being trained by a
        assert queue.claim("elsewhere:3:a", lease_seconds=3600)["cell_id"] == first["cell_id"]  # a's next attempt
        time.sleep(0.6)
        second = queue.claim("elsewhere:2:b", lease_seconds=0.5)
        assert second["cell_id"] == first["cell_id"] and second["taken_over_from"] == "elsewhere:3:a"
        store.record_run({"run_name": "m__d__seed0", "method": "m", "dataset": "d", "seed": 0, "run_dir": "runs/x",
                          "config": "{}", "code_version": "test", "environment": "{}", "state": "finished"})
        record = {"task": "shape", "protocol": "knn", "metric": "top1", "value": 2.0, "seed": 0}
        assert not queue.finish(first["cell_id"], "elsewhere:1:a", "m__d__seed0", [record])
        assert queue.finish(second["cell_id"], "elsewhere:2:b", "m__d__seed0", [record])
        assert store.table("evaluations")["value"].tolist() == [2.0]
        assert store.table("cells")["attempts"].tolist() == [3, 0]


def test_the_same_records_read_back_identically(location, tmp_path):
    fill_store(location, probes=True).close()
    reference = fill_store(tmp_path / "reference.sqlite", probes=True)
    expected = reference.results().drop(columns=["time"])
    reference.close()
    stored = load_results(location).drop(columns=["time"])
    pd.testing.assert_frame_equal(stored, expected)
    with ResultsStore(location) as store:
        assert store.meta()["schema_version"] == str(SCHEMA_VERSION)
        assert list(store.table("cells").columns)[:3] == ["cell_id", "method", "dataset"]


def test_a_newer_or_foreign_server_store_is_refused_unchanged(postgres_url):
    import sqlalchemy

    ResultsStore(postgres_url, create=True).close()
    engine = sqlalchemy.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE meta SET value = :v WHERE key = 'schema_version'"),
                           {"v": str(SCHEMA_VERSION + 1)})
    with pytest.raises(DataError, match=rf"results store has schema version {SCHEMA_VERSION + 1}; this augbench "
                                        rf"reads schema version {SCHEMA_VERSION} and does not change the database: "
                                        "upgrade augbench"):
        ResultsStore(postgres_url, create=True)
    with engine.begin() as connection:
        for table in ("evaluations", "checkpoints", "runs", "cells", "meta"):
            connection.execute(sqlalchemy.text(f"DROP TABLE {table}"))
        connection.execute(sqlalchemy.text("CREATE TABLE results (encoder TEXT, value REAL)"))
    with pytest.raises(DataError, match=r"an unversioned database with tables \['results'\]"):
        ResultsStore(postgres_url, create=True)
    with engine.begin() as connection:
        tables = connection.execute(sqlalchemy.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")).all()
    engine.dispose()
    assert [t[0] for t in tables] == ["results"]


def test_an_empty_server_database_is_not_read_as_a_store(postgres_url):
    with pytest.raises(DataError, match=r"test_\w+: not a results store \(an empty database"):
        load_results(postgres_url)


def test_an_unreachable_server_is_one_line_without_the_password():
    with pytest.raises(DataError) as refused:
        ResultsStore("postgresql://me:secret@127.0.0.1:9/grid")
    message = str(refused.value)
    assert message.startswith("postgresql+psycopg://me:***@127.0.0.1:9/grid: cannot open the results store (")
    assert "secret" not in message and "\n" not in message
