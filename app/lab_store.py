"""The lab's run store: every run's record in SQLite, its files in a folder of its own.

Runs outlive the process that started them: a restarted server still answers for a finished
run's status, events and adapter, and a `loralab worker` on another process (see
app/lab_queue.py) writes to the same store the web replicas read. Layout under the data
directory (settings.data_dir):

    lab.sqlite3               runs (config, status, summary, error), events, removals
    runs/<id>/adapter/        the adapter in peft's format (written by the training process)
    runs/<id>/loralab-adapter-<id>.zip   made on the first download

SQLite runs in WAL mode, so readers (web replicas) never wait for the writer (the process
running a job). Every process opens its own connections (one per thread); the database must
be on a local filesystem shared by those processes (one host; see docs/deploying.md).
Retention is bounded by a count and a total size of finished runs; what it removes is recorded
(`removals`) and logged without paths.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("loralab.store")

DB_NAME = "lab.sqlite3"
UNFINISHED = ("queued", "running")
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    adapter_of TEXT,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    summary TEXT,
    error TEXT,
    stop_reason TEXT,
    stop_requested_at REAL,
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    size_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created_at);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS removals (
    at REAL NOT NULL,
    runs TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""
_JSON_COLUMNS = ("config", "summary", "error")
_COLUMNS = ("id", "kind", "adapter_of", "config", "status", "created_at", "started_at", "finished_at", "summary",
            "error", "stop_reason", "stop_requested_at", "worker", "attempts", "size_bytes")


@dataclass(frozen=True)
class Retention:
    """How many finished runs, and how many bytes of their files, the store keeps."""

    max_runs: int
    max_bytes: int


@dataclass(frozen=True)
class Removal:
    """What one retention pass removed (ids only: never a path)."""

    at: float
    runs: tuple[str, ...]
    bytes: int
    reason: str

    def public(self) -> dict[str, Any]:
        return {"at": self.at, "runs": list(self.runs), "bytes": self.bytes, "reason": self.reason}


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 if it does not exist)."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class RunStore:
    """Run records (SQLite) and run folders under one root. Thread-safe; one per process."""

    def __init__(self, root: Path, retention: Retention, persistent: bool = True) -> None:
        self.root = root
        self.runs_dir = root / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.retention = retention
        self.persistent = persistent
        self._local = threading.local()
        self._db().executescript(SCHEMA)

    @classmethod
    def open(cls, data_dir: Path, retention: Retention) -> RunStore:
        """The store under `data_dir`; in a temporary folder (runs lost on a restart, and said
        so in the log) when the data directory is not writable, as in a baked read-only image."""
        try:
            return cls(data_dir, retention)
        except (OSError, sqlite3.Error):
            log.warning("the data directory is not writable; keeping the lab's runs in a temporary folder "
                        "(they will not survive a restart)")
            return cls(Path(tempfile.mkdtemp(prefix="loralab-runs-")), retention, persistent=False)

    # --- connections ------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.root / DB_NAME, timeout=30, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # --- runs -------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def adapter_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "adapter"

    def create(self, record: dict[str, Any]) -> None:
        """Insert a new run (a dict with `_COLUMNS` keys; missing ones take their defaults)."""
        row = {k: record.get(k) for k in _COLUMNS}
        row["attempts"] = row["attempts"] or 0
        row["size_bytes"] = row["size_bytes"] or 0
        for key in _JSON_COLUMNS:
            row[key] = None if row[key] is None else json.dumps(row[key])
        with self._transaction() as db:
            db.execute(f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                       [row[k] for k in _COLUMNS])

    def update(self, run_id: str, when_status: Iterable[str] | None = None, **fields: Any) -> bool:
        """Set some columns; with `when_status`, only if the run's status is one of those
        (a compare-and-set between processes). True if the row changed."""
        if not fields:
            return False
        values = [json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in fields.items()]
        sql = f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?"
        params = [*values, run_id]
        if when_status is not None:
            statuses = tuple(when_status)
            sql += f" AND status IN ({', '.join('?' * len(statuses))})"
            params += statuses
        with self._transaction() as db:
            return db.execute(sql, params).rowcount == 1

    def get(self, run_id: str) -> dict[str, Any] | None:
        row = self._db().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else self._record(row)

    def ids_with_status(self, *statuses: str) -> list[str]:
        """Ids of runs in these statuses, oldest first."""
        rows = self._db().execute(
            f"SELECT id FROM runs WHERE status IN ({', '.join('?' * len(statuses))}) ORDER BY created_at, rowid",
            statuses).fetchall()
        return [r["id"] for r in rows]

    def records_with_status(self, *statuses: str) -> list[dict[str, Any]]:
        rows = self._db().execute(
            f"SELECT * FROM runs WHERE status IN ({', '.join('?' * len(statuses))}) ORDER BY created_at, rowid",
            statuses).fetchall()
        return [self._record(r) for r in rows]

    @staticmethod
    def _record(row: sqlite3.Row) -> dict[str, Any]:
        record = dict(row)
        for key in _JSON_COLUMNS:
            record[key] = None if record[key] is None else json.loads(record[key])
        return record

    # --- events -----------------------------------------------------------------------
    def append_events(self, run_id: str, first_seq: int, events: list[dict[str, Any]]) -> None:
        """Add events numbered from `first_seq` (the run's event count before them)."""
        if not events:
            return
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO events (run_id, seq, body) VALUES (?, ?, ?)",
                           [(run_id, first_seq + i, json.dumps(e)) for i, e in enumerate(events)])

    def events(self, run_id: str, since: int = 0) -> list[dict[str, Any]]:
        """The run's events from number `since` on, in order."""
        rows = self._db().execute("SELECT body FROM events WHERE run_id = ? AND seq >= ? ORDER BY seq",
                                  (run_id, since)).fetchall()
        return [json.loads(r["body"]) for r in rows]

    def event_count(self, run_id: str) -> int:
        row = self._db().execute("SELECT COALESCE(MAX(seq) + 1, 0) AS n FROM events WHERE run_id = ?", (run_id,)).fetchone()
        return int(row["n"])

    def finish(self, run_id: str, status: str, events: list[dict[str, Any]], first_seq: int,
               when_status: Iterable[str] = UNFINISHED, **fields: Any) -> bool:
        """End a run in one transaction: its last events (the `end` event among them), its status
        and size; only if it is still unfinished (False when another process ended it first)."""
        statuses = tuple(when_status)
        fields = {"status": status, "finished_at": fields.pop("finished_at", time.time()), **fields,
                  "size_bytes": folder_bytes(self.run_dir(run_id))}
        values = [json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in fields.items()]
        with self._transaction() as db:
            changed = db.execute(
                f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ? "
                f"AND status IN ({', '.join('?' * len(statuses))})", [*values, run_id, *statuses]).rowcount == 1
            if changed:
                db.executemany("INSERT OR REPLACE INTO events (run_id, seq, body) VALUES (?, ?, ?)",
                               [(run_id, first_seq + i, json.dumps(e)) for i, e in enumerate(events)])
        return changed

    def interrupt_unfinished(self, message: str) -> list[str]:
        """Mark every queued or running run failed with kind "interrupted" (after a shutdown
        or a crash of the process that owned them). Returns their ids."""
        ids = self.ids_with_status(*UNFINISHED)
        for run_id in ids:
            self.finish(run_id, "failed", [{"type": "error", "kind": "interrupted", "message": message},
                                           {"type": "end", "status": "failed"}],
                        self.event_count(run_id), error={"kind": "interrupted", "message": message})
        if ids:
            log.warning("marked %d unfinished run(s) as interrupted: %s", len(ids), ", ".join(ids))
        return ids

    # --- files and retention --------------------------------------------------------------
    def record_size(self, run_id: str) -> None:
        self.update(run_id, size_bytes=folder_bytes(self.run_dir(run_id)))

    def usage(self) -> dict[str, int]:
        """Finished runs kept and the bytes of their files."""
        row = self._db().execute(
            f"SELECT COUNT(*) AS runs, COALESCE(SUM(size_bytes), 0) AS bytes FROM runs "
            f"WHERE status NOT IN ({', '.join('?' * len(UNFINISHED))})", UNFINISHED).fetchone()
        return {"runs": int(row["runs"]), "bytes": int(row["bytes"])}

    def prune(self, keep: str | None = None) -> Removal | None:
        """Remove the oldest finished runs until at most `max_runs` are kept and their files
        take at most `max_bytes`; record and log what went (ids and sizes, no paths). `keep`:
        a run never removed (the one that just finished: its reader is about to download it)."""
        rows = self._db().execute(
            f"SELECT id, size_bytes FROM runs WHERE status NOT IN ({', '.join('?' * len(UNFINISHED))}) "
            f"ORDER BY finished_at, rowid", UNFINISHED).fetchall()
        rows = [r for r in rows if r["id"] != keep] + [r for r in rows if r["id"] == keep]
        count, total = len(rows), sum(r["size_bytes"] for r in rows)
        removed: list[str] = []
        freed = 0
        reasons: set[str] = set()
        for row in rows:
            if row["id"] == keep:
                break
            over_count = count - len(removed) > self.retention.max_runs
            over_bytes = total - freed > self.retention.max_bytes
            if not (over_count or over_bytes):
                break
            reasons |= ({"count"} if over_count else set()) | ({"size"} if over_bytes else set())
            removed.append(row["id"])
            freed += row["size_bytes"]
        if not removed:
            return None
        with self._transaction() as db:
            db.executemany("DELETE FROM events WHERE run_id = ?", [(r,) for r in removed])
            db.executemany("DELETE FROM runs WHERE id = ?", [(r,) for r in removed])
            reason = (f"kept at most {self.retention.max_runs} finished runs and "
                      f"{self.retention.max_bytes / 2**20:.1f} MiB of run files (over: {' and '.join(sorted(reasons))})")
            removal = Removal(time.time(), tuple(removed), freed, reason)
            db.execute("INSERT INTO removals (at, runs, bytes, reason) VALUES (?, ?, ?, ?)",
                       (removal.at, json.dumps(removed), freed, reason))
            db.execute("DELETE FROM removals WHERE rowid NOT IN (SELECT rowid FROM removals ORDER BY at DESC LIMIT 1000)")
        for run_id in removed:
            shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
        log.info("retention: removed %d finished run(s) (%s; %.1f MiB freed): %s",
                 len(removed), reason, freed / 2**20, ", ".join(removed))
        return removal

    def removals(self, limit: int = 10) -> list[Removal]:
        rows = self._db().execute("SELECT * FROM removals ORDER BY at DESC LIMIT ?", (limit,)).fetchall()
        return [Removal(r["at"], tuple(json.loads(r["runs"])), r["bytes"], r["reason"]) for r in rows]

    def removed_total(self) -> int:
        rows = self._db().execute("SELECT runs FROM removals").fetchall()
        return sum(len(json.loads(r["runs"])) for r in rows)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
