"""Destinations in PostgreSQL: circuits (shared by every instance), last outcomes, and
retention."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from relayhook.model import CircuitState
from relayhook.store.postgres.schema import take_lock
from relayhook.store.rows import NO_DESTINATION, circuit_of, destination_view

__all__ = ["circuits", "destination_status", "prune_batch", "save_circuit", "take_probe"]

Conn = AsyncConnection[Any]


async def circuits(conn: Conn) -> list[CircuitState]:
    cur = await conn.execute("SELECT * FROM destinations ORDER BY name")
    return [circuit_of(row) for row in await cur.fetchall()]


async def save_circuit(conn: Conn, state: CircuitState) -> None:
    await conn.execute(
        "INSERT INTO destinations (name, circuit_open, failures, opened_at, probe_every,"
        " next_probe_at, circuit_error) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET circuit_open = excluded.circuit_open,"
        " failures = excluded.failures, opened_at = excluded.opened_at,"
        " probe_every = excluded.probe_every, next_probe_at = excluded.next_probe_at,"
        " circuit_error = excluded.circuit_error",
        (state.destination, state.open, state.failures, state.opened_at, state.probe_every,
         state.next_probe_at, state.last_error),
    )  # fmt: skip


async def take_probe(conn: Conn, destination: str, now: float, every: float) -> float | None:
    """Take the probe of an open circuit for this instance: the probe interval in force
    (the stored one, which the instance that probed last doubled), or None when another
    instance took it (the stored next probe is still ahead). A circuit not stored open yet
    denies nobody, and keeps `every`."""
    cur = await conn.execute(
        "UPDATE destinations SET next_probe_at = %s + probe_every WHERE name = %s"
        " AND circuit_open AND (next_probe_at IS NULL OR next_probe_at <= %s)"
        " RETURNING probe_every",
        (now, destination, now),
    )
    row = await cur.fetchone()
    if row is not None:
        return float(row["probe_every"]) or every
    cur = await conn.execute(
        "SELECT 1 FROM destinations WHERE name = %s AND circuit_open AND next_probe_at > %s",
        (destination, now),
    )
    return None if await cur.fetchone() is not None else every


async def destination_status(conn: Conn) -> dict[str, dict[str, Any]]:
    cur = await conn.execute("SELECT * FROM destinations")
    found = {row["name"]: destination_view(row) for row in await cur.fetchall()}
    cur = await conn.execute(
        "SELECT destination, COUNT(*) AS n, MIN(next_attempt_at) AS oldest FROM deliveries"
        " WHERE state IN ('pending', 'retrying') GROUP BY destination"
    )
    for row in await cur.fetchall():
        entry = found.setdefault(row["destination"], dict(NO_DESTINATION))
        entry.update(queue=int(row["n"]), oldest_due_at=row["oldest"])
    return found


async def prune_batch(conn: Conn, cutoff: float, batch: int = 2000) -> tuple[int, int, int] | None:
    """One batch of retention, None when done, or when another instance prunes now."""
    if not await take_lock(conn, "prune"):
        return None
    cur = await conn.execute(
        "SELECT e.id FROM events e WHERE e.received_at < %s AND e.state != 'received'"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND"
        " (d.state IN ('pending', 'retrying', 'sending') OR d.updated_at >= %s"
        "  OR (d.state = 'grouped' AND EXISTS (SELECT 1 FROM groups g"
        "      WHERE g.id = d.group_id AND g.state != 'sent'))))"
        " ORDER BY e.id LIMIT %s",
        (cutoff, cutoff, batch),
    )
    ids = [int(row["id"]) for row in await cur.fetchall()]
    if not ids:
        return None
    attempts = await conn.execute(
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"
        " WHERE event_id = ANY(%s))",
        (ids,),
    )
    deliveries = await conn.execute("DELETE FROM deliveries WHERE event_id = ANY(%s)", (ids,))
    events = await conn.execute("DELETE FROM events WHERE id = ANY(%s)", (ids,))
    await conn.execute("DELETE FROM groups WHERE state = 'sent' AND sent_at < %s", (cutoff,))
    return events.rowcount, deliveries.rowcount, attempts.rowcount
