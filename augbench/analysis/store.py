"""The results store: one SQLite file per benchmark (WAL mode, every write one transaction).

Schema, version 1 (`PRAGMA user_version` and `meta.schema_version` hold it):

    meta(key PRIMARY KEY, value)
        schema_version, created, and the benchmark's name and config (YAML).
    cells(cell_id PRIMARY KEY, method, dataset, seed, suite, run_name,
          state, owner, heartbeat, attempts, started, finished, seconds, error)
        one grid cell = (method, pretraining dataset, seed, suite); state is
        pending | running | finished | failed. A runner claims a cell by
        setting owner ("host:pid:token") and heartbeat (unix time) in one
        IMMEDIATE transaction; a running cell whose heartbeat is older than
        the lease, or whose owner process on this host is gone, may be taken over.
    runs(run_name PRIMARY KEY, method, dataset, seed, run_dir, config,
         code_version, environment, state, created, finished)
        a pretraining run: its resolved config (YAML), the code version
        (`git describe` of the checkout, else the package version) and the
        environment (JSON: Python, torch, platform, device).
    checkpoints(checkpoint_id PRIMARY KEY, run_name, path, kind, bytes, sha256, created)
        the files a run produced (the encoder that was evaluated).
    evaluations(evaluation_id PRIMARY KEY, cell_id, run_name, task, category, kind,
                protocol, budget, seed, eval_seed, metric, higher_is_better, value,
                settings, details, dataset, n_train, n_test, encoder_id, seconds, time)
        one number: `seed` is the pretraining seed, `eval_seed` the suite's,
        `budget` the labelled budget of the protocol (JSON), `settings` the
        protocol's full settings (JSON), `details` extra outcomes such as a
        confidence interval or per-corruption scores (JSON), `encoder_id` a hash
        of the evaluated weights. UNIQUE(cell_id, task, protocol, metric) so a
        cell's numbers can never be written twice.

A file written by an older or newer schema is refused with a message naming
both versions; nothing is ever dropped or overwritten.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from augbench.errors import DataError

SCHEMA_VERSION = 1
DATABASE_FILE = "results.sqlite"
CELL_STATES = ("pending", "running", "finished", "failed")
UNCATEGORISED = "uncategorised"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cells (
    cell_id TEXT PRIMARY KEY,
    method TEXT NOT NULL, dataset TEXT NOT NULL, seed INTEGER NOT NULL, suite TEXT NOT NULL,
    run_name TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'finished', 'failed')),
    owner TEXT, heartbeat REAL, attempts INTEGER NOT NULL DEFAULT 0,
    started REAL, finished REAL, seconds REAL, error TEXT
);
CREATE TABLE runs (
    run_name TEXT PRIMARY KEY,
    method TEXT NOT NULL, dataset TEXT NOT NULL, seed INTEGER NOT NULL,
    run_dir TEXT NOT NULL, config TEXT NOT NULL, code_version TEXT NOT NULL, environment TEXT NOT NULL,
    state TEXT NOT NULL, created REAL NOT NULL, finished REAL
);
CREATE TABLE checkpoints (
    checkpoint_id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_name TEXT NOT NULL REFERENCES runs(run_name),
    path TEXT NOT NULL, kind TEXT NOT NULL, bytes INTEGER, sha256 TEXT, created REAL NOT NULL,
    UNIQUE (run_name, path)
);
CREATE TABLE evaluations (
    evaluation_id INTEGER PRIMARY KEY AUTOINCREMENT,
    cell_id TEXT NOT NULL REFERENCES cells(cell_id),
    run_name TEXT NOT NULL REFERENCES runs(run_name),
    task TEXT NOT NULL, category TEXT NOT NULL, kind TEXT, protocol TEXT NOT NULL, budget TEXT NOT NULL,
    seed INTEGER NOT NULL, eval_seed INTEGER, metric TEXT NOT NULL, higher_is_better INTEGER NOT NULL DEFAULT 1,
    value REAL NOT NULL, settings TEXT, details TEXT, dataset TEXT, n_train INTEGER, n_test INTEGER,
    encoder_id TEXT, seconds REAL, time REAL NOT NULL,
    UNIQUE (cell_id, task, protocol, metric)
);
CREATE INDEX evaluations_by_task ON evaluations (task, protocol);
"""

EVALUATION_COLUMNS = ("task", "category", "kind", "protocol", "budget", "seed", "eval_seed", "metric",
                      "higher_is_better", "value", "settings", "details", "dataset", "n_train", "n_test",
                      "encoder_id", "seconds")


def database_path(path: str | Path) -> Path:
    """The store inside a benchmark directory, or the file itself."""
    path = Path(path)
    return path / DATABASE_FILE if path.is_dir() else path


