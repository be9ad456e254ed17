"""Deliveries in PostgreSQL: claims under leases, and attempts' decisions applied where
the lease is still this instance's (the rest is store/deliveries.py, for both databases)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

from relayhook.model import Attempt, Delivery
from relayhook.store.deliveries import next_due_at
from relayhook.store.rows import delivery_of
from relayhook.store.sql import Db

__all__ = ["claim_due", "decide", "release", "renew_leases"]

_CLAIM_SQL = (
    "WITH chosen AS (SELECT id FROM deliveries WHERE destination = ?"
    " AND state IN ('pending', 'retrying') AND next_attempt_at <= ?"
    " AND (lease_until IS NULL OR lease_until < ?) AND NOT (id = ANY(?))"
    " ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED),"
    " leased AS (UPDATE deliveries d SET lease_owner = ?, lease_until = ? FROM chosen"
    " WHERE d.id = chosen.id RETURNING d.id, d.event_id, d.destination, d.title, d.body,"
    " d.format, d.attempts, d.severity, d.rule, d.next_attempt_at, d.fallback_of)"
    " SELECT l.*, e.received_at, e.event_type, e.source FROM leased l"
    " JOIN events e ON e.id = l.event_id ORDER BY l.next_attempt_at, l.id"
)


async def claim_due(
    db: Db, wants: Mapping[str, int], busy: Set[int], now: float, owner: str, lease: float
) -> tuple[list[Delivery], float | None]:
    """Up to wants[destination] due deliveries each, oldest due first, each leased to owner
    until now + lease. Rows another instance is claiming are skipped (SKIP LOCKED); a lease
    that ran out (its instance died or stalled) is taken over here, in the claim itself."""
    taken: list[Delivery] = []
    for destination, free in wants.items():
        if free <= 0:
            continue
        # Chosen, leased and read back whole in one statement: one round trip.
        rows = await db.all(
            _CLAIM_SQL, (destination, now, now, list(busy), free, owner, now + lease)
        )
        taken += [delivery_of(row) for row in rows]
    return taken, None if taken else await next_due_at(db, wants)


async def release(db: Db, ids: Sequence[int], owner: str) -> None:
    """Give back claimed deliveries owner will not send now (due again at once)."""
    await db.execute(
        "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE id = ANY(?)"
        " AND lease_owner = ?",
        (list(ids), owner),
    )


async def renew_leases(db: Db, ids: Sequence[int], owner: str, until: float) -> int:
    """Extend owner's leases on these deliveries (sends still running); how many it holds."""
    return await db.execute(
        "UPDATE deliveries SET lease_until = ? WHERE id = ANY(?) AND lease_owner = ?",
        (until, list(ids), owner),
    )


async def decide(db: Db, attempts: Sequence[Attempt], owner: str) -> set[int]:
    """Each attempt's decision applied when owner still holds the delivery's lease (or
    nobody does), in one statement whatever their number: the ids it applied (an attempt
    whose lease went to another instance meanwhile is logged as late, nothing more)."""
    rows = await db.all(
        "UPDATE deliveries d SET state = u.state, attempts = d.attempts + u.spent,"
        " next_attempt_at = u.next, updated_at = u.at, last_error = u.error,"
        " lease_owner = NULL, lease_until = NULL"
        " FROM unnest(?::bigint[], ?::text[], ?::int[], ?::float8[], ?::float8[],"
        " ?::text[]) AS u(id, state, spent, next, at, error)"
        " WHERE d.id = u.id AND (d.lease_owner IS NULL OR d.lease_owner = ?) RETURNING d.id",
        (
            [a.delivery_id for a in attempts], [a.decision.state.value for a in attempts],
            [0 if a.held else 1 for a in attempts],
            [a.decision.next_attempt_at for a in attempts],
            [a.recorded_at for a in attempts], [a.error for a in attempts], owner,
        ),
    )  # fmt: skip
    return {int(row["id"]) for row in rows}
