"""SQLite behind the Store interface: one file, one writer thread, WAL.

Writes are jobs for the writer thread (writer.py), which commits them in groups; reads
run beside it on reader connections of their own (readers.py), each seeing every commit
made before it began. The calls written once for both databases are
store/common.py's; what is SQLite's own lives beside this file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence, Set
from functools import partial
from typing import TypeVar

import msgspec

from relayhook.model import Attempt, Delivery, NewEvent
from relayhook.store.base import PruneResult
from relayhook.store.common import SqlStore, Work
from relayhook.store.sql import Db
from relayhook.store.sqlite import deliveries
from relayhook.store.sqlite.db import SqliteDb, run_sync
from relayhook.store.sqlite.lock import DaemonLock
from relayhook.store.sqlite.readers import Readers
from relayhook.store.sqlite.schema import connect, migrate, shrink
from relayhook.store.sqlite.writer import Writer

__all__ = ["SqliteStore"]

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode


class SqliteStore(SqlStore):
    """The delivery log in one SQLite file.

    With daemon=True it takes the file's daemon lock first (StoreBusy when another daemon
    holds it); the CLI opens the same file without it, beside a running daemon.
    """

    def __init__(self, path: str, *, daemon: bool = False) -> None:
        self.path = path
        # The lock first: a second daemon must not migrate the schema under the first.
        self._lock = DaemonLock(path) if daemon else None
        try:
            migrate(path)
            self._conn = connect(path)
            self._writer = Writer(self._conn)
            self._readers = Readers(partial(connect, path))
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    @property
    def where(self) -> str:
        return self.path

    # One daemon per file (the lock): what it has in flight is known in memory, no lease.
    lease: float | None = None

    async def _tx(self, work: Work[T]) -> T:
        """Statements written once (store/sql.py) in the writer's next transaction."""
        return await self._writer.run(lambda conn: run_sync(work(SqliteDb(conn))))

    async def _read(self, work: Work[T]) -> T:
        # WAL readers: a page refresh does not queue behind ingest's commits.
        return await self._readers.run(lambda conn: run_sync(work(SqliteDb(conn))))

    async def _decide(self, db: Db, attempts: Sequence[Attempt]) -> set[int]:
        return await deliveries.decide(db, attempts)

    async def claim_due(
        self, wants: Mapping[str, int], busy: Set[int], now: float
    ) -> tuple[list[Delivery], float | None]:
        # On the writer: a claim follows every attempt recorded before it, in commit order.
        return await self._tx(partial(deliveries.claim_due, wants=wants, busy=busy, now=now))

    async def renew_leases(self, ids: Sequence[int], until: float) -> int:
        return len(list(ids))

    async def release(self, ids: Sequence[int]) -> None:
        pass  # a claim holds nothing here

    async def listen(self, heard: Callable[[str], None]) -> None:
        await asyncio.Event().wait()  # one daemon: nobody else stores work

    @contextlib.asynccontextmanager
    async def exclusive(self, job: str) -> AsyncIterator[bool]:
        yield True  # one daemon per file runs every job

    async def add_event(self, event: NewEvent) -> tuple[int, bool]:
        return await self._writer.add_event(event, _encode(event.headers).decode())

    async def take_probe(self, destination: str, now: float, every: float) -> float | None:
        return every  # one daemon per file: its probes and their interval are its own

    async def prune(self, cutoff: float) -> PruneResult:
        total = await super().prune(cutoff)
        if total.events:
            await self._writer.run(shrink, transaction=False)  # the freed pages go back
        return total

    async def close(self) -> None:
        self._readers.close()
        self._writer.close()
        self._conn.close()
        if self._lock is not None:
            self._lock.release()
