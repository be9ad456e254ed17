"""The delivery log in SQLite: schema, the single writer, and the queries the CLI shares.

One thread owns the daemon's write connection. Async callers hand it a function and
await the result; it runs whatever has queued in one transaction and commits once
(group commit), and resolves the callers' futures only after that COMMIT is on disk
(WAL, synchronous=FULL). So a 202 always means "on disk".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import sqlite_utils
from sqlite_utils.migrations import Migrations

__all__ = ["Store", "connect", "migrate"]

T = TypeVar("T")
_BATCH = 512

migrations = Migrations("relayhook")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    for statement in (
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            event_key TEXT NOT NULL,
            event_type TEXT NOT NULL,
            received_at REAL NOT NULL,
            headers TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'received',
            UNIQUE (source, event_key)
        )""",
        "CREATE INDEX events_to_route ON events (id) WHERE state = 'received'",
        "CREATE INDEX events_received_at ON events (received_at)",
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            event_id INTEGER NOT NULL REFERENCES events (id),
            rule TEXT NOT NULL,
            destination TEXT NOT NULL,
            item_index INTEGER,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            format TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_error TEXT,
            replay_of INTEGER REFERENCES deliveries (id)
        )""",
        # The scheduler's query: due work per destination.
        """CREATE INDEX deliveries_due ON deliveries (destination, next_attempt_at)
           WHERE state IN ('pending', 'retrying')""",
        "CREATE INDEX deliveries_state ON deliveries (state, updated_at)",
        "CREATE INDEX deliveries_event ON deliveries (event_id)",
        "CREATE INDEX deliveries_rule ON deliveries (rule, created_at)",
        "CREATE INDEX deliveries_destination ON deliveries (destination, created_at)",
        "CREATE INDEX deliveries_created ON deliveries (created_at)",
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
            number INTEGER NOT NULL,
            started_at REAL NOT NULL,
            duration_ms REAL NOT NULL,
            outcome TEXT NOT NULL,
            error TEXT
        )""",
        "CREATE INDEX attempts_delivery ON attempts (delivery_id, number)",
    ):
        db.execute(statement)


@migrations()
def m002_unfinished_index(db: sqlite_utils.Database) -> None:
    # For the age of the oldest unfinished delivery, read at every /metrics scrape.
    db.execute(
        "CREATE INDEX deliveries_unfinished ON deliveries (created_at)"
        " WHERE state IN ('pending', 'retrying', 'sending')"
    )


@migrations(transactional=False)
def m003_incremental_vacuum(db: sqlite_utils.Database) -> None:
    # So that pruning can hand pages back to the file system (new files get it at creation).
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (we BEGIN ourselves), WAL, durable commits."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def migrate(path: str) -> None:
    """Create the database and apply pending schema migrations, each in a transaction."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes on a new, empty file
        conn.execute("PRAGMA journal_mode=WAL")
        migrations.apply(sqlite_utils.Database(conn))


def shrink(conn: sqlite3.Connection) -> None:
    """Return free pages to the file system; outside any transaction."""
    # sqlite3's execute() steps this pragma once, freeing one page; executescript() runs
    # it to the end.
    conn.executescript("PRAGMA incremental_vacuum;")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, for the CLI's writes beside a running daemon."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# A job: (function or event row, the caller's future, its loop, kind).
_TX, _ALONE, _EVENT = 0, 1, 2
_Job = tuple[Any, asyncio.Future[Any], asyncio.AbstractEventLoop, int]
_INSERT_EVENTS = (
    "INSERT INTO events (id, source, event_key, event_type, received_at, headers, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, event_key) DO NOTHING"
)


class Store:
    """The daemon's database: one writer thread doing group commits."""

    def __init__(self, path: str) -> None:
        migrate(path)
        self.path = path
        self._conn = connect(path)
        # Event ids are handed out here, so a batch of events is one executemany; this
        # process is the only one that inserts events.
        self._next_event_id = (
            int(self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]) + 1
        )
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="relayhook-writer", daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, transaction: bool = True) -> T:
        """Run fn(conn) inside the next group transaction; return once it is committed.

        With transaction=False fn runs alone, outside any transaction (for VACUUM and
        checkpoints).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, future, loop, _TX if transaction else _ALONE))
        return await future

    async def add_event(
        self, source: str, key: str, event_type: str, received_at: float, headers: str, body: str
    ) -> tuple[int, bool]:
        """Store an accepted event: (its id, True when (source, key) was known already).

        The hot path: events queued together are inserted with one executemany.
        """
        event_id = self._next_event_id
        self._next_event_id += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, bool]] = loop.create_future()
        row = (event_id, source, key, event_type, received_at, headers, body)
        self._queue.put((row, future, loop, _EVENT))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        stopping = False
        held: _Job | None = None
        while not stopping:
            job = held if held is not None else self._queue.get()
            held = None
            if job is None:
                break
            if job[3] == _ALONE:
                self._alone(job)
                continue
            batch = [job]
            while len(batch) < _BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                if more[3] == _ALONE:
                    held = more  # runs after this batch commits
                    break
                batch.append(more)
            self._commit(batch)
        if held is not None:
            self._alone(held)

    def _alone(self, job: _Job) -> None:
        fn, future, loop, _ = job
        try:
            result, error = fn(self._conn), None
        except Exception as e:  # noqa: BLE001 - handed to the awaiting caller
            result, error = None, e
        loop.call_soon_threadsafe(_settle, future, result, error)

    def _commit(self, batch: list[_Job]) -> None:
        conn = self._conn
        outcomes: list[tuple[Any, BaseException | None]] = []
        events = [job for job in batch if job[3] == _EVENT]
        batch = [*events, *(job for job in batch if job[3] != _EVENT)]
        try:
            conn.execute("BEGIN IMMEDIATE")
            if events:
                # The events together, then a savepoint per job: what fails does not undo
                # its neighbours.
                rows = [job[0] for job in events]
                outcomes.extend(_in_savepoint(conn, partial(_insert_events, rows=rows), len(rows)))
            for fn, _, _, _ in batch[len(events) :]:
                outcomes.extend(_in_savepoint(conn, partial(_one_job, fn), 1))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            outcomes = [(None, e)] * len(batch)
        # One wake-up of each waiting loop per commit, not one per job.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
        for (_, future, loop, _), (result, error) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, result, error))
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, settled)


def _in_savepoint(
    conn: sqlite3.Connection,
    work: Callable[[sqlite3.Connection], list[tuple[Any, BaseException | None]]],
    jobs: int,
) -> list[tuple[Any, BaseException | None]]:
    conn.execute("SAVEPOINT job")
    try:
        outcomes = work(conn)
    except Exception as e:  # noqa: BLE001 - handed to the awaiting callers
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        return [(None, e)] * jobs
    conn.execute("RELEASE job")
    return outcomes


def _one_job(
    fn: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection
) -> list[tuple[Any, BaseException | None]]:
    return [(fn(conn), None)]


def _insert_events(
    conn: sqlite3.Connection, rows: list[tuple[Any, ...]]
) -> list[tuple[Any, BaseException | None]]:
    cur = conn.executemany(_INSERT_EVENTS, rows)
    if cur.rowcount == len(rows):
        return [((row[0], False), None) for row in rows]
    # Some keys were known: find which rows stand in their place.
    found: list[tuple[Any, BaseException | None]] = []
    for row in rows:
        stored = conn.execute(
            "SELECT id FROM events WHERE source = ? AND event_key = ?", (row[1], row[2])
        ).fetchone()[0]
        found.append(((stored, stored != row[0]), None))
    return found


def _settle_all(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        _settle(future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
