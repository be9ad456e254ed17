"""Silences, for both databases: kept with their matchers as JSON, and what each held."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from relayhook.policy.silence import Matcher, Silence, SilenceFacts
from relayhook.store.rows import dump_matchers, facts_of, silence_of, silence_view
from relayhook.store.sql import Db

__all__ = [
    "active_silences",
    "add_silence",
    "expire_silence",
    "list_silences",
    "mute",
    "silence_facts",
]


async def add_silence(
    db: Db, matchers: Sequence[Matcher], starts_at: float, ends_at: float, comment: str,
    author: str, now: float,
) -> int:  # fmt: skip
    made = await db.value(
        "INSERT INTO silences (matchers, starts_at, ends_at, comment, author, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (dump_matchers(matchers), starts_at, ends_at, comment, author, now),
    )
    return int(made)


async def active_silences(db: Db, now: float) -> list[Silence]:
    rows = await db.all(
        "SELECT * FROM silences WHERE ends_at > ? AND starts_at <= ? ORDER BY id", (now, now)
    )
    return [silence_of(row) for row in rows]


async def list_silences(db: Db, now: float, include_ended: bool = False) -> list[dict[str, Any]]:
    """Silences not ended yet (or all), newest first, each with how many messages it held."""
    rows = await db.all(
        "SELECT s.*, (SELECT COUNT(*) FROM deliveries d WHERE d.silence_id = s.id) AS held"
        " FROM silences s WHERE ? OR s.ends_at > ? ORDER BY s.id DESC",
        (include_ended, now),
    )
    return [silence_view(row, now) for row in rows]


async def expire_silence(db: Db, silence_id: int, now: float) -> bool:
    """End a silence now; False when it is unknown or had ended already."""
    changed = await db.execute(
        "UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?", (now, silence_id, now)
    )
    return changed == 1


async def silence_facts(db: Db, ids: Iterable[int]) -> dict[int, SilenceFacts]:
    """What matchers read of each of these deliveries: its event's payload and its item."""
    rows = await db.all(
        "SELECT d.id, e.source, e.event_type, e.body, d.rule, d.destination, d.item,"
        " d.replay_of FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = ANY(?)",
        (list(ids),),
    )
    return {int(row["id"]): facts_of(row) for row in rows}


async def mute(db: Db, muted: Sequence[tuple[int, int]], now: float) -> list[int]:
    """Mark unfinished deliveries silenced by the given silence ids: the ones it did."""
    done = []
    for delivery_id, silence_id in muted:
        changed = await db.execute(
            "UPDATE deliveries SET state = 'silenced', silence_id = ?, next_attempt_at = NULL,"
            " updated_at = ? WHERE id = ? AND state IN ('pending', 'retrying')",
            (silence_id, now, delivery_id),
        )
        if changed == 1:
            done.append(delivery_id)
    return done
