"""What the SQL backends share behind the Store interface: each call written once over
Db (store/sql.py), run in a write transaction (`_tx`) or as a read (`_read`). The
backends keep only what differs: construction, ingest, claims and leases, applying
attempts' decisions (`_decide`), job locks, listening, and closing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

from relayhook.model import Attempt, CircuitState, Event, Routing
from relayhook.policy.silence import Matcher, Silence, SilenceFacts
from relayhook.store import deliveries, destinations, events, groups, reads, retention, silences
from relayhook.store.base import (
    DeliveryFilter,
    Digest,
    DueGroup,
    EventFilter,
    Made,
    PruneResult,
    QueueStats,
    StoredEvent,
)
from relayhook.store.sql import Db

__all__ = ["SqlStore", "Work"]

T = TypeVar("T")
Work = Callable[[Db], Coroutine[Any, Any, T]]


class SqlStore:
    """The Store calls written once; a backend subclasses it with its two primitives."""

    async def _tx(self, work: Work[T]) -> T:
        """work in one write transaction: all its writes or none."""
        raise NotImplementedError

    async def _read(self, work: Work[T]) -> T:
        """work that only reads (SQLite runs it on a read-only connection beside the writer;
        PostgreSQL also runs a write that is whole in one statement this way)."""
        raise NotImplementedError

    async def _decide(self, db: Db, attempts: Sequence[Attempt]) -> set[int]:
        """Attempts' decisions applied to their deliveries: the ids applied."""
        raise NotImplementedError

    async def _prune_batch(self, db: Db, cutoff: float) -> tuple[int, int, int] | None:
        """One batch of retention: (events, deliveries, attempts) deleted, None when done."""
        return await retention.prune_batch(db, cutoff)

    async def ping(self) -> None:
        await self._tx(partial(_value, sql="SELECT 1"))  # the writer answers, not a reader

    async def events_to_route(
        self, limit: int, received_before: float | None = None
    ) -> list[Event]:
        return await self._read(
            partial(events.events_to_route, limit=limit, received_before=received_before)
        )

    async def save_routings(self, routings: Sequence[Routing], now: float) -> list[bool]:
        return await self._tx(partial(events.save_routings, routings=routings, now=now))

    async def due_groups(self, now: float, limit: int) -> list[DueGroup]:
        return await self._read(partial(groups.due_groups, now=now, limit=limit))

    async def next_group_due(self) -> float | None:
        return await self._read(groups.next_group_due)

    async def group_members(self, group_id: int, limit: int) -> list[dict[str, Any]]:
        return await self._read(partial(groups.group_members, group_id=group_id, limit=limit))

    async def close_group(self, group: DueGroup, digest: Digest | None, now: float) -> int | None:
        return await self._tx(partial(groups.close_group, group=group, digest=digest, now=now))

    async def hold_group(self, group: DueGroup, until: float, now: float) -> int | None:
        return await self._tx(partial(groups.hold_group, group=group, until=until, now=now))

    async def waiting_groups(self) -> list[dict[str, Any]]:
        return await self._read(groups.waiting_groups)

    async def send_group_now(self, group_id: int, now: float) -> bool:
        return await self._tx(partial(groups.send_group_now, group_id=group_id, now=now))

    async def add_silence(
        self, matchers: Sequence[Matcher], starts_at: float, ends_at: float, comment: str,
        author: str, now: float,
    ) -> int:  # fmt: skip
        return await self._tx(
            partial(silences.add_silence, matchers=tuple(matchers), starts_at=starts_at,
                    ends_at=ends_at, comment=comment, author=author, now=now)
        )  # fmt: skip

    async def active_silences(self, now: float) -> list[Silence]:
        return await self._read(partial(silences.active_silences, now=now))

    async def list_silences(self, now: float, include_ended: bool = False) -> list[dict[str, Any]]:
        return await self._read(
            partial(silences.list_silences, now=now, include_ended=include_ended)
        )

    async def expire_silence(self, silence_id: int, now: float) -> bool:
        return await self._tx(partial(silences.expire_silence, silence_id=silence_id, now=now))

    async def silence_facts(self, ids: Iterable[int]) -> dict[int, SilenceFacts]:
        return await self._read(partial(silences.silence_facts, ids=list(ids)))

    async def mute(self, muted: Sequence[tuple[int, int]], now: float) -> list[int]:
        return await self._tx(partial(silences.mute, muted=list(muted), now=now))

    async def circuits(self) -> list[CircuitState]:
        return await self._read(destinations.circuits)

    async def save_circuit(self, state: CircuitState) -> None:
        await self._tx(partial(destinations.save_circuit, state=state))

    async def destination_status(self) -> dict[str, dict[str, Any]]:
        return await self._read(destinations.destination_status)

    async def recover(self, now: float) -> int:
        return await self._tx(partial(deliveries.recover, now=now))

    async def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        await self._tx(partial(deliveries.record_attempts, attempts=attempts, decide=self._decide))

    async def waiting_by_destination(self) -> dict[str, int]:
        return await self._read(deliveries.waiting_by_destination)

    async def requeue_due(self, destination: str, now: float) -> int:
        return await self._tx(partial(deliveries.requeue_due, destination=destination, now=now))

    async def orphans(self, configured: Sequence[str], before: float, now: float) -> dict[str, int]:
        return await self._tx(
            partial(deliveries.orphans, configured=list(configured), before=before, now=now)
        )

    async def replay(self, ids: Iterable[int], now: float) -> list[tuple[int, int]]:
        return await self._tx(partial(deliveries.replay, ids=list(ids), now=now))

    async def replay_dead(self, since: float, now: float) -> list[tuple[int, int]]:
        return await self._tx(partial(deliveries.replay_dead, since=since, now=now))

    async def list_events(
        self, *, state: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self._read(partial(reads.list_events, state=state, since=since, limit=limit))

    async def get_event(self, event_id: int) -> dict[str, Any] | None:
        return await self._read(partial(reads.get_event, event_id=event_id))

    async def page_events(
        self, f: EventFilter, before: int | None, limit: int
    ) -> list[dict[str, Any]]:
        return await self._read(partial(reads.page_events, f=f, before=before, limit=limit))

    async def list_deliveries(
        self, *, state: str | None = None, rule: str | None = None,
        destination: str | None = None, since: float | None = None, limit: int = 100,
    ) -> list[dict[str, Any]]:  # fmt: skip
        return await self._read(
            partial(reads.list_deliveries, state=state, rule=rule, destination=destination,
                    since=since, limit=limit)
        )  # fmt: skip

    async def page_deliveries(
        self, f: DeliveryFilter, before: int | None, limit: int
    ) -> list[dict[str, Any]]:
        return await self._read(partial(reads.page_deliveries, f=f, before=before, limit=limit))

    async def matching_deliveries(self, f: DeliveryFilter) -> list[int]:
        return await self._read(partial(reads.matching_deliveries, f=f))

    async def get_delivery(self, delivery_id: int) -> dict[str, Any] | None:
        return await self._read(partial(reads.get_delivery, delivery_id=delivery_id))

    async def queue_stats(self, now: float) -> QueueStats:
        return await self._read(partial(reads.queue_stats, now=now))

    async def events_since(self, since: float, batch: int) -> AsyncIterator[list[StoredEvent]]:
        """Pages of up to batch events by id, from the first received at or after since."""
        first = await self._read(partial(reads.first_event_since, since=since))
        if first is None:
            return
        after = first - 1
        while True:
            page = partial(reads.events_page, since=since, after=after, limit=batch)
            found = await self._read(page)
            if found:
                yield found
            if len(found) < batch:
                return
            after = found[-1].event.id

    async def events_by_id(self, ids: Sequence[int]) -> list[StoredEvent]:
        return await self._read(partial(reads.events_by_id, ids=sorted(set(ids))))

    async def made_for(self, event_ids: Sequence[int]) -> list[Made]:
        return await self._read(partial(reads.made_for, event_ids=list(event_ids)))

    async def prune(self, cutoff: float) -> PruneResult:
        """In batches of small transactions, so ingest waits for none of them for long."""
        total = PruneResult()
        while (done := await self._tx(partial(self._prune_batch, cutoff=cutoff))) is not None:
            events, deliveries, attempts = done
            total = PruneResult(
                total.events + events, total.deliveries + deliveries, total.attempts + attempts
            )
        return total


async def _value(db: Db, sql: str) -> Any:
    return await db.value(sql)
