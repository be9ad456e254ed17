"""Destinations, for both databases: each one's circuit, and how its last attempts went."""

from __future__ import annotations

from typing import Any

from relayhook.model import CircuitState
from relayhook.store.rows import NO_DESTINATION, circuit_of, destination_view
from relayhook.store.sql import Db

__all__ = ["circuits", "destination_status", "save_circuit"]


async def circuits(db: Db) -> list[CircuitState]:
    """Every destination's stored circuit, open or closed."""
    return [circuit_of(row) for row in await db.all("SELECT * FROM destinations ORDER BY name")]


async def save_circuit(db: Db, state: CircuitState) -> None:
    await db.execute(
        "INSERT INTO destinations (name, circuit_open, failures, opened_at, probe_every,"
        " next_probe_at, circuit_error) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET circuit_open = excluded.circuit_open,"
        " failures = excluded.failures, opened_at = excluded.opened_at,"
        " probe_every = excluded.probe_every, next_probe_at = excluded.next_probe_at,"
        " circuit_error = excluded.circuit_error",
        (state.destination, state.open, state.failures, state.opened_at, state.probe_every,
         state.next_probe_at, state.last_error),
    )  # fmt: skip


async def destination_status(db: Db) -> dict[str, dict[str, Any]]:
    """Per destination with anything known: circuit, last success and error, and the
    deliveries waiting for it (pending or retrying) with the oldest one's due time."""
    found = {
        row["name"]: destination_view(row) for row in await db.all("SELECT * FROM destinations")
    }
    for row in await db.all(
        "SELECT destination, COUNT(*) AS n, MIN(next_attempt_at) AS oldest FROM deliveries"
        " WHERE state IN ('pending', 'retrying') GROUP BY destination"
    ):
        entry = found.setdefault(row["destination"], dict(NO_DESTINATION))
        entry.update(queue=int(row["n"]), oldest_due_at=row["oldest"])
    return found
