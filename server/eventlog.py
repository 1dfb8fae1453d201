"""The event log: every event in a SQLite file, kept for ``--event-log-days`` and at most
``--event-log-max-rows``, read back by ``GET /v1/events`` (server/events_api.py). docs/event-log.md says
what is in the file and what happens when the disk fills or the process is killed.

``publish`` runs on the event loop and only appends to a bounded queue; one writer thread owns the
writing connection and commits small batches, so a slow or full disk never holds back inference and a
killed process loses at most the batch being written (WAL: a commit survives a crash of the process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from .metrics import Metrics

log = logging.getLogger("sensorium.eventlog")

FILE_NAME = "events.sqlite3"
QUEUE_SIZE = 10_000  # events waiting for the writer; past it the oldest is dropped (overflow)
BATCH_SIZE = 500  # most events per transaction: commits stay small, so a crash loses little
TRIM_EVERY_WRITES = 1000
TRIM_EVERY_S = 60.0
TRIM_CHUNK = 10_000  # rows deleted per transaction: a large backlog of old rows never stalls writing long
RETRY_S = 30.0  # after a failed write, events are dropped (counted) until this long has passed
MAX_LIMIT = 1000
SECONDS_PER_DAY = 86_400

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,   -- insertion order
    time REAL NOT NULL,       -- the server's wall clock when the event was decided (seconds since the epoch)
    modality TEXT,
    stream TEXT,
    client INTEGER,
    label TEXT,               -- NULL on a group's own event
    group_name TEXT,          -- the event's "group" ("group" is an SQL keyword)
    state TEXT,
    score REAL,
    seq INTEGER,
    ts REAL,
    duration_s REAL,          -- only on "end"
    event TEXT NOT NULL       -- the whole event as JSON, as published
);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE INDEX IF NOT EXISTS events_stream_time ON events (stream, time);
CREATE INDEX IF NOT EXISTS events_label_time ON events (label, time);
CREATE INDEX IF NOT EXISTS events_group_time ON events (group_name, time);
"""
INSERT = (
    "INSERT INTO events (time, modality, stream, client, label, group_name, state, score, seq, ts, duration_s, event)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class EventLogUnavailable(RuntimeError):
    """The log is off: its file could not be opened (the message says why), or it was closed."""


class EventLog:
    """Events into ``folder/events.sqlite3``. ``max_page_count`` caps the file at that many pages
    (``PRAGMA max_page_count``, read at every open of the writing connection): the tests fill the "disk"
    with it."""

    name = "eventlog"

    def __init__(
        self,
        folder: Path,
        days: float,
        max_rows: int,
        metrics: Metrics,
        *,
        queue_size: int = QUEUE_SIZE,
        retry_s: float = RETRY_S,
        max_page_count: int | None = None,
    ) -> None:
        self.folder = Path(folder).expanduser()
        self.path = self.folder / FILE_NAME
        self.days = days
        self.max_rows = max_rows
        self.metrics = metrics
        self.queue_size = queue_size
        self.retry_s = retry_s
        self.max_page_count = max_page_count
        self.committed = 0  # events written and committed since start
        self.failure: str | None = None  # why writing stopped, while it is stopped
        self.off_reason: str | None = "not started"
        self._queue: deque[dict[str, Any]] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._retry_at = 0.0  # monotonic
        self._dropped_while_failing = 0
        self._writes_since_trim = 0
        self._last_trim = 0.0  # monotonic
        self._up = metrics.output_up.labels(self.name)
        self._sent = metrics.output_sent.labels(self.name)

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Open (or create) the file and start the writer. A file that cannot be opened is logged and
        leaves the log off: the server runs on without it. Blocks for the open only (milliseconds)."""
        try:
            self._db = self._open()
        except (OSError, sqlite3.Error) as exc:
            self.off_reason = f"the event log {self.path} cannot be opened: {exc}"
            log.error("%s; events are not logged", self.off_reason)
            self._up.set(0)
            return
        self.off_reason = None
        self._up.set(1)
        self._thread = threading.Thread(target=self._run, name="event-log", daemon=True)
        self._thread.start()
        log.info("event log: %s (%g days, at most %d events)", self.path, self.days, self.max_rows)

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (within ``timeout``), then stop the writer and close the file."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("event log: %d events not written within %g s of closing", len(self._queue), timeout)
                return  # the writer still holds the connection; it is a daemon thread
        if self.off_reason is None:
            self.off_reason = "the event log is closed"
        self._up.set(0)

    # --- what the hub calls (the same interface as the other outputs) -------------

    def announce(self, modality: str, stream: str, client: int, labels: list[str], groups: list[str]) -> None:
        """Nothing to do: the log stores events only."""

    def publish(self, event: dict[str, Any]) -> None:
        """Queue one event for the writer; never blocks, never raises. A full queue drops its oldest."""
        if self._thread is None or self._closing:
            self.metrics.output_dropped.labels(self.name, "unavailable").inc()
            return
        with self._ready:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.metrics.output_dropped.labels(self.name, "overflow").inc()
            self._queue.append(event)
            self._ready.notify()

    # --- reading ----------------------------------------------------------------

    def query(
        self,
        *,
        stream: str | None = None,
        label: str | None = None,
        group: str | None = None,
        modality: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` events that match, oldest first. ``since <= time < until`` (server wall
        clock); ``label`` and ``group`` match the event's own fields exactly. Blocking: a connection of its
        own per call, read-only, so readers never wait for the writer (WAL)."""
        if self.off_reason is not None:
            raise EventLogUnavailable(self.off_reason)
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("stream", stream), ("label", label), ("group_name", group), ("modality", modality)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if until is not None:
            where.append("time < ?")
            args.append(until)
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        sql = (
            f"SELECT event FROM (SELECT id, time, event FROM events {condition} ORDER BY time DESC, id DESC LIMIT ?)"
            " ORDER BY time, id"
        )
        args.append(max(1, min(limit, MAX_LIMIT)))
        reader = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return [json.loads(text) for (text,) in reader.execute(sql, args)]
        finally:
            reader.close()

    # --- the writer thread --------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Opened here, used only by the writer thread (and by start() before the thread exists).
        db = sqlite3.connect(self.path, timeout=5, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # with WAL: a commit survives a crash of the process
            if self.max_page_count is not None:
                db.execute(f"PRAGMA max_page_count={int(self.max_page_count)}")
            db.executescript(SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _run(self) -> None:
        try:
            self._trim()
            while True:
                with self._ready:
                    self._ready.wait_for(lambda: self._queue or self._closing)
                    batch = [self._queue.popleft() for _ in range(min(BATCH_SIZE, len(self._queue)))]
                    if not batch and self._closing:
                        return
                self._write(batch)
                self._trim_now_and_then(len(batch))
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _write(self, batch: list[dict[str, Any]]) -> None:
        rows = [row for event in batch if (row := self._row(event)) is not None]
        if self.failure is not None and time.monotonic() < self._retry_at:
            self._drop(len(rows))
            return
        try:
            db = self._db if self._db is not None else self._reopen()
            with _transaction(db):
                db.executemany(INSERT, rows)
        except (OSError, sqlite3.Error) as exc:
            self._failed(exc, len(rows))
            return
        self.committed += len(rows)
        self._sent.inc(len(rows))
        if self.failure is not None:
            log.warning(
                "event log %s: writing again; %d events were not logged meanwhile",
                self.path, self._dropped_while_failing,
            )  # fmt: skip
            self.failure = None
            self._up.set(1)

    def _reopen(self) -> sqlite3.Connection:
        """A fresh connection after a failure: the folder may have been removed, the file replaced."""
        self._db = self._open()
        return self._db

    def _failed(self, exc: Exception, count: int) -> None:
        reason = "disk_full" if _is_full(exc) else "error"
        if self.failure is None:
            self.failure = reason
            self._dropped_while_failing = 0
            log.error(
                "event log %s: writing stopped: %s%s; events are not logged (counted in "
                "sensorium_output_dropped) and writing is tried again every %g s",
                self.path, exc, " (free some space on its disk)" if reason == "disk_full" else "", self.retry_s,
            )  # fmt: skip
            self._up.set(0)
        self.failure = reason
        self._retry_at = time.monotonic() + self.retry_s
        if self._db is not None:
            self._db.close()  # the next try opens afresh
            self._db = None
        self._drop(count)

    def _drop(self, count: int) -> None:
        assert self.failure is not None
        self._dropped_while_failing += count
        self.metrics.output_dropped.labels(self.name, self.failure).inc(count)

    def _row(self, event: dict[str, Any]) -> tuple[Any, ...] | None:
        """The row of one event; an event that cannot be stored (not JSON, a field of the wrong type) is
        counted and logged, never raised: the writer must go on."""
        try:
            text = json.dumps(event, separators=(",", ":"), allow_nan=False)
            return (
                float(event.get("time") or time.time()),
                _text(event.get("modality")), _text(event.get("stream")), _int(event.get("client")),
                _text(event.get("label")), _text(event.get("group")), _text(event.get("state")),
                _float(event.get("score")), _int(event.get("seq")), _float(event.get("ts")),
                _float(event.get("duration_s")), text,
            )  # fmt: skip
        except (TypeError, ValueError) as exc:
            log.warning("event log: an event that cannot be stored was skipped (%s): %r", exc, event)
            self.metrics.output_dropped.labels(self.name, "malformed").inc()
            return None

    # --- retention ----------------------------------------------------------------

    def _trim_now_and_then(self, written: int) -> None:
        self._writes_since_trim += written
        if self._writes_since_trim >= TRIM_EVERY_WRITES or time.monotonic() - self._last_trim >= TRIM_EVERY_S:
            self._trim()

    def _trim(self) -> None:
        """Delete events older than ``days`` and all but the newest ``max_rows`` (by insertion), a chunk per
        transaction. Both deletions walk an index (time, and the row id), so a trim with nothing to do is
        two index probes."""
        self._writes_since_trim = 0
        self._last_trim = time.monotonic()
        db = self._db
        if db is None or self.failure is not None:
            return
        cutoff = time.time() - self.days * SECONDS_PER_DAY
        try:
            while _delete(db, "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time < ? LIMIT ?)",
                          (cutoff, TRIM_CHUNK)) == TRIM_CHUNK:  # fmt: skip
                pass
            (newest,) = db.execute("SELECT max(id) FROM events").fetchone()
            if newest is not None:
                # Row ids only grow, so the newest max_rows events all have ids above this.
                last_dropped = newest - self.max_rows
                while _delete(db, "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= ? LIMIT ?)",
                              (last_dropped, TRIM_CHUNK)) == TRIM_CHUNK:  # fmt: skip
                    pass
        except sqlite3.Error as exc:
            # Deleting needs a little space too; the next write says what is wrong if it stays wrong.
            log.warning("event log %s: old events not deleted this time: %s", self.path, exc)


class _transaction:
    """BEGIN ... COMMIT, or ROLLBACK on an error (the connection is in autocommit mode otherwise)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            # SQLite may have rolled back itself; the original error is the one to report.
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")


def _delete(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
    with _transaction(db):
        count: int = db.execute(sql, args).rowcount
    return count


def _is_full(exc: Exception) -> bool:
    # sqlite_errorname exists from Python 3.11; the message is the same on every version.
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "disk is full" in str(exc)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
