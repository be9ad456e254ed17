"""The single writer: one thread owns the write connection and commits in groups.

One thread owns the store's write connection. Async callers hand it a function and
await the result; it runs whatever has queued in one transaction and commits once
(group commit), and resolves the callers' futures only after that COMMIT is on disk
(WAL, synchronous=FULL). So a 202 always means "on disk".
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from relayhook.model import NewEvent
from relayhook.store.base import StoreError
from relayhook.store.sqlite.events import insert_events

__all__ = ["Writer"]

T = TypeVar("T")
_BATCH = 512

# A job: (function or event row, the caller's future, its loop, kind).
_TX, _ALONE, _EVENT = 0, 1, 2
_Job = tuple[Any, asyncio.Future[Any], asyncio.AbstractEventLoop, int]


class Writer:
    """One writer thread doing group commits on its own connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # Event ids are handed out here, so a batch of events is one executemany; the
        # daemon's lock on the file makes this process the only one inserting events.
        self._next_event_id = (
            int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]) + 1
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

    async def add_event(self, event: NewEvent, headers: str) -> tuple[int, bool]:
        """Store an accepted event: (its id, True when (source, key) was known already).

        The hot path: events queued together are inserted with one executemany.
        """
        event_id = self._next_event_id
        self._next_event_id += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, bool]] = loop.create_future()
        row = (
            event_id,
            event.source,
            event.key,
            event.event_type,
            event.received_at,
            headers,
            event.text,
        )
        self._queue.put((row, future, loop, _EVENT))
        return await future

    def close(self) -> None:
        """Finish what is queued, then stop the thread (the connection stays open)."""
        self._queue.put(None)
        self._thread.join()

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
    return [(found, None) for found in insert_events(conn, rows)]


def _settle_all(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        _settle(future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if isinstance(error, sqlite3.Error):
        # Callers above the store know StoreError, not SQLite's own errors.
        wrapped = StoreError(str(error))
        wrapped.__cause__ = error
        error = wrapped
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