class ResultsStore:
    """A benchmark's SQLite store; safe to open from several processes at once."""

    def __init__(self, path: str | Path, create: bool = False):
        self.path = database_path(path)
        if not self.path.is_file() and not create:
            raise DataError(f"{self.path}: no results store here (run `augbench benchmark` first)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), so a claim is one atomic step.
        self.connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.connection.row_factory = sqlite3.Row
        try:
            self.connection.execute("PRAGMA busy_timeout = 60000")
            self._open_schema()
        except sqlite3.DatabaseError as error:
            self.connection.close()
            raise DataError(f"{self.path}: not a results store ({error})") from None
        except DataError:
            self.connection.close()
            raise

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def _open_schema(self) -> None:
        version = self.connection.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == 0 and not tables:
            self.connection.execute("PRAGMA journal_mode = WAL")
            with self.transaction() as db:
                # Another process may have created the schema between our check and the lock.
                if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    _create(db)
            return
        if version != SCHEMA_VERSION:
            found = f"schema version {version}" if version else f"an unversioned file with tables {sorted(tables)}"
            action = "upgrade augbench to read it" if version > SCHEMA_VERSION else (
                "re-run its benchmark into a new directory with this version, or read it with the augbench that "
                "wrote it")
            raise DataError(f"{self.path}: results store has {found}; this augbench reads schema version "
                            f"{SCHEMA_VERSION} and does not change the file: {action}")

    # --- the grid -----------------------------------------------------------------------------------------

    def set_meta(self, **values: str) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))

    def meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self.connection.execute("SELECT key, value FROM meta")}

    def add_cells(self, cells: Iterable[dict]) -> None:
        """Insert grid cells that are not there yet (a re-run of the same grid adds nothing)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO cells (cell_id, method, dataset, seed, suite, run_name) "
                "VALUES (:cell_id, :method, :dataset, :seed, :suite, :run_name)",
                list(cells),
            )

    def retry_failed(self) -> int:
        with self.transaction() as db:
            return db.execute("UPDATE cells SET state = 'pending', owner = NULL, error = NULL "
                              "WHERE state = 'failed'").rowcount

    def claim(self, owner: str, lease_seconds: float, cell_ids: Iterable[str] | None = None) -> dict | None:
        """Atomically take a pending cell, or a running one whose lease expired; None when none is left.

        A cell is not taken while another live runner holds a cell of the same pretraining run, so one
        run directory is never trained by two processes.
        """
        now = time.time()
        wanted = None if cell_ids is None else set(cell_ids)
        with self.transaction() as db:
            rows = db.execute("SELECT * FROM cells ORDER BY rowid").fetchall()
            live_runs = {r["run_name"] for r in rows if r["state"] == "running" and r["owner"] != owner
                         and not _expired(r, now, lease_seconds)}
            for row in rows:
                if wanted is not None and row["cell_id"] not in wanted:
                    continue
                takeable = row["state"] == "pending" or (
                    row["state"] == "running" and _expired(row, now, lease_seconds))
                if takeable and row["run_name"] not in live_runs:
                    db.execute(
                        "UPDATE cells SET state = 'running', owner = ?, heartbeat = ?, attempts = attempts + 1, "
                        "started = ?, error = NULL WHERE cell_id = ?",
                        (owner, now, now, row["cell_id"]),
                    )
                    return {**dict(row), "taken_over_from": row["owner"] if row["state"] == "running" else None}
        return None

    def heartbeat(self, owner: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE cells SET heartbeat = ? WHERE owner = ? AND state = 'running'", (time.time(), owner))

    def fail(self, cell_id: str, owner: str, error: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE cells SET state = 'failed', error = ?, finished = ? WHERE cell_id = ? AND owner = ?",
                       (error, time.time(), cell_id, owner))

    def record_run(self, run: dict, checkpoints: Iterable[dict] = ()) -> None:
        """Insert or update a pretraining run and the checkpoint files it produced."""
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs (run_name, method, dataset, seed, run_dir, config, code_version, environment, "
                "state, created, finished) VALUES (:run_name, :method, :dataset, :seed, :run_dir, :config, "
                ":code_version, :environment, :state, :created, :finished) "
                "ON CONFLICT (run_name) DO UPDATE SET state = excluded.state, finished = excluded.finished, "
                "config = excluded.config, code_version = excluded.code_version, "
                "environment = excluded.environment",
                {"created": now, "finished": now if run["state"] == "finished" else None, **run},
            )
            for checkpoint in checkpoints:
                db.execute(
                    "INSERT OR REPLACE INTO checkpoints (run_name, path, kind, bytes, sha256, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (run["run_name"], checkpoint["path"], checkpoint["kind"], checkpoint.get("bytes"),
                     checkpoint.get("sha256"), now),
                )

    def finish(self, cell_id: str, owner: str, run_name: str, evaluations: Iterable[dict]) -> bool:
        """Write a cell's evaluations and mark it finished, in one transaction.

        Returns False (and writes nothing) when the cell is no longer this owner's: its lease expired and
        another runner took it over, so only one of them records numbers.
        """
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT owner, state, started FROM cells WHERE cell_id = ?", (cell_id,)).fetchone()
            if row is None or row["owner"] != owner or row["state"] != "running":
                return False
            db.executemany(
                f"INSERT INTO evaluations (cell_id, run_name, time, {', '.join(EVALUATION_COLUMNS)}) "
                f"VALUES (?, ?, ?, {', '.join('?' * len(EVALUATION_COLUMNS))})",
                [(cell_id, run_name, now, *_row(e)) for e in evaluations],
            )
            db.execute("UPDATE cells SET state = 'finished', finished = ?, seconds = ? WHERE cell_id = ?",
                       (now, now - (row["started"] or now), cell_id))
        return True

    # --- reading ------------------------------------------------------------------------------------------

    def table(self, name: str) -> pd.DataFrame:
        if name not in ("meta", "cells", "runs", "checkpoints", "evaluations"):
            raise DataError(f"{self.path}: no table {name!r}")
        return pd.read_sql_query(f"SELECT * FROM {name}", self.connection)

    def results(self) -> pd.DataFrame:
        """One row per evaluation, with its cell's method, pretraining dataset and suite."""
        return pd.read_sql_query(
            "SELECT c.method, c.dataset AS pretrain_dataset, e.seed, c.suite, e.task, e.category, e.kind, "
            "e.protocol, e.budget, e.metric, e.higher_is_better, e.value, e.eval_seed, e.n_train, e.n_test, "
            "e.settings, e.details, e.dataset AS task_dataset, e.encoder_id, e.seconds, e.time, e.run_name, "
            "e.cell_id, r.code_version "
            "FROM evaluations e JOIN cells c USING (cell_id) LEFT JOIN runs r ON r.run_name = e.run_name "
            "ORDER BY c.rowid, e.evaluation_id",
            self.connection,
        )


