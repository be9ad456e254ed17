"""Deliveries in SQLite: claiming due work, and applying attempts' decisions (the rest is
store/deliveries.py, for both databases)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

from relayhook.model import Attempt, Delivery
from relayhook.store.deliveries import next_due_at
from relayhook.store.rows import delivery_of
from relayhook.store.sql import Db

__all__ = ["claim_due", "decide"]

_DUE_SQL = (
    "SELECT d.id, d.event_id, d.destination, d.title, d.body, d.format, d.attempts,"
    " e.received_at, d.severity, d.rule, d.next_attempt_at, d.fallback_of, e.event_type,"
    " e.source FROM deliveries d JOIN events e ON e.id = d.event_id"
    " WHERE d.destination = ? AND d.state IN ('pending', 'retrying')"
    " AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at LIMIT ?"
)


async def claim_due(
    db: Db, wants: Mapping[str, int], busy: Set[int], now: float
) -> tuple[list[Delivery], float | None]:
    """Up to wants[destination] due deliveries each, oldest due first, skipping those in
    flight (busy); and, when none, when the next one to these destinations falls due.

    Nothing is written: what is in flight is known in memory only (the daemon's lock on
    the file makes it the only sender), so a crash leaves it due, to be tried again (at
    least once) after the restart.
    """
    taken: list[Delivery] = []
    for destination, free in wants.items():
        if free <= 0:
            continue
        rows = await db.all(_DUE_SQL, (destination, now, free + len(busy)))
        taken += [delivery_of(row) for row in rows if row["id"] not in busy][:free]
    return taken, None if taken else await next_due_at(db, wants)


async def decide(db: Db, attempts: Sequence[Attempt]) -> set[int]:
    """Each delivery moved to the state its attempt decided (a held one spends no
    attempt): all of them, as one daemon holds every delivery of the file."""
    await db.many(
        "UPDATE deliveries SET state = ?, attempts = attempts + ?, next_attempt_at = ?,"
        " updated_at = ?, last_error = ? WHERE id = ?",
        [
            (a.decision.state, 0 if a.held else 1, a.decision.next_attempt_at, a.recorded_at,
             a.error, a.delivery_id)
            for a in attempts
        ],
    )  # fmt: skip
    return {a.delivery_id for a in attempts}
