"""SQLite serving the statements written once (store/sql.py): a Db over the writer's
synchronous connection, and the driver that runs such code to its end without a loop."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from relayhook.store.sql import Row, to_sqlite

__all__ = ["SqliteDb", "run_sync"]

T = TypeVar("T")


def _args(args: Sequence[Any]) -> Sequence[Any]:
    # A list stands for `= ANY(?)`, which SQLite reads as json_each of its JSON text.
    if any(isinstance(a, list | tuple) for a in args):
        return [json.dumps(a) if isinstance(a, list | tuple) else a for a in args]
    return args


class SqliteDb:
    """Db over a sqlite3 connection whose rows are sqlite3.Row; no call ever suspends."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self.conn.execute(to_sqlite(sql), _args(args)).rowcount

    async def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.conn.execute(to_sqlite(sql), _args(args)).fetchone()
        return row

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return list(self.conn.execute(to_sqlite(sql), _args(args)).fetchall())

    async def value(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self.conn.execute(to_sqlite(sql), _args(args)).fetchone()
        return None if row is None else row[0]

    async def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(to_sqlite(sql), (_args(r) for r in rows))

    async def lock(self, names: Sequence[str]) -> None:
        return None  # one writer: nobody to wait for


def run_sync(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine over a SqliteDb to its end, on this thread (the writer's)."""
    try:
        work.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    work.close()
    raise RuntimeError("store code awaited something other than its SQLite connection")
