"""Destinations in SQLite: each one's circuit, and how its last attempts went."""

from __future__ import annotations

import sqlite3
from typing import Any

from relayhook.model import CircuitState

__all__ = ["circuits", "destination_status", "save_circuit"]


def circuits(conn: sqlite3.Connection) -> list[CircuitState]:
    """Every destination's stored circuit, open or closed."""
    return [
        CircuitState(
            destination=row["name"],
            open=bool(row["circuit_open"]),
            failures=int(row["failures"]),
            opened_at=row["opened_at"],
            probe_every=float(row["probe_every"]),
            next_probe_at=row["next_probe_at"],
            last_error=row["circuit_error"],
        )
        for row in conn.execute("SELECT * FROM destinations ORDER BY name")
    ]


def save_circuit(conn: sqlite3.Connection, state: CircuitState) -> None:
    conn.execute(
        "INSERT INTO destinations (name, circuit_open, failures, opened_at, probe_every,"
        " next_probe_at, circuit_error) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET circuit_open = excluded.circuit_open,"
        " failures = excluded.failures, opened_at = excluded.opened_at,"
        " probe_every = excluded.probe_every, next_probe_at = excluded.next_probe_at,"
        " circuit_error = excluded.circuit_error",
        (state.destination, state.open, state.failures, state.opened_at, state.probe_every,
         state.next_probe_at, state.last_error),
    )  # fmt: skip


def destination_status(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Per destination with anything known: circuit, last success and error, and the
    deliveries waiting for it (pending or retrying) with the oldest one's due time."""
    found: dict[str, dict[str, Any]] = {}
    for row in conn.execute("SELECT * FROM destinations"):
        found[row["name"]] = {
            "circuit": "open" if row["circuit_open"] else "closed",
            "opened_at": row["opened_at"],
            "next_probe_at": row["next_probe_at"] if row["circuit_open"] else None,
            "last_success_at": row["last_success_at"],
            "last_error": row["last_error"],
            "last_error_at": row["last_error_at"],
            "queue": 0,
            "oldest_due_at": None,
        }
    for name, count, oldest in conn.execute(
        "SELECT destination, COUNT(*), MIN(next_attempt_at) FROM deliveries"
        " WHERE state IN ('pending', 'retrying') GROUP BY destination"
    ):
        entry = found.setdefault(
            name,
            {
                "circuit": "closed",
                "opened_at": None,
                "next_probe_at": None,
                "last_success_at": None,
                "last_error": None,
                "last_error_at": None,
            },
        )
        entry.update(queue=int(count), oldest_due_at=oldest)
    return found
