"""Events after ingest, for both databases: finding those to route, saving routings with
the noise stages' holds. (Ingest itself is each backend's own, store/*/events.py, but
for finding a known key's event.)"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from relayhook.model import DeliveryState, Event, Message, Routing
from relayhook.store import groups
from relayhook.store.rows import stored_event
from relayhook.store.sql import Db

__all__ = ["events_to_route", "save_routings", "stored_id"]

_encode = msgspec.json.Encoder().encode
_INSERT_DELIVERY = (
    "INSERT INTO deliveries (event_id, rule, destination, item_index, title, body, format,"
    " state, next_attempt_at, created_at, updated_at, last_error, severity, silence_id,"
    " item, group_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


async def stored_id(db: Db, source: str, key: str) -> int:
    """The id of the event stored under (source, key): ingest's answer to a known key."""
    return int(
        await db.value("SELECT id FROM events WHERE source = ? AND event_key = ?", (source, key))
    )


async def events_to_route(db: Db, limit: int, received_before: float | None = None) -> list[Event]:
    """The oldest events not routed yet (received before received_before, if given)."""
    rows = await db.all(
        "SELECT id, source, event_type, received_at, headers, body FROM events"
        " WHERE state = 'received' AND (CAST(? AS DOUBLE PRECISION) IS NULL"
        " OR received_at < ?) ORDER BY id LIMIT ?",
        (received_before, received_before, limit),
    )
    return [stored_event(row) for row in rows]


async def save_routings(db: Db, routings: Sequence[Routing], now: float) -> list[bool]:
    """Each routing saved; whether each event was still waiting (so this call routed it).

    Only an event still waiting is routed: routing the same one twice (from memory and a
    scan, or by two instances) makes its deliveries once. The events' states in one
    statement, the deliveries in one more, plus what the noise stages hold.
    """
    first: dict[int, Routing] = {}
    for r in routings:
        first.setdefault(r.event_id, r)  # an event given twice: its first routing counts
    marked = await db.all(
        "UPDATE events SET state = CASE WHEN id = ANY(?) THEN 'routed' ELSE 'unrouted' END"
        " WHERE id = ANY(?) AND state = 'received' RETURNING id",
        ([i for i, r in first.items() if r.messages], list(first)),
    )
    fresh = {int(row["id"]) for row in marked}
    made: list[tuple[int, Message]] = []
    saved = []
    for routing in routings:
        saved.append(routing.event_id in fresh)
        if saved[-1]:  # else routed already (by another instance, or earlier in this call)
            fresh.discard(routing.event_id)
            made += [(routing.event_id, m) for m in routing.messages]
    # Every instance takes the groups' and throttles' keys in one order before it touches
    # their rows (two batches for meters X, Y and Y, X would deadlock).
    await db.lock(sorted({name for _, m in made for name in groups.lock_names(m)}))
    rows = []
    for event_id, m in made:
        state, group_id = await groups.place(db, event_id, m, now)
        rows.append((
            event_id, m.rule, m.destination, m.item_index, m.title, m.body, m.format,
            state.value, now if state is DeliveryState.PENDING else None, now, now,
            m.error, m.severity, m.silence_id,
            None if m.item is None else _encode(m.item).decode(), group_id,
        ))  # fmt: skip
    if rows:
        await db.many(_INSERT_DELIVERY, rows)
    return saved
