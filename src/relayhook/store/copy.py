"""Copying a whole delivery log between SQLite and PostgreSQL (`relayhook db copy`).

Rows are copied as they are, ids included, table by table in an order that keeps every
reference whole, in batches; columns only one side has are left out. The target gets its
schema first and must be empty unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from relayhook.store.open import is_server, log_exists, open_store

__all__ = ["TABLES", "CopyError", "copy_log"]

# Referenced before referring; each with its key, for a stable order.
TABLES = (
    ("events", "id"),
    ("silences", "id"),
    ("deliveries", "id"),
    ("attempts", "id"),
    ("groups", "id"),
    ("throttles", "rule, destination, key"),
    ("destinations", "name"),
)
_BOOLEANS = {"held", "late", "circuit_open"}  # integers in SQLite, booleans in PostgreSQL
_BATCH = 1000


class CopyError(Exception):
    """Why a copy cannot be done (a target that is not empty, say)."""


class _Side:
    """One database through DB-API: its tables' columns, reading and writing rows."""

    def __init__(self, database: str) -> None:
        self.server = is_server(database)
        if self.server:
            import psycopg

            self.conn: Any = psycopg.connect(database)
        else:
            self.conn = sqlite3.connect(database)
        self.mark = "%s" if self.server else "?"

    def columns(self, table: str) -> list[str]:
        if self.server:
            cur = self.conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                " AND table_schema = current_schema() ORDER BY ordinal_position",
                (table,),
            )
            return [row[0] for row in cur.fetchall()]
        return [row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")]

    def count(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608

    def rows(self, table: str, columns: list[str], order: str) -> Iterator[list[tuple[Any, ...]]]:
        cur = self.conn.cursor()
        cur.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")  # noqa: S608
        while batch := cur.fetchmany(_BATCH):
            yield batch

    def write(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        if self.server:
            flags = [c in _BOOLEANS for c in columns]
            rows = [
                tuple(
                    bool(v) if flag and v is not None else v
                    for v, flag in zip(row, flags, strict=True)
                )
                for row in rows
            ]
        marks = ", ".join([self.mark] * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
        self.conn.cursor().executemany(sql, rows)

    def finish(self) -> None:
        """Commit; on PostgreSQL, move each id sequence past the ids copied in."""
        if self.server:
            for table, key in TABLES:
                if key == "id":
                    self.conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608
                        f" COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                    )
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


def _typed(value: Any, boolean: bool) -> Any:
    return bool(value) if boolean and value is not None else value


def _prepare(database: str) -> None:
    """The target's schema, made or brought up to date by opening its store."""

    async def touch() -> None:
        store = open_store(database)
        try:
            await store.ping()
        finally:
            await store.close()

    asyncio.run(touch())


def copy_log(
    source: str,
    target: str,
    force: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Copy every table of source's log into target's: rows copied per table."""
    if source == target:
        raise CopyError("the source and the target are the same database")
    if not log_exists(source):
        raise CopyError(f"{source}: no such database file")
    _prepare(source)
    _prepare(target)
    copied: dict[str, int] = {}
    with contextlib.closing(_Side(source)) as src, contextlib.closing(_Side(target)) as dst:
        if not force:
            full = [t for t, _ in TABLES if dst.count(t)]
            if full:
                raise CopyError(
                    f"the target is not empty ({', '.join(full)} have rows); pass --force to"
                    " copy into it anyway"
                )
        for table, order in TABLES:
            theirs = set(dst.columns(table))
            columns = [c for c in src.columns(table) if c in theirs]
            n = 0
            for batch in src.rows(table, columns, order):
                dst.write(table, columns, batch)
                n += len(batch)
            copied[table] = n
            if progress is not None:
                progress(table, n)
        dst.finish()
    return copied
