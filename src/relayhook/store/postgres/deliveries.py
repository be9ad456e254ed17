"""Deliveries in PostgreSQL: claiming due work, recording attempts (with fallbacks and
each destination's last outcomes), recovery, replay, orphans."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any

from psycopg import AsyncConnection

from relayhook.model import Attempt, Delivery

__all__ = [
    "claim_due",
    "dead_since",
    "next_due_at",
    "orphans",
    "record_attempts",
    "recover",
    "release",
    "renew_leases",
    "replay",
    "requeue_due",
    "waiting_by_destination",
]

Conn = AsyncConnection[Any]
_UNFINISHED = ("pending", "retrying")
_CLAIM_SQL = (
    "WITH chosen AS (SELECT id FROM deliveries WHERE destination = %s"
    " AND state IN ('pending', 'retrying') AND next_attempt_at <= %s"
    " AND (lease_until IS NULL OR lease_until < %s) AND NOT (id = ANY(%s))"
    " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED),"
    " leased AS (UPDATE deliveries d SET lease_owner = %s, lease_until = %s FROM chosen"
    " WHERE d.id = chosen.id RETURNING d.id, d.event_id, d.destination, d.title, d.body,"
    " d.format, d.attempts, d.severity, d.rule, d.next_attempt_at, d.fallback_of)"
    " SELECT l.*, e.received_at, e.event_type, e.source FROM leased l"
    " JOIN events e ON e.id = l.event_id ORDER BY l.next_attempt_at, l.id"
)


def _delivery(row: dict[str, Any]) -> Delivery:
    return Delivery(
        row["id"], row["event_id"], row["destination"], row["title"], row["body"],
        row["format"], row["attempts"], row["received_at"], row["severity"], row["rule"],
        row["next_attempt_at"], row["fallback_of"], row["event_type"], row["source"],
    )  # fmt: skip


async def claim_due(
    conn: Conn, wants: Mapping[str, int], busy: Set[int], now: float, owner: str, lease: float
) -> tuple[list[Delivery], float | None]:
    """Up to wants[destination] due deliveries each, oldest due first, each leased to owner
    until now + lease. Rows another instance is claiming are skipped (SKIP LOCKED); a lease
    that ran out (its instance died or stalled) is taken over here, in the claim itself."""
    taken: list[Delivery] = []
    for destination, free in wants.items():
        if free <= 0:
            continue
        # Chosen, leased and read back whole in one statement: one round trip.
        cur = await conn.execute(_CLAIM_SQL, (destination, now, now, list(busy), free, owner,
                                              now + lease))  # fmt: skip
        taken += [_delivery(row) for row in await cur.fetchall()]
    return taken, None if taken else await next_due_at(conn, wants)


async def release(conn: Conn, ids: Sequence[int], owner: str) -> None:
    """Give back claimed deliveries owner will not send now (due again at once)."""
    await conn.execute(
        "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE id = ANY(%s)"
        " AND lease_owner = %s",
        (list(ids), owner),
    )


async def renew_leases(conn: Conn, ids: Sequence[int], owner: str, until: float) -> int:
    """Extend owner's leases on these deliveries (sends still running); how many it holds."""
    cur = await conn.execute(
        "UPDATE deliveries SET lease_until = %s WHERE id = ANY(%s) AND lease_owner = %s",
        (until, list(ids), owner),
    )
    return cur.rowcount


async def next_due_at(conn: Conn, destinations: Iterable[str]) -> float | None:
    names = list(destinations)
    if not names:
        return None
    cur = await conn.execute(
        "SELECT MIN(next_attempt_at) AS due FROM deliveries WHERE state = ANY(%s)"
        " AND destination = ANY(%s)",
        (list(_UNFINISHED), names),
    )
    row = await cur.fetchone()
    return None if row is None or row["due"] is None else float(row["due"])


async def waiting_by_destination(conn: Conn) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT destination, COUNT(*) AS n FROM deliveries WHERE state = ANY(%s)"
        " GROUP BY destination",
        (list(_UNFINISHED),),
    )
    return {row["destination"]: int(row["n"]) for row in await cur.fetchall()}