_DEFAULTS = {"category": UNCATEGORISED, "budget": "{}", "higher_is_better": True}


def _row(evaluation: dict) -> tuple:
    values = {**evaluation, **{k: v for k, v in _DEFAULTS.items() if evaluation.get(k) is None}}
    return tuple(values.get(column) for column in EVALUATION_COLUMNS)


def _create(db: sqlite3.Connection) -> None:
    for statement in filter(str.strip, _SCHEMA.split(";")):
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?), ('created', ?)",
               (str(SCHEMA_VERSION), time.strftime("%Y-%m-%dT%H:%M:%S")))


def _expired(row: sqlite3.Row, now: float, lease_seconds: float) -> bool:
    if row["heartbeat"] is None or now - row["heartbeat"] > lease_seconds:
        return True
    host, pid = _owner_process(row["owner"])
    return host == socket.gethostname() and pid is not None and not _process_alive(pid)


def _owner_process(owner: str | None) -> tuple[str | None, int | None]:
    parts = (owner or "").split(":")
    return (parts[0], int(parts[1])) if len(parts) >= 2 and parts[1].isdigit() else (None, None)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_id(token: str) -> str:
    """The owner string of this process: host, pid (so a dead local owner is noticed at once) and a token."""
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def load_results(path: str | Path) -> pd.DataFrame:
    """All evaluations of a benchmark directory or results file, one row each (see `ResultsStore.results`)."""
    with ResultsStore(path) as store:
        return store.results()


def evaluation_records(rows: pd.DataFrame, seed: int, categories: dict[str, str]) -> list[dict]:
    """Store records from `augbench.evaluate` rows; `categories[task]` names each task's category."""
    records = []
    for row in rows.to_dict("records"):
        budget = row.get("budget")
        if budget is None or (isinstance(budget, float) and pd.isna(budget)):
            budget = {"n_train": row.get("n_train")}
        records.append({
            **{k: _plain(row.get(k)) for k in ("task", "kind", "protocol", "metric", "value", "settings", "details",
                                               "dataset", "n_train", "n_test", "encoder_id", "seconds")},
            "higher_is_better": bool(row.get("higher_is_better", True)),
            "category": row.get("category") if isinstance(row.get("category"), str) else categories.get(
                row["task"], _DEFAULTS["category"]),
            "budget": budget if isinstance(budget, str) else json.dumps(budget, sort_keys=True, default=str),
            "seed": seed,
            "eval_seed": _plain(row.get("seed")),
        })
    return records


def _plain(value):
    # SQLite binds Python numbers only; DataFrame rows hold NumPy scalars.
    return value.item() if hasattr(value, "item") else value

