"""The results store: one interface, two back ends, the same schema in both.

- An embedded SQLite file (the default: `<benchmark dir>/results.sqlite`, WAL
  mode, every write one transaction) for a grid on one machine.
- A PostgreSQL server given as a URL (`postgresql://user@host/db`, through
  SQLAlchemy Core and psycopg 3: `pip install augbench[postgres]`) for a grid
  that spans machines: SQLite's WAL needs shared memory and is not safe on a
  network filesystem.

Schema, version 1 (SQLite's `PRAGMA user_version` and `meta.schema_version` hold it):

    meta(key PRIMARY KEY, value)
        schema_version, created, the benchmark's name and config (YAML), and
        `baselines` (JSON: each method's random-encoder label).
    cells(cell_id PRIMARY KEY, method, dataset, seed, suite, run_name,
          state, owner, heartbeat, attempts, started, finished, seconds, error)
        one grid cell = (method, pretraining dataset, seed, suite); state is
        pending | running | finished | failed; the random encoders' cells
        have method `random` (or `random_N`) and dataset `none`. The work queue over this table
        (claims, leases, heartbeats) is `augbench.analysis.queue`.
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

A store written by an older or newer schema, or a file or database that holds
something else, is refused with a message naming both; nothing is ever
dropped or overwritten.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from augbench.errors import DataError

SCHEMA_VERSION = 1
DATABASE_FILE = "results.sqlite"
CELL_STATES = ("pending", "running", "finished", "failed")
UNCATEGORISED = "uncategorised"
SERVER_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://")
# The method label of a grid's randomly initialised encoder (random_1, random_2, … with several architectures)
# and the pretraining dataset of its cells.
RANDOM = "random"
NO_PRETRAINING = "none"


def is_random_label(label: str) -> bool:
    return label == RANDOM or (label.startswith(f"{RANDOM}_") and label[len(RANDOM) + 1:].isdigit())

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


def _postgres_schema() -> str:
    """The same schema in PostgreSQL's types: one text serves both back ends, and the SQLite file's DDL stays
    byte for byte what earlier versions wrote. SQLite's INTEGER and REAL are 64-bit, so they map to BIGINT and
    DOUBLE PRECISION (PostgreSQL's INTEGER and REAL are 32-bit); cells gains the explicit `rowid` SQLite has
    implicitly, the grid order claims and results follow."""
    ddl = _SCHEMA.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
    ddl = ddl.replace(" INTEGER", " BIGINT").replace(" REAL", " DOUBLE PRECISION")
    return ddl.replace("    cell_id TEXT PRIMARY KEY,\n",
                       "    cell_id TEXT PRIMARY KEY, rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,\n", 1)


EVALUATION_COLUMNS = ("task", "category", "kind", "protocol", "budget", "seed", "eval_seed", "metric",
                      "higher_is_better", "value", "settings", "details", "dataset", "n_train", "n_test",
                      "encoder_id", "seconds")
TABLES = ("meta", "cells", "runs", "checkpoints", "evaluations")


def is_server_url(location: str | Path) -> bool:
    return str(location).startswith(SERVER_SCHEMES)


def shown_location(location: str | Path) -> str:
    """A store's path or URL as printed: a URL's password replaced by *** (a regex, so that printing a URL
    does not need the postgres extra's SQLAlchemy)."""
    return re.sub(r"^(\w[\w+]*://[^:/@]+):[^@/]*@", r"\1:***@", str(location))


def database_path(path: str | Path) -> Path:
    """The store inside a benchmark directory, or the file itself."""
    path = Path(path)
    return path / DATABASE_FILE if path.is_dir() else path


class Statements:
    """The statements of one transaction, in named-parameter SQL (`:name`) that both back ends run as written."""

    def __init__(self, connection: Any, dialect: str):
        self.connection, self.dialect = connection, dialect

    def rows(self, sql: str, params: dict | None = None) -> list[dict]:
        return [dict(row) for row in self._execute(sql, params or {})]

    def run(self, sql: str, params: dict | None = None) -> int:
        """Execute one statement; the number of rows it changed."""
        return self._execute(sql, params or {}, rows=False)

    def run_many(self, sql: str, params: list[dict]) -> None:
        if params:
            self._execute(sql, params, rows=False)

    def _execute(self, sql: str, params: dict | list[dict], rows: bool = True):
        if self.dialect == "sqlite":
            cursor = (self.connection.executemany if isinstance(params, list) else self.connection.execute)(
                sql, params)
            return cursor.fetchall() if rows else cursor.rowcount
        from sqlalchemy import text

        result = self.connection.execute(text(sql), params)
        return [row._mapping for row in result] if rows else result.rowcount


class ResultsStore:
    """A benchmark's store: a SQLite file (a path or a benchmark directory) or a PostgreSQL URL; safe to open
    from several processes at once. `read_only` opens a file without writing to it (or its directory)."""

    def __init__(self, location: str | Path, create: bool = False, read_only: bool = False):
        self.server = is_server_url(location)
        self.path = None if self.server else database_path(location)
        self.dialect = "postgresql" if self.server else "sqlite"
        self.read_only = read_only
        if self.server:
            self._engine, self.location = _connect_server(str(location))
            self.connection = None
        else:
            self.location = str(self.path)
            if not self.path.is_file() and not create:
                raise DataError(f"{self.path}: no results store here (run `augbench benchmark` first)")
            self.connection = _connect_file(self.path, create, read_only)
        try:
            self._open_schema(create)
        except sqlite3.DatabaseError as error:
            self.close()
            raise DataError(f"{self.path}: not a results store ({error})") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        else:
            self._engine.dispose()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Statements]:
        """One transaction. SQLite's is IMMEDIATE (it takes the write lock at once), so a read-then-write step
        such as a claim is atomic across processes; PostgreSQL's locks rows as its statements ask."""
        if self.connection is None:
            with self._engine.begin() as connection:
                yield Statements(connection, self.dialect)
            return
        self.connection.execute("BEGIN" if self.read_only else "BEGIN IMMEDIATE")
        try:
            yield Statements(self.connection, self.dialect)
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def _open_schema(self, create: bool) -> None:
        version, tables = self._version_and_tables()
        if version == 0 and not tables:
            if not create:
                what = "an empty file" if self.path else "an empty database"
                raise DataError(f"{self.location}: not a results store ({what}; `augbench benchmark` writes "
                                "one) and left unchanged")
            self._create_schema()
            return
        if version != SCHEMA_VERSION:
            kind = "file" if self.path else "database"
            found = f"schema version {version}" if version else f"an unversioned {kind} with tables {sorted(tables)}"
            action = "upgrade augbench to read it" if version > SCHEMA_VERSION else (
                "re-run its benchmark into a new store with this version, or read it with the augbench that "
                "wrote it")
            raise DataError(f"{self.location}: results store has {found}; this augbench reads schema version "
                            f"{SCHEMA_VERSION} and does not change the {kind}: {action}")

    def _version_and_tables(self) -> tuple[int, set[str]]:
        if self.connection is not None:
            version = self.connection.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in self.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return version, tables
        with self.transaction() as db:
            tables = {r["table_name"] for r in db.rows(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
            stored = db.rows("SELECT value FROM meta WHERE key = 'schema_version'") if "meta" in tables else []
        return (int(stored[0]["value"]) if stored and stored[0]["value"].isdigit() else 0), tables

    def _create_schema(self) -> None:
        if self.connection is not None:
            self.connection.execute("PRAGMA journal_mode = WAL")
        with self.transaction() as db:
            # Another process may have created the schema between our check and the lock.
            if self.connection is not None:
                if self.connection.execute("PRAGMA user_version").fetchone()[0]:
                    return
                statements = _SCHEMA
            else:
                db.rows("SELECT pg_advisory_xact_lock(hashtext('augbench.schema'))")
                if db.rows("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() "
                           "AND table_name = 'meta'"):
                    return
                statements = _postgres_schema()
            for statement in filter(str.strip, statements.split(";")):
                db.run(statement)
            if self.connection is not None:
                db.run(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.run_many("INSERT INTO meta (key, value) VALUES (:key, :value)",
                        [{"key": "schema_version", "value": str(SCHEMA_VERSION)},
                         {"key": "created", "value": time.strftime("%Y-%m-%dT%H:%M:%S")}])

    # --- writing ------------------------------------------------------------------------------------------

    def set_meta(self, **values: str) -> None:
        with self.transaction() as db:
            db.run_many("INSERT INTO meta (key, value) VALUES (:key, :value) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        [{"key": k, "value": v} for k, v in values.items()])

    def meta(self) -> dict[str, str]:
        with self.transaction() as db:
            return {r["key"]: r["value"] for r in db.rows("SELECT key, value FROM meta")}

    def record_run(self, run: dict, checkpoints: Iterable[dict] = ()) -> None:
        """Insert or update a pretraining run and the checkpoint files it produced."""
        now = time.time()
        with self.transaction() as db:
            db.run(
                "INSERT INTO runs (run_name, method, dataset, seed, run_dir, config, code_version, environment, "
                "state, created, finished) VALUES (:run_name, :method, :dataset, :seed, :run_dir, :config, "
                ":code_version, :environment, :state, :created, :finished) "
                "ON CONFLICT (run_name) DO UPDATE SET state = excluded.state, finished = excluded.finished, "
                "config = excluded.config, code_version = excluded.code_version, "
                "environment = excluded.environment",
                {"created": now, "finished": now if run["state"] == "finished" else None, **run},
            )
            db.run_many(
                "INSERT INTO checkpoints (run_name, path, kind, bytes, sha256, created) "
                "VALUES (:run_name, :path, :kind, :bytes, :sha256, :created) ON CONFLICT (run_name, path) "
                "DO UPDATE SET kind = excluded.kind, bytes = excluded.bytes, sha256 = excluded.sha256, "
                "created = excluded.created",
                [{"run_name": run["run_name"], "path": c["path"], "kind": c["kind"], "bytes": c.get("bytes"),
                  "sha256": c.get("sha256"), "created": now} for c in checkpoints],
            )

    def add_evaluations(self, db: Statements, cell_id: str, run_name: str, evaluations: Iterable[dict]) -> None:
        """Insert a cell's evaluations within the caller's transaction (the queue's `finish`)."""
        now = time.time()
        db.run_many(
            f"INSERT INTO evaluations (cell_id, run_name, time, {', '.join(EVALUATION_COLUMNS)}) "
            f"VALUES (:cell_id, :run_name, :time, {', '.join(':' + c for c in EVALUATION_COLUMNS)})",
            [{"cell_id": cell_id, "run_name": run_name, "time": now, **_row(e)} for e in evaluations],
        )

    # --- reading ------------------------------------------------------------------------------------------

    def table(self, name: str) -> pd.DataFrame:
        if name not in TABLES:
            raise DataError(f"{self.location}: no table {name!r}")
        frame = self._frame(f"SELECT * FROM {name}" + (" ORDER BY rowid" if name == "cells" else ""))
        return frame.drop(columns=["rowid"], errors="ignore")  # PostgreSQL's explicit twin of SQLite's rowid

    def results(self) -> pd.DataFrame:
        """One row per evaluation, with its cell's method, pretraining dataset and suite."""
        return self._frame(
            "SELECT c.method, c.dataset AS pretrain_dataset, e.seed, c.suite, e.task, e.category, e.kind, "
            "e.protocol, e.budget, e.metric, e.higher_is_better, e.value, e.eval_seed, e.n_train, e.n_test, "
            "e.settings, e.details, e.dataset AS task_dataset, e.encoder_id, e.seconds, e.time, e.run_name, "
            "e.cell_id, r.code_version "
            "FROM evaluations e JOIN cells c USING (cell_id) LEFT JOIN runs r ON r.run_name = e.run_name "
            "ORDER BY c.rowid, e.evaluation_id"
        )

    def _frame(self, sql: str) -> pd.DataFrame:
        if self.connection is not None:
            return pd.read_sql_query(sql, self.connection)
        with self._engine.connect() as connection:
            return pd.read_sql_query(sql, connection)


def _connect_file(path: Path, create: bool, read_only: bool) -> sqlite3.Connection:
    """isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), so a claim is one atomic step.
    Read-only opens use SQLite's URI modes: `mode=ro` writes nothing, and where the file's place is read-only
    (so SQLite cannot make the WAL's shared-memory file) `immutable=1` reads it without any lock."""
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=60, isolation_level=None)
        connection.execute("PRAGMA busy_timeout = 60000")
    else:
        uri = path.resolve().as_uri()
        try:
            connection = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60, isolation_level=None)
            connection.execute("PRAGMA user_version").fetchone()
        except sqlite3.OperationalError:
            connection = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
    connection.row_factory = sqlite3.Row
    return connection


def _connect_server(url: str):
    """A SQLAlchemy engine on the psycopg 3 driver, and the URL to show (its password hidden)."""
    try:
        from sqlalchemy import create_engine, make_url
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:
        raise DataError(f"store={url.split('@')[-1]}: a PostgreSQL store needs SQLAlchemy and psycopg: "
                        "pip install 'augbench[postgres]'") from None
    parsed = make_url(url.replace("postgres://", "postgresql://", 1)).set(drivername="postgresql+psycopg")
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = create_engine(parsed, pool_pre_ping=True)
        with engine.connect():
            pass
    except ImportError:
        raise DataError(f"{shown}: a PostgreSQL store needs psycopg: pip install 'augbench[postgres]'") from None
    except SQLAlchemyError as error:
        reason = " ".join(str(getattr(error, "orig", None) or error).split())
        raise DataError(f"{shown}: cannot open the results store ({reason})") from None
    return engine, shown


def load_results(path: str | Path) -> pd.DataFrame:
    """All evaluations of a benchmark directory, results file or store URL, one row each (see
    `ResultsStore.results`)."""
    with ResultsStore(path, read_only=True) as store:
        return store.results()


_DEFAULTS = {"category": UNCATEGORISED, "budget": "{}", "higher_is_better": True}


def _row(evaluation: dict) -> dict:
    values = {**evaluation, **{k: v for k, v in _DEFAULTS.items() if evaluation.get(k) is None}}
    row = {column: values.get(column) for column in EVALUATION_COLUMNS}
    row["higher_is_better"] = int(bool(row["higher_is_better"]))  # an INTEGER column in both back ends
    return row


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

