"""Destinations in PostgreSQL: the probe of an open circuit, taken by one instance, and
retention (the rest is store/destinations.py, for both databases)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from relayhook.store.postgres.schema import take_lock

__all__ = ["prune_batch", "take_probe"]

Conn = AsyncConnection[Any]


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
