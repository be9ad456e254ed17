"""Ingest in PostgreSQL: accepted events stored in one round trip a batch, deduplicated by
a unique key across instances (the rest is store/events.py, for both databases)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from relayhook.model import NewEvent
from relayhook.store.events import stored_id
from relayhook.store.postgres.db import PostgresDb

__all__ = ["add_events"]

Conn = AsyncConnection[Any]


async def add_events(conn: Conn, batch: Sequence[tuple[NewEvent, str]]) -> list[tuple[int, bool]]:
    """Many (event, headers) in one round trip (a pipeline): for each, (its id, whether
    (source, key) was stored before, by any instance or earlier in this batch)."""
    cur = conn.cursor()
    await cur.executemany(
        "INSERT INTO events (source, event_key, event_type, received_at, headers, body)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (source, event_key) DO NOTHING"
        " RETURNING id",
        [(e.source, e.key, e.event_type, e.received_at, h, e.text) for e, h in batch],
        returning=True,
    )
    ids: list[int | None] = []
    while True:
        row = await cur.fetchone()
        ids.append(None if row is None else int(row["id"]))
        if not cur.nextset():
            break
    found: list[tuple[int, bool]] = []
    for (e, _), made in zip(batch, ids, strict=True):
        if made is not None:
            found.append((made, False))
            continue
        found.append((await stored_id(PostgresDb(conn), e.source, e.key), True))
    return found
