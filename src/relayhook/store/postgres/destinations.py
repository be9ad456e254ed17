"""Destinations in PostgreSQL: the probe of an open circuit, taken by one instance (the
rest is store/destinations.py, for both databases)."""

from __future__ import annotations

from relayhook.store.sql import Db

__all__ = ["take_probe"]


async def take_probe(db: Db, destination: str, now: float, every: float) -> float | None:
    """Take the probe of an open circuit for this instance: the probe interval in force
    (the stored one, which the instance that probed last doubled), or None when another
    instance took it (the stored next probe is still ahead). A circuit not stored open yet
    denies nobody, and keeps `every`."""
    probe_every = await db.value(
        "UPDATE destinations SET next_probe_at = ? + probe_every WHERE name = ?"
        " AND circuit_open AND (next_probe_at IS NULL OR next_probe_at <= ?)"
        " RETURNING probe_every",
        (now, destination, now),
    )
    if probe_every is not None:
        return float(probe_every) or every
    taken = await db.one(
        "SELECT 1 FROM destinations WHERE name = ? AND circuit_open AND next_probe_at > ?",
        (destination, now),
    )
    return None if taken is not None else every
