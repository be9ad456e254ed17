"""Retention, for both databases: old finished work deleted a batch at a time."""

from __future__ import annotations

from relayhook.store.sql import Db

__all__ = ["prune_batch"]


async def prune_batch(db: Db, cutoff: float, batch: int = 2000) -> tuple[int, int, int] | None:
    """Delete up to batch finished events older than cutoff, with their deliveries and attempts.

    An event goes only when it was received before the cutoff and none of its deliveries is
    unfinished or touched since: pending and retrying work is never pruned. Returns the
    (events, deliveries, attempts) deleted, or None when nothing was left to delete.
    """
    rows = await db.all(
        "SELECT e.id FROM events e WHERE e.received_at < ? AND e.state != 'received'"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND"
        " (d.state IN ('pending', 'retrying', 'sending') OR d.updated_at >= ?"
        # A message waiting in a group not sent yet is unfinished work too.
        "  OR (d.state = 'grouped' AND EXISTS (SELECT 1 FROM groups g"
        "      WHERE g.id = d.group_id AND g.state != 'sent'))))"
        " ORDER BY e.id LIMIT ?",
        (cutoff, cutoff, batch),
    )
    ids = [int(row["id"]) for row in rows]
    if not ids:
        return None
    attempts = await db.execute(
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"
        " WHERE event_id = ANY(?))",
        (ids,),
    )
    deliveries = await db.execute("DELETE FROM deliveries WHERE event_id = ANY(?)", (ids,))
    events = await db.execute("DELETE FROM events WHERE id = ANY(?)", (ids,))
    await db.execute("DELETE FROM groups WHERE state = 'sent' AND sent_at < ?", (cutoff,))
    return events, deliveries, attempts
