"""One text per SQL statement, for SQLite and PostgreSQL alike.

Statements are written once, in the spelling both databases read but for a few words,
and converted for the backend where only those differ (as synapse's storage engines do
with `convert_param_style`):
- placeholders are `?` (PostgreSQL: `%s`, and a literal `%` doubled);
- `GREATEST(a, b)` and `LEAST(a, b)` (SQLite: its two-argument `MAX` and `MIN`);
- `FOR UPDATE` locks a row read to change it (SQLite: one writer, nothing to lock);
- `= ANY(?)` with a list argument (SQLite: `IN (SELECT value FROM json_each(?))`).
Code over these statements is written once too, against `Db`: async, so PostgreSQL's
connections serve it as they are and SQLite's synchronous one through a coroutine that
never suspends (store/sqlite/db.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any, Protocol

__all__ = ["Db", "Row", "to_postgres", "to_sqlite"]

Row = Mapping[str, Any]  # read by column name in both backends


class Db(Protocol):
    """A connection in a transaction (or, for reads, one statement at a time)."""

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement: the rows it changed."""

    async def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or None."""

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""

    async def value(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first column of the first row (None when there is none)."""

    async def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row of arguments."""

    async def lock(self, names: Sequence[str]) -> None:
        """Hold these names, in this order, until the transaction ends, so instances that
        change the same rows take them in one order (one writer: nothing to do)."""


_GREATEST = re.compile(r"\bGREATEST\(")
_LEAST = re.compile(r"\bLEAST\(")
_FOR_UPDATE = re.compile(r"\s+FOR UPDATE\b")
_ANY = re.compile(r"= ANY\(\?\)")


@cache
def to_sqlite(sql: str) -> str:
    sql = _GREATEST.sub("MAX(", sql)
    sql = _LEAST.sub("MIN(", sql)
    sql = _FOR_UPDATE.sub("", sql)
    return _ANY.sub("IN (SELECT value FROM json_each(?))", sql)


@cache
def to_postgres(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")
