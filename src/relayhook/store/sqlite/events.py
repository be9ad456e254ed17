"""Ingest in SQLite: accepted events inserted in one statement a batch (the rest of
what events go through is store/events.py, the same for both databases)."""

from __future__ import annotations

import sqlite3
from typing import Any

from relayhook.store.events import stored_id
from relayhook.store.sqlite.db import SqliteDb, run_sync

__all__ = ["insert_events"]

_INSERT_EVENTS = (
    "INSERT INTO events (id, source, event_key, event_type, received_at, headers, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, event_key) DO NOTHING"
)


def insert_events(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[tuple[int, bool]]:
    """Insert (id, source, key, type, received_at, headers, body) rows in one statement:
    (the stored id, whether (source, key) was known already) for each."""
    cur = conn.executemany(_INSERT_EVENTS, rows)
    if cur.rowcount == len(rows):
        return [(row[0], False) for row in rows]
    # Some keys were known: find which rows stand in their place.
    found: list[tuple[int, bool]] = []
    for row in rows:
        stored = run_sync(stored_id(SqliteDb(conn), row[1], row[2]))
        found.append((stored, stored != row[0]))
    return found
