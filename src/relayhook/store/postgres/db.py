"""PostgreSQL serving the statements written once (store/sql.py): a Db over a psycopg
connection whose rows are dicts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import AsyncConnection

from relayhook.store.sql import Row, to_postgres

__all__ = ["PostgresDb"]


class PostgresDb:
    """Db over one of the pool's connections (dict rows)."""

    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self.conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        cur = await self.conn.execute(to_postgres(sql), args)
        return cur.rowcount

    async def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        cur = await self.conn.execute(to_postgres(sql), args)
        row: Row | None = await cur.fetchone()
        return row

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        cur = await self.conn.execute(to_postgres(sql), args)
        return list(await cur.fetchall())

    async def value(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = await self.one(sql, args)
        return None if row is None else next(iter(row.values()))

    async def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.cursor().executemany(to_postgres(sql), list(rows))

    async def lock(self, names: Sequence[str]) -> None:
        if names:
            await self.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))"
                " FROM unnest(%s::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
                (list(names),),
            )
