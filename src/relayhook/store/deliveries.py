"""Deliveries, for both databases: recording attempts (with fallbacks and each
destination's last outcomes), recovery, replay, orphans, and what waits per destination.
(Claims and leases are each backend's own: store/*/deliveries.py.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

from relayhook.model import Attempt
from relayhook.store.sql import Db

__all__ = [
    "Decide",
    "dead_since",
    "next_due_at",
    "orphans",
    "record_attempts",
    "recover",
    "replay",
    "replay_dead",
    "requeue_due",
    "waiting_by_destination",
]

# A backend's way of applying attempts' decisions to their deliveries: the ids it applied
# (PostgreSQL leaves out those whose lease another instance holds now).
Decide = Callable[[Db, Sequence[Attempt]], Awaitable[set[int]]]


async def next_due_at(db: Db, destinations: Iterable[str]) -> float | None:
    """When the earliest waiting delivery to any of these destinations falls due."""
    names = list(destinations)
    if not names:
        return None
    due = await db.value(
        "SELECT MIN(next_attempt_at) FROM deliveries WHERE state IN ('pending', 'retrying')"
        " AND destination = ANY(?)",
        (names,),
    )
    return None if due is None else float(due)


async def waiting_by_destination(db: Db) -> dict[str, int]:
    """Deliveries still to be sent (pending or retrying), per destination."""
    rows = await db.all(
        "SELECT destination, COUNT(*) AS n FROM deliveries"
        " WHERE state IN ('pending', 'retrying') GROUP BY destination"
    )
    return {row["destination"]: int(row["n"]) for row in rows}


async def record_attempts(db: Db, attempts: Sequence[Attempt], decide: Decide) -> None:
    """Each attempt's decision applied (decide), each attempt logged (late when its
    decision was not applied), a dead one's fallback delivery added and linked, and each
    destination's last success or error noted."""
    if not attempts:
        return
    applied = await decide(db, attempts)
    await db.many(
        "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, error,"
        " held, late) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (a.delivery_id, a.number, a.started_at, a.duration_ms, a.outcome, a.error, a.held,
             a.delivery_id not in applied)
            for a in attempts
        ],
    )  # fmt: skip
    for a in attempts:
        if a.fallback is not None and a.delivery_id in applied:
            await _fall_back(db, a)
    # Each destination's latest success and latest error in the batch.
    last: dict[tuple[str, bool], Attempt] = {}
    for a in attempts:
        if a.destination:
            last[(a.destination, a.decision.state == "delivered")] = a
    for (name, ok), a in last.items():
        await db.execute(
            "INSERT INTO destinations (name, last_success_at, last_error, last_error_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
            " last_success_at = COALESCE(excluded.last_success_at, destinations.last_success_at),"
            " last_error = COALESCE(excluded.last_error, destinations.last_error),"
            " last_error_at = COALESCE(excluded.last_error_at, destinations.last_error_at)",
            (name, a.recorded_at if ok else None, None if ok else a.error or a.outcome,
             None if ok else a.recorded_at),
        )  # fmt: skip


async def _fall_back(db: Db, a: Attempt) -> None:
    """The fallback delivery of a dead one: same event, rule and severity, linked."""
    fb = a.fallback
    assert fb is not None
    made = await db.value(
        "INSERT INTO deliveries (event_id, rule, destination, item_index, title, body, format,"
        " severity, item, state, next_attempt_at, created_at, updated_at, fallback_of)"
        " SELECT event_id, rule, ?, item_index, ?, ?, ?, severity, item, 'pending', ?, ?, ?, id"
        " FROM deliveries WHERE id = ? AND fallback_id IS NULL RETURNING id",
        (fb.destination, fb.title, fb.body, fb.format, a.recorded_at, a.recorded_at,
         a.recorded_at, a.delivery_id),
    )  # fmt: skip
    if made is not None:
        await db.execute(
            "UPDATE deliveries SET fallback_id = ? WHERE id = ?", (made, a.delivery_id)
        )


async def requeue_due(db: Db, destination: str, now: float) -> int:
    """Put every delivery due to destination back in the order it first fell due (when
    it was made): after an outage the backlog goes out oldest first. How many."""
    return await db.execute(
        "UPDATE deliveries SET next_attempt_at = created_at WHERE destination = ?"
        " AND state IN ('pending', 'retrying') AND next_attempt_at <= ?"
        " AND next_attempt_at > created_at",
        (destination, now),
    )


async def orphans(db: Db, configured: Sequence[str], before: float, now: float) -> dict[str, int]:
    """Unfinished deliveries to destinations the config no longer has, untouched since
    before, made dead saying so: how many per destination."""
    rows = await db.all(
        "UPDATE deliveries SET state = 'dead', next_attempt_at = NULL, updated_at = ?,"
        " last_error = 'destination ''' || destination || ''' is no longer in the config'"
        " WHERE state IN ('pending', 'retrying') AND NOT (destination = ANY(?))"
        " AND updated_at < ? RETURNING destination",
        (now, list(configured), before),
    )
    found: dict[str, int] = {}
    for row in rows:
        found[row["destination"]] = found.get(row["destination"], 0) + 1
    return found


async def recover(db: Db, now: float) -> int:
    """After a crash or stop: deliveries caught in flight are due again at once.

    Only databases from before in-flight work was kept in memory (or leased) have such
    rows ('sending'); today a crash leaves in-flight work simply due.
    """
    return await db.execute(
        "UPDATE deliveries SET state = 'retrying', next_attempt_at = ?, updated_at = ?"
        " WHERE state = 'sending'",
        (now, now),
    )


async def replay(db: Db, ids: Iterable[int], now: float) -> list[tuple[int, int]]:
    """New pending deliveries copied from delivered, dead or silenced ones:
    [(original id, new id)]."""
    made = []
    for original in ids:
        new = await db.value(
            "INSERT INTO deliveries (event_id, rule, destination, item_index, title, body, format,"
            " severity, item, state, next_attempt_at, created_at, updated_at, replay_of)"
            " SELECT event_id, rule, destination, item_index, title, body, format, severity,"
            " item, 'pending', ?, ?, ?, id FROM deliveries WHERE id = ?"
            " AND state IN ('delivered', 'dead', 'silenced') RETURNING id",
            (now, now, now, original),
        )
        if new is not None:
            made.append((original, int(new)))
    return made


async def dead_since(db: Db, since: float) -> list[int]:
    """Deliveries that went dead at or after `since`, oldest first."""
    rows = await db.all(
        "SELECT id FROM deliveries WHERE state = 'dead' AND updated_at >= ? ORDER BY id",
        (since,),
    )
    return [int(row["id"]) for row in rows]


async def replay_dead(db: Db, since: float, now: float) -> list[tuple[int, int]]:
    """Every delivery dead since `since` replayed, in one transaction."""
    return await replay(db, await dead_since(db, since), now)
