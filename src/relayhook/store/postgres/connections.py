"""The connections of one PostgresStore: a pool per event loop, transactions, job locks,
and psycopg's errors as StoreError with the DSN's secrets masked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from relayhook.ops.redact import Redactor, url_secrets
from relayhook.store.base import StoreError
from relayhook.store.postgres.db import PostgresDb
from relayhook.store.postgres.schema import migrate, take_lock

__all__ = ["Connections"]

T = TypeVar("T")
Conn = AsyncConnection[Any]


class Connections:
    """Calls run on a pooled connection, in a transaction or not; the schema is migrated
    on first use."""

    def __init__(self, dsn: str, max_connections: int = 10) -> None:
        self.dsn = dsn
        self._max = max_connections
        self._redact = Redactor(url_secrets(dsn))
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening = asyncio.Lock()
        self._migrated = False

    async def _connections(self) -> AsyncConnectionPool[Conn]:
        """The pool of this event loop (one that ran in another, like the CLI's asyncio.run
        calls, cannot serve here: it is left, not closed)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # No await since the check: calls at once in this loop share one pool.
            self._loop, self._pool, self._opening = loop, None, asyncio.Lock()
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is not None:
                return self._pool
            if not self._migrated:
                # One connection first, on its own: a server that is not there or a database
                # that does not exist fails here at once, with the server's own words,
                # where the pool would retry for its whole timeout and then say "timeout".
                conn = await AsyncConnection.connect(
                    self.dsn, autocommit=True, row_factory=dict_row, connect_timeout=10
                )
                async with conn:
                    await migrate(conn)
                self._migrated = True
            pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
                self.dsn,
                min_size=1,
                max_size=self._max,
                kwargs={"row_factory": dict_row, "autocommit": True},
                open=False,
                timeout=10.0,  # a call waits this long for a connection, then fails
            )
            await pool.open()
            self._pool = pool
            return pool

    def error(self, e: Exception) -> StoreError:
        """The server's message on one line, with the DSN's secrets masked."""
        text = " ".join(str(e).split())
        return StoreError(self._redact(f"{type(e).__name__}: {text}"))

    async def run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """fn in one transaction: all its writes or none."""
        try:
            pool = await self._connections()
            async with pool.connection() as conn, conn.transaction():
                return await fn(conn)
        except (psycopg.Error, PoolTimeout) as e:
            raise self.error(e) from e

    async def read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """fn without BEGIN and COMMIT (two round trips saved): each statement stands alone,
        for reads, and for writes that are each whole in one statement (a claim)."""
        try:
            pool = await self._connections()
            async with pool.connection() as conn:
                return await fn(conn)
        except (psycopg.Error, PoolTimeout) as e:
            raise self.error(e) from e

    @contextlib.asynccontextmanager
    async def exclusive(self, job: str, hold_idle: float) -> AsyncIterator[bool]:
        """Whether this instance holds job's lock, for the block (Store.exclusive)."""
        # A transaction-scoped advisory lock, so that however the block ends (an error, a
        # cancel, a killed instance's dropped connection) the lock goes with it.
        try:
            pool = await self._connections()
            async with pool.connection() as conn, conn.transaction():
                # A holder that stops (paused, cut off from the network) must not keep the
                # job from the others for as long as TCP takes to notice: the server ends
                # its session after this long without a statement, and the lock with it.
                await conn.execute(
                    "SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
                    (f"{int(hold_idle * 1000)}",),
                )
                yield await take_lock(PostgresDb(conn), job)
        except (psycopg.Error, PoolTimeout) as e:
            raise self.error(e) from e

    async def close(self) -> None:
        """Close this loop's pool (one opened in another loop is left: it cannot be)."""
        if self._pool is not None and self._loop is asyncio.get_running_loop():
            await self._pool.close()
        self._pool = None
