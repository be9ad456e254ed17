"""Reads beside the writer: a few threads, each with a read-only connection of its own.

In WAL mode a reader sees the last commit as of its statement and never waits for the
writer, nor the writer for it, so a page refresh or a `show` does not queue behind
ingest's group commits (as it did when every read was a job on the writer thread).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from relayhook.store.base import StoreError

__all__ = ["Readers"]

T = TypeVar("T")
_THREADS = 2


class Readers:
    """Runs read jobs on reader threads, each thread with its own connection."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="relayhook-reader")

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")  # a read job that writes is a bug: say so
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """fn(conn) on a reader thread; each statement reads the last commit."""

        def job() -> T:
            conn = self._conn()
            # One snapshot for the whole job (a read of several statements agrees with
            # itself), ended whatever happens.
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, job)
        except sqlite3.Error as e:
            raise StoreError(str(e)) from e

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()
