"""The benchmark's work queue: claims, leases and heartbeats over the results store's `cells` table.

A runner claims a cell by setting owner ("host:pid:token") and heartbeat (unix time) in one transaction.
A running cell may be taken over when its heartbeat is older than the lease, when its owner process on this
host is gone, or when its owner is an earlier attempt of the same scheduler job (the same token on another
process: a Ray task retried after its worker died, a SLURM job requeued after preemption). A cell is not taken
while another live runner holds a cell of the same pretraining run, so one run directory is never trained by
two processes.

The store's back end decides how a claim is made atomic. SQLite: one IMMEDIATE transaction (the whole file is
locked for the few milliseconds a claim takes). PostgreSQL: the row is taken with `SELECT ... FOR UPDATE SKIP
LOCKED` (a runner passes over a cell another runner is claiming instead of waiting for it), under a
transaction-scoped advisory lock per pretraining run that two runners cannot both hold.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable

from augbench.analysis.store import ResultsStore, Statements

_CLAIM_COLUMNS = "cell_id, method, dataset, seed, suite, run_name, state, owner, heartbeat, attempts"


class CellQueue:
    """The grid's cells in a store, as work for runners."""

    def __init__(self, store: ResultsStore):
        self.store = store

    def add_cells(self, cells: Iterable[dict]) -> None:
        """Insert grid cells that are not there yet (a re-run of the same grid adds nothing)."""
        with self.store.transaction() as db:
            db.run_many("INSERT INTO cells (cell_id, method, dataset, seed, suite, run_name) "
                        "VALUES (:cell_id, :method, :dataset, :seed, :suite, :run_name) "
                        "ON CONFLICT (cell_id) DO NOTHING", list(cells))

    def retry_failed(self) -> int:
        with self.store.transaction() as db:
            return db.run("UPDATE cells SET state = 'pending', owner = NULL, error = NULL WHERE state = 'failed'")

    def states(self) -> dict[str, str]:
        """cell_id → state, in grid order."""
        with self.store.transaction() as db:
            return {r["cell_id"]: r["state"] for r in db.rows("SELECT cell_id, state FROM cells ORDER BY rowid")}

    def claim(self, owner: str, lease_seconds: float, cell_ids: Iterable[str] | None = None) -> dict | None:
        """Atomically take a pending cell, or a running one that may be taken over; None when none is left."""
        now = time.time()
        wanted = None if cell_ids is None else set(cell_ids)
        with self.store.transaction() as db:
            rows = db.rows(f"SELECT {_CLAIM_COLUMNS} FROM cells ORDER BY rowid")
            live_runs = {r["run_name"] for r in rows if _held_by_another(r, owner, now, lease_seconds)}
            for row in rows:
                if (wanted is not None and row["cell_id"] not in wanted) or row["run_name"] in live_runs:
                    continue
                if not _takeable(row, owner, now, lease_seconds):
                    continue
                if self.store.dialect == "postgresql":
                    row = _lock_on_server(db, row, owner, now, lease_seconds)
                    if row is None:
                        continue
                db.run("UPDATE cells SET state = 'running', owner = :owner, heartbeat = :now, "
                       "attempts = attempts + 1, started = :now, error = NULL WHERE cell_id = :cell_id",
                       {"owner": owner, "now": now, "cell_id": row["cell_id"]})
                return {**row, "taken_over_from": row["owner"] if row["state"] == "running" else None}
        return None

    def heartbeat(self, owner: str) -> None:
        with self.store.transaction() as db:
            db.run("UPDATE cells SET heartbeat = :now WHERE owner = :owner AND state = 'running'",
                   {"now": time.time(), "owner": owner})

    def fail(self, cell_id: str, owner: str, error: str) -> None:
        with self.store.transaction() as db:
            db.run("UPDATE cells SET state = 'failed', error = :error, finished = :now "
                   "WHERE cell_id = :cell_id AND owner = :owner",
                   {"error": error, "now": time.time(), "cell_id": cell_id, "owner": owner})

    def release(self, owner: str) -> None:
        """Hand this owner's running cells back (an interrupted runner), so the next runner need not wait for
        the lease."""
        with self.store.transaction() as db:
            db.run("UPDATE cells SET state = 'pending', owner = NULL WHERE owner = :owner AND state = 'running'",
                   {"owner": owner})

    def finish(self, cell_id: str, owner: str, run_name: str, evaluations: Iterable[dict]) -> bool:
        """Write a cell's evaluations and mark it finished, in one transaction.

        Returns False (and writes nothing) when the cell is no longer this owner's: its lease expired and
        another runner took it over, so only one of them records numbers.
        """
        now = time.time()
        lock = " FOR UPDATE" if self.store.dialect == "postgresql" else ""
        with self.store.transaction() as db:
            rows = db.rows(f"SELECT owner, state, started FROM cells WHERE cell_id = :cell_id{lock}",
                           {"cell_id": cell_id})
            if not rows or rows[0]["owner"] != owner or rows[0]["state"] != "running":
                return False
            self.store.add_evaluations(db, cell_id, run_name, evaluations)
            db.run("UPDATE cells SET state = 'finished', finished = :now, seconds = :seconds WHERE cell_id = :cell_id",
                   {"now": now, "seconds": now - (rows[0]["started"] or now), "cell_id": cell_id})
        return True


