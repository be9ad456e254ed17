"""PostgreSQL behind the Store interface: psycopg 3, async, a connection pool; each call
one transaction. Migrations run on first use, under an advisory lock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence, Set
from functools import partial
from typing import Any, TypeVar

import msgspec
from psycopg import AsyncConnection

from relayhook.model import Attempt, Delivery, NewEvent, Routing
from relayhook.ops.redact import redact_url
from relayhook.store import events
from relayhook.store.common import SqlStore, Work
from relayhook.store.postgres import deliveries, destinations
from relayhook.store.postgres.connections import Connections
from relayhook.store.postgres.db import PostgresDb
from relayhook.store.postgres.events import add_events
from relayhook.store.postgres.schema import take_lock
from relayhook.store.sql import Db

__all__ = ["PostgresStore"]

T = TypeVar("T")
Conn = AsyncConnection[Any]
_Arrival = tuple[NewEvent, "asyncio.Future[tuple[int, bool]]"]
_BATCH = 512  # events in one commit at most
_ANNOUNCE_EVERY = 0.1  # seconds between two announcements of one topic
_CHANNEL = "relayhook"
_encode = msgspec.json.Encoder().encode


class PostgresStore(SqlStore):
    """The delivery log in a PostgreSQL database, reached by a `postgresql://` DSN."""

    def __init__(
        self, dsn: str, *, lease: float = 60.0, owner: str | None = None,
        max_connections: int = 10,
    ) -> None:  # fmt: skip
        self.dsn = dsn
        self.lease: float | None = lease
        # Who this instance is, in the leases it takes: unique per process start.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.hold_idle = 60.0  # seconds an exclusive job's holder may go without a statement
        self._announced: dict[str, float] = {}  # topic: when last announced (monotonic)
        self._db = Connections(dsn, max_connections)
        self._arrived: list[_Arrival] = []
        self._committing: asyncio.Future[None] | None = None

    @property
    def where(self) -> str:
        return redact_url(self.dsn)

    async def _tx(self, work: Work[T]) -> T:
        """Statements written once (store/sql.py) in one transaction."""
        return await self._db.run(lambda conn: work(PostgresDb(conn)))

    async def _read(self, work: Work[T]) -> T:
        """Statements written once, each standing alone (no BEGIN and COMMIT)."""
        return await self._db.read(lambda conn: work(PostgresDb(conn)))

    async def _decide(self, db: Db, attempts: Sequence[Attempt]) -> set[int]:
        return await deliveries.decide(db, attempts, self.owner)

    async def claim_due(
        self, wants: Mapping[str, int], busy: Set[int], now: float
    ) -> tuple[list[Delivery], float | None]:
        assert self.lease is not None
        claim = partial(
            deliveries.claim_due, wants=wants, busy=busy, now=now, owner=self.owner,
            lease=self.lease,
        )  # fmt: skip
        return await self._read(claim)

    # Each one statement, whole on its own: no BEGIN and COMMIT around it.
    async def release(self, ids: Sequence[int]) -> None:
        await self._read(partial(deliveries.release, ids=list(ids), owner=self.owner))

    async def renew_leases(self, ids: Sequence[int], until: float) -> int:
        return await self._read(
            partial(deliveries.renew_leases, ids=list(ids), owner=self.owner, until=until)
        )

    def exclusive(self, job: str) -> contextlib.AbstractAsyncContextManager[bool]:
        return self._db.exclusive(job, self.hold_idle)

    async def add_event(self, event: NewEvent) -> tuple[int, bool]:
        """Stored when this returns. Requests that arrive while a commit is under way wait
        for the next one and share it (group commit): one fsync for many events."""
        waiting: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        self._arrived.append((event, waiting))
        if self._committing is None or self._committing.done():
            self._committing = asyncio.ensure_future(self._commit_arrived())
        return await waiting

    async def _commit_arrived(self) -> None:
        while self._arrived:
            batch, self._arrived = self._arrived[:_BATCH], self._arrived[_BATCH:]

            async def store(conn: Conn, batch: list[_Arrival] = batch) -> list[tuple[int, bool]]:
                rows = [(e, _encode(dict(e.headers)).decode()) for e, _ in batch]
                # Not announced: the instance that stored them routes them (others adopt
                # them only if it does not, see RouteStage).
                return await add_events(conn, rows)

            try:
                results = await self._db.run(store)
            except Exception as e:  # noqa: BLE001 - each waiting request gets the error
                for _, waiting in batch:
                    if not waiting.done():
                        waiting.set_exception(e)
                continue
            for (_, waiting), result in zip(batch, results, strict=True):
                if not waiting.done():
                    waiting.set_result(result)

    async def save_routings(self, routings: Sequence[Routing], now: float) -> list[bool]:
        async def save(db: Db) -> list[bool]:
            saved = await events.save_routings(db, routings, now)
            if any(r.messages for r in routings):
                await self._announce(db, "deliveries")
            if any(m.may_wait for r in routings for m in r.messages):
                await self._announce(db, "groups")
            return saved

        return await self._tx(save)

    async def _announce(self, db: Db, topic: str) -> None:
        """Tell the other instances (on commit) that there is new work of this kind; at
        most every _ANNOUNCE_EVERY per topic (under load they have work of their own, and
        each announcement costs both sides a round trip)."""
        now = time.monotonic()
        if now - self._announced.get(topic, -_ANNOUNCE_EVERY) < _ANNOUNCE_EVERY:
            return
        self._announced[topic] = now
        await db.execute("SELECT pg_notify(?, ?)", (_CHANNEL, f"{topic} {self.owner}"))

    async def listen(self, heard: Callable[[str], None]) -> None:
        """Call heard(topic) for the work other instances announce ("deliveries",
        "groups": messages that may have filled a group), from
        a connection of its own (a pooler in transaction mode would drop LISTEN: the
        stages poll every second anyway)."""
        conn = await AsyncConnection.connect(self.dsn, autocommit=True)
        try:
            await conn.execute(f"LISTEN {_CHANNEL}")
            async for note in conn.notifies():
                topic, _, owner = note.payload.partition(" ")
                if owner != self.owner:
                    heard(topic)
        finally:
            await conn.close()

    async def take_probe(self, destination: str, now: float, every: float) -> float | None:
        return await self._read(
            partial(destinations.take_probe, destination=destination, now=now, every=every)
        )

    async def _prune_batch(self, db: Db, cutoff: float) -> tuple[int, int, int] | None:
        # One instance prunes at a time: the others find the lock taken and stop.
        if not await take_lock(db, "prune"):
            return None
        return await super()._prune_batch(db, cutoff)

    async def close(self) -> None:
        await self._db.close()
