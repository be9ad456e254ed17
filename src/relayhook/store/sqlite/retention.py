"""Retention in SQLite: deleting old finished work in small transactions."""

from __future__ import annotations

import sqlite3

__all__ = ["prune_batch"]


def prune_batch(
    conn: sqlite3.Connection, cutoff: float, batch: int = 2000
) -> tuple[int, int, int] | None:
    """Delete up to batch finished events older than cutoff, with their deliveries and attempts.

    An event goes only when it was received before the cutoff and none of its deliveries is
    unfinished or touched since: pending and retrying work is never pruned. Returns the
    (events, deliveries, attempts) deleted, or None when nothing was left to delete.
    """
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT e.id FROM events e WHERE e.received_at < ? AND e.state != 'received'"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND"
            " (d.state IN ('pending', 'retrying', 'sending') OR d.updated_at >= ?"
            # A message waiting in a group not sent yet is unfinished work too.
            "  OR (d.state = 'grouped' AND EXISTS (SELECT 1 FROM groups g"
            "      WHERE g.id = d.group_id AND g.state != 'sent'))))"
            " ORDER BY e.id LIMIT ?",
            (cutoff, cutoff, batch),
        )
    ]
    if not ids:
        return None
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS prune_ids (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM prune_ids")
    conn.executemany("INSERT INTO prune_ids VALUES (?)", [(i,) for i in ids])
    attempts = conn.execute(
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id IN"
        " (SELECT id FROM prune_ids))"
    ).rowcount
    deliveries = conn.execute(
        "DELETE FROM deliveries WHERE event_id IN (SELECT id FROM prune_ids)"
    ).rowcount
    events = conn.execute("DELETE FROM events WHERE id IN (SELECT id FROM prune_ids)").rowcount
    conn.execute("DELETE FROM groups WHERE state = 'sent' AND sent_at < ?", (cutoff,))
    return events, deliveries, attempts