def _lock_on_server(db: Statements, row: dict, owner: str, now: float, lease_seconds: float) -> dict | None:
    """PostgreSQL reads without locking, so the rows a claim chose from may already be stale. Take the run's
    advisory lock (held by any claim of a cell of this run until it commits), re-read the run's cells now that
    no other claim of it is in flight, and lock the cell's row, skipping it when another runner holds it."""
    locked = db.rows("SELECT pg_try_advisory_xact_lock(hashtext(:key)) AS locked",
                     {"key": f"augbench.run:{row['run_name']}"})[0]["locked"]
    if not locked:
        return None
    run_cells = db.rows(f"SELECT {_CLAIM_COLUMNS} FROM cells WHERE run_name = :run_name",
                        {"run_name": row["run_name"]})
    if any(_held_by_another(r, owner, now, lease_seconds) for r in run_cells):
        return None
    fresh = db.rows(f"SELECT {_CLAIM_COLUMNS} FROM cells WHERE cell_id = :cell_id FOR UPDATE SKIP LOCKED",
                    {"cell_id": row["cell_id"]})
    return fresh[0] if fresh and _takeable(fresh[0], owner, now, lease_seconds) else None


def _takeable(row: dict, owner: str, now: float, lease_seconds: float) -> bool:
    return row["state"] == "pending" or (row["state"] == "running" and _expired(row, owner, now, lease_seconds))


def _held_by_another(row: dict, owner: str, now: float, lease_seconds: float) -> bool:
    return row["state"] == "running" and row["owner"] != owner and not _expired(row, owner, now, lease_seconds)


def _expired(row: dict, owner: str, now: float, lease_seconds: float) -> bool:
    if row["heartbeat"] is None or now - row["heartbeat"] > lease_seconds:
        return True
    if _token(row["owner"]) and _token(row["owner"]) == _token(owner) and row["owner"] != owner:
        return True  # an earlier attempt of this scheduler job: the scheduler knows it is gone
    host, pid = _owner_process(row["owner"])
    return host == socket.gethostname() and pid is not None and not _process_alive(pid)


def _token(owner: str | None) -> str:
    return (owner or "").split(":", 2)[2] if (owner or "").count(":") >= 2 else ""


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
    """The owner string of this process: host, pid (so a dead local owner is noticed at once) and a token
    (a scheduler job's id, so its next attempt takes its cell over at once; else a random one)."""
    return f"{socket.gethostname()}:{os.getpid()}:{token}"
