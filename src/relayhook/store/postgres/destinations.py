"""Destinations in PostgreSQL: the probe of an open circuit, taken by one instance (the
rest is store/destinations.py, for both databases)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

__all__ = ["take_probe"]

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