async def record_attempts(conn: Conn, attempts: Sequence[Attempt], owner: str) -> None:
    """Each attempt logged and its decision applied, when owner still holds the delivery's
    lease (or nobody does); an attempt whose lease went to another instance meanwhile is
    logged as late and changes nothing else. One statement for the decisions, one
    pipelined batch for the log, whatever the number of attempts."""
    if not attempts:
        return
    cur = await conn.execute(
        "UPDATE deliveries d SET state = u.state, attempts = d.attempts + u.spent,"
        " next_attempt_at = u.next, updated_at = u.at, last_error = u.error,"
        " lease_owner = NULL, lease_until = NULL"
        " FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::float8[], %s::float8[],"
        " %s::text[]) AS u(id, state, spent, next, at, error)"
        " WHERE d.id = u.id AND (d.lease_owner IS NULL OR d.lease_owner = %s) RETURNING d.id",
        (
            [a.delivery_id for a in attempts], [a.decision.state.value for a in attempts],
            [0 if a.held else 1 for a in attempts],
            [a.decision.next_attempt_at for a in attempts],
            [a.recorded_at for a in attempts], [a.error for a in attempts], owner,
        ),
    )  # fmt: skip
    applied = {int(row["id"]) for row in await cur.fetchall()}
    await conn.cursor().executemany(
        "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, error,"
        " held, late) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        [
            (a.delivery_id, a.number, a.started_at, a.duration_ms, a.outcome, a.error, a.held,
             a.delivery_id not in applied)
            for a in attempts
        ],
    )  # fmt: skip
    for a in attempts:
        if a.fallback is not None and a.delivery_id in applied:
            await _fall_back(conn, a)
    last: dict[tuple[str, bool], Attempt] = {}
    for a in attempts:
        if a.destination:
            last[(a.destination, a.decision.state == "delivered")] = a
    for (name, ok), a in last.items():
        await conn.execute(
            "INSERT INTO destinations (name, last_success_at, last_error, last_error_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
            " last_success_at = COALESCE(excluded.last_success_at, destinations.last_success_at),"
            " last_error = COALESCE(excluded.last_error, destinations.last_error),"
            " last_error_at = COALESCE(excluded.last_error_at, destinations.last_error_at)",
            (name, a.recorded_at if ok else None, None if ok else a.error or a.outcome,
             None if ok else a.recorded_at),
        )  # fmt: skip


async def _fall_back(conn: Conn, a: Attempt) -> None:
    fb = a.fallback
    assert fb is not None
    cur = await conn.execute(
        "INSERT INTO deliveries (event_id, rule, destination, item_index, title, body, format,"
        " severity, item, state, next_attempt_at, created_at, updated_at, fallback_of)"
        " SELECT event_id, rule, %s, item_index, %s, %s, %s, severity, item, 'pending', %s, %s,"
        " %s, id FROM deliveries WHERE id = %s AND fallback_id IS NULL RETURNING id",
        (fb.destination, fb.title, fb.body, fb.format, a.recorded_at, a.recorded_at,
         a.recorded_at, a.delivery_id),
    )  # fmt: skip
    row = await cur.fetchone()
    if row is not None:
        await conn.execute(
            "UPDATE deliveries SET fallback_id = %s WHERE id = %s", (row["id"], a.delivery_id)
        )


async def requeue_due(conn: Conn, destination: str, now: float) -> int:
    cur = await conn.execute(
        "UPDATE deliveries SET next_attempt_at = created_at WHERE destination = %s"
        " AND state = ANY(%s) AND next_attempt_at <= %s AND next_attempt_at > created_at",
        (destination, list(_UNFINISHED), now),
    )
    return cur.rowcount


async def orphans(
    conn: Conn, configured: Sequence[str], before: float, now: float
) -> dict[str, int]:
    cur = await conn.execute(
        "UPDATE deliveries SET state = 'dead', next_attempt_at = NULL, updated_at = %s,"
        " last_error = 'destination ''' || destination || ''' is no longer in the config'"
        " WHERE state = ANY(%s) AND NOT (destination = ANY(%s)) AND updated_at < %s"
        " RETURNING destination",
        (now, list(_UNFINISHED), list(configured), before),
    )
    found: dict[str, int] = {}
    for row in await cur.fetchall():
        found[row["destination"]] = found.get(row["destination"], 0) + 1
    return found


async def recover(conn: Conn, now: float) -> int:
    cur = await conn.execute(
        "UPDATE deliveries SET state = 'retrying', next_attempt_at = %s, updated_at = %s"
        " WHERE state = 'sending'",
        (now, now),
    )
    return cur.rowcount


async def replay(conn: Conn, ids: Iterable[int], now: float) -> list[tuple[int, int]]:
    made = []
    for original in ids:
        cur = await conn.execute(
            "INSERT INTO deliveries (event_id, rule, destination, item_index, title, body, format,"
            " severity, item, state, next_attempt_at, created_at, updated_at, replay_of)"
            " SELECT event_id, rule, destination, item_index, title, body, format, severity,"
            " item, 'pending', %s, %s, %s, id FROM deliveries WHERE id = %s"
            " AND state IN ('delivered', 'dead', 'silenced') RETURNING id",
            (now, now, now, original),
        )
        row = await cur.fetchone()
        if row is not None:
            made.append((original, int(row["id"])))
    return made


async def dead_since(conn: Conn, since: float) -> list[int]:
    cur = await conn.execute(
        "SELECT id FROM deliveries WHERE state = 'dead' AND updated_at >= %s ORDER BY id",
        (since,),
    )
    return [int(row["id"]) for row in await cur.fetchall()]
