"""Events in PostgreSQL: storing accepted ones (dedupe by a unique key across instances),
finding those to route, saving routings with the noise stages' holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection

from relayhook.model import DeliveryState, Event, Message, NewEvent, Routing
from relayhook.store.postgres.groups import hold_quiet, join_group, throttled
from relayhook.store.rows import QUIET_KEY, stored_event

__all__ = ["add_events", "events_to_route", "save_routings"]

Conn = AsyncConnection[Any]
_encode = msgspec.json.Encoder().encode


async def add_events(conn: Conn, batch: Sequence[tuple[NewEvent, str]]) -> list[tuple[int, bool]]:
    """Many (event, headers) in one round trip (a pipeline): for each, (its id, whether
    (source, key) was stored before, by any instance or earlier in this batch)."""
    cur = conn.cursor()
    await cur.executemany(
        "INSERT INTO events (source, event_key, event_type, received_at, headers, body)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (source, event_key) DO NOTHING"
        " RETURNING id",
        [(e.source, e.key, e.event_type, e.received_at, h, e.text) for e, h in batch],
        returning=True,
    )
    ids: list[int | None] = []
    while True:
        row = await cur.fetchone()
        ids.append(None if row is None else int(row["id"]))
        if not cur.nextset():
            break
    found: list[tuple[int, bool]] = []
    for (e, _), made in zip(batch, ids, strict=True):
        if made is not None:
            found.append((made, False))
            continue
        known = await conn.execute(
            "SELECT id FROM events WHERE source = %s AND event_key = %s", (e.source, e.key)
        )
        row = await known.fetchone()
        assert row is not None
        found.append((int(row["id"]), True))
    return found


async def events_to_route(
    conn: Conn, limit: int, received_before: float | None = None
) -> list[Event]:
    cur = await conn.execute(
        "SELECT id, source, event_type, received_at, headers, body FROM events"
        " WHERE state = 'received' AND (%s::float8 IS NULL OR received_at < %s)"
        " ORDER BY id LIMIT %s",
        (received_before, received_before, limit),
    )
    return [stored_event(row) for row in await cur.fetchall()]


def _group_keys(m: Message) -> list[str]:
    """The throttle and group rows placing m may lock, named for an advisory lock."""
    if not m.may_wait:
        return []
    keys = [m.throttle.key] if m.throttle else []
    keys += [m.grouping.key] if m.grouping else []
    keys += [QUIET_KEY] if m.quiet_until is not None else []
    return [_encode(["group", m.rule, m.destination, k]).decode() for k in keys]


async def _place(
    conn: Conn, event_id: int, m: Message, now: float
) -> tuple[DeliveryState, int | None]:
    """Where a message goes: failed, silenced, held by its throttle, folded into its group,
    held by quiet hours, or due now."""
    if m.error:
        return DeliveryState.FAILED, None
    if m.silence_id is not None:
        return DeliveryState.SILENCED, None
    if m.throttle is not None:
        held = await throttled(conn, event_id, m, now)
        if held is not None:
            return DeliveryState.GROUPED, held
    if m.grouping is not None:
        return DeliveryState.GROUPED, await join_group(conn, event_id, m, now)
    if m.quiet_until is not None:
        return DeliveryState.GROUPED, await hold_quiet(conn, event_id, m, now)
    return DeliveryState.PENDING, None


_INSERT_DELIVERY = (
    "INSERT INTO deliveries (event_id, rule, destination, item_index, title, body, format,"
    " state, next_attempt_at, created_at, updated_at, last_error, severity, silence_id,"
    " item, group_id) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
)


async def save_routings(conn: Conn, routings: Sequence[Routing], now: float) -> list[bool]:
    """Each routing saved; whether each event was still waiting (so this call routed it).
    The events' states in one statement, the deliveries in one pipeline: a few round
    trips a batch, plus those of the messages a noise stage may hold."""
    first: dict[int, Routing] = {}
    for r in routings:
        first.setdefault(r.event_id, r)  # an event given twice: its first routing counts
    cur = await conn.execute(
        "UPDATE events SET state = CASE WHEN id = ANY(%s) THEN 'routed' ELSE 'unrouted' END"
        " WHERE id = ANY(%s) AND state = 'received' RETURNING id",
        ([i for i, r in first.items() if r.messages], list(first)),
    )
    fresh = {int(row["id"]) for row in await cur.fetchall()}
    made: list[tuple[int, Message]] = []
    saved = []
    for routing in routings:
        saved.append(routing.event_id in fresh)
        if saved[-1]:  # else routed already (by another instance, or earlier in this call)
            fresh.discard(routing.event_id)
            made += [(routing.event_id, m) for m in routing.messages]
    keys = sorted({k for _, m in made for k in _group_keys(m)})
    if keys:
        # Every instance takes the groups' and throttles' keys in one order before it
        # touches their rows (two batches for meters X, Y and Y, X would deadlock).
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))"
            " FROM unnest(%s::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
            (keys,),
        )
    rows = []
    for event_id, m in made:
        placed, group_id = await _place(conn, event_id, m, now)
        rows.append((
            event_id, m.rule, m.destination, m.item_index, m.title, m.body, m.format,
            placed.value, now if placed is DeliveryState.PENDING else None, now, now,
            m.error, m.severity, m.silence_id,
            None if m.item is None else _encode(m.item).decode(), group_id,
        ))  # fmt: skip
    if rows:
        await conn.cursor().executemany(_INSERT_DELIVERY, rows)
    return saved
