"""Groups and throttles, for both databases: the noise rules' decisions (policy/noise.py)
applied in the caller's transaction, so a message and its group membership commit
together and a digest goes out once, on time, across SIGKILL, reload and instances."""

from __future__ import annotations

import json
from typing import Any

from relayhook.model import DeliveryState, Message
from relayhook.policy import noise
from relayhook.policy.noise import QUIET_KEY, Hold, Window
from relayhook.store.base import Digest, DueGroup
from relayhook.store.rows import group_view, member_of
from relayhook.store.sql import Db

__all__ = [
    "close_group",
    "due_groups",
    "group_members",
    "hold_group",
    "lock_names",
    "next_group_due",
    "place",
    "send_group_now",
    "waiting_groups",
]


def lock_names(m: Message) -> list[str]:
    """The throttle and group rows placing m may change, named for Db.lock."""
    if not m.may_wait:
        return []
    keys = [m.throttle.key] if m.throttle else []
    keys += [m.grouping.key] if m.grouping else []
    keys += [QUIET_KEY] if m.quiet_until is not None else []
    return [json.dumps(["group", m.rule, m.destination, k]) for k in keys]


async def place(db: Db, event_id: int, m: Message, now: float) -> tuple[DeliveryState, int | None]:
    """Where a new message goes (policy/noise.py), written: (its state, its group)."""
    window = None
    if noise.counts_throttle(m):
        assert m.throttle is not None
        window = await _window(db, m.rule, m.destination, m.throttle.key, now)
    placed = noise.place(m, now, window)
    if placed.window is not None:
        assert m.throttle is not None
        await db.execute(
            "UPDATE throttles SET window_start = ?, count = ?"
            " WHERE rule = ? AND destination = ? AND key = ?",
            (placed.window.start, placed.window.count, m.rule, m.destination, m.throttle.key),
        )
    if placed.hold is None:
        return placed.state, None
    return placed.state, await _join(db, event_id, m, placed.hold, now)


async def _window(db: Db, rule: str, destination: str, key: str, now: float) -> Window:
    # One row per key, updated in place: its row lock orders instances counting at once.
    await db.execute(
        "INSERT INTO throttles (rule, destination, key, window_start, count)"
        " VALUES (?, ?, ?, ?, 0) ON CONFLICT (rule, destination, key) DO NOTHING",
        (rule, destination, key, now),
    )
    row = await db.one(
        "SELECT window_start, count FROM throttles"
        " WHERE rule = ? AND destination = ? AND key = ? FOR UPDATE",
        (rule, destination, key),
    )
    assert row is not None
    return Window(float(row["window_start"]), int(row["count"]))


async def _last(db: Db, rule: str, destination: str, key: str) -> float | None:
    """When the key's last closed group went, or is set to go (a full one)."""
    last = await db.value(
        "SELECT MAX(COALESCE(sent_at, due_at)) FROM groups"
        " WHERE rule = ? AND destination = ? AND key = ? AND state != 'open'",
        (rule, destination, key),
    )
    return None if last is None else float(last)


async def _join(db: Db, event_id: int, m: Message, hold: Hold, now: float) -> int:
    """The id of the open group of hold's key that m joins, made if there is none."""
    key = (m.rule, m.destination, hold.key)
    row = await db.one(
        "SELECT id, count FROM groups"
        " WHERE rule = ? AND destination = ? AND key = ? AND state = 'open' FOR UPDATE",
        key,
    )
    count = None if row is None else int(row["count"])
    last = await _last(db, *key) if noise.needs_last(hold, count) else None
    joined = noise.join(hold, count, last, now)
    if row is None:
        # Two instances making the same group at once meet at the unique index of open
        # groups; the one that loses joins the other's.
        group_id = await db.value(
            "INSERT INTO groups (rule, destination, key, state, count, event_id, format,"
            " severity, first_at, last_at, due_at, interval, reason)"
            " VALUES (?, ?, ?, 'open', 1, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (rule, destination, key) WHERE state = 'open' DO NOTHING RETURNING id",
            (*key, event_id, m.format, m.severity, now, now, joined.due, hold.interval,
             hold.reason),
        )  # fmt: skip
        if group_id is None:
            return await _join(db, event_id, m, hold, now)
        group_id = int(group_id)
    else:
        group_id = int(row["id"])
        await db.execute(
            "UPDATE groups SET count = ?, last_at = ? WHERE id = ?", (joined.count, now, group_id)
        )
    if joined.full:
        await db.execute(
            "UPDATE groups SET state = 'full', due_at = ?, reason = 'max' WHERE id = ?",
            (joined.due, group_id),
        )
    return group_id


_DUE = (
    "SELECT id, rule, destination, key, count, event_id, format, severity, first_at,"
    " last_at, reason FROM groups WHERE state != 'sent'"
)


async def due_groups(db: Db, now: float, limit: int) -> list[DueGroup]:
    """Groups not sent whose time has come, the longest due first (then the oldest)."""
    rows = await db.all(_DUE + " AND due_at <= ? ORDER BY due_at, id LIMIT ?", (now, limit))
    return [DueGroup(**dict(row)) for row in rows]


async def next_group_due(db: Db) -> float | None:
    due = await db.value("SELECT MIN(due_at) FROM groups WHERE state != 'sent'")
    return None if due is None else float(due)


async def group_members(db: Db, group_id: int, limit: int) -> list[dict[str, Any]]:
    """The first `limit` messages of a group, in arrival order, as a digest lists them."""
    rows = await db.all(
        "SELECT d.id, d.title, d.body, d.event_id, e.event_type, e.source, e.received_at,"
        " d.item FROM deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE d.group_id = ? ORDER BY d.id LIMIT ?",
        (group_id, limit),
    )
    return [member_of(row) for row in rows]


async def _take(db: Db, group: DueGroup, now: float) -> bool:
    """Mark a due group sent, once: False when it was (by this instance or another)."""
    return (
        await db.execute(
            "UPDATE groups SET state = 'sent', sent_at = ? WHERE id = ? AND state != 'sent'",
            (now, group.id),
        )
        == 1
    )


async def close_group(db: Db, group: DueGroup, digest: Digest | None, now: float) -> int | None:
    """Send a due group once: its digest as a new delivery (failed when it did not
    render), or its only message as itself when digest is None. The delivery that goes,
    or None when the group was sent already."""
    if not await _take(db, group, now):
        return None
    key = (group.rule, group.destination, group.key)
    for row in await db.all(
        "SELECT id, due_at, interval FROM groups"
        " WHERE rule = ? AND destination = ? AND key = ? AND state != 'sent'"
        " AND interval IS NOT NULL FOR UPDATE",
        key,
    ):
        due = noise.after_send(float(row["due_at"]), float(row["interval"]), now)
        if due != row["due_at"]:
            await db.execute("UPDATE groups SET due_at = ? WHERE id = ?", (due, row["id"]))
    if digest is None:
        delivery_id = int(
            await db.value(
                "SELECT id FROM deliveries WHERE group_id = ? ORDER BY id LIMIT 1", (group.id,)
            )
        )
        await db.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, updated_at = ?"
            " WHERE id = ? AND state = 'grouped'",
            (now, now, delivery_id),
        )
    else:
        state = "failed" if digest.error else "pending"
        made = await db.value(
            "INSERT INTO deliveries (event_id, rule, destination, title, body, format,"
            " severity, state, next_attempt_at, created_at, updated_at, last_error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (group.event_id, group.rule, group.destination, digest.title, digest.body,
             digest.format, group.severity, state, None if digest.error else now, now, now,
             digest.error),
        )  # fmt: skip
        delivery_id = int(made)
    await db.execute("UPDATE groups SET digest_id = ? WHERE id = ?", (delivery_id, group.id))
    return delivery_id


async def hold_group(db: Db, group: DueGroup, until: float, now: float) -> int | None:
    """Move a due group's messages into the quiet group of its rule and destination
    (made, due at until, if there is none); the group itself is done, sending nothing."""
    if not await _take(db, group, now):
        return None
    key = (group.rule, group.destination, QUIET_KEY)
    quiet_id = await db.value(
        "SELECT id FROM groups WHERE rule = ? AND destination = ? AND key = ?"
        " AND state = 'open' FOR UPDATE",
        key,
    )
    if quiet_id is None:
        quiet_id = await db.value(
            "INSERT INTO groups (rule, destination, key, state, count, event_id, format,"
            " severity, first_at, last_at, due_at, interval, reason)"
            " VALUES (?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, NULL, 'quiet') RETURNING id",
            (*key, group.count, group.event_id, group.format, group.severity, group.first_at,
             group.last_at, until),
        )  # fmt: skip
    else:
        await db.execute(
            "UPDATE groups SET count = count + ?, first_at = LEAST(first_at, ?),"
            " last_at = GREATEST(last_at, ?) WHERE id = ?",
            (group.count, group.first_at, group.last_at, quiet_id),
        )
    await db.execute("UPDATE deliveries SET group_id = ? WHERE group_id = ?", (quiet_id, group.id))
    return int(quiet_id)


async def waiting_groups(db: Db) -> list[dict[str, Any]]:
    rows = await db.all(
        "SELECT id, rule, destination, key, reason, count, first_at, last_at, due_at"
        " FROM groups WHERE state != 'sent' ORDER BY due_at, id"
    )
    return [group_view(row) for row in rows]


async def send_group_now(db: Db, group_id: int, now: float) -> bool:
    changed = await db.execute(
        "UPDATE groups SET due_at = LEAST(due_at, ?) WHERE id = ? AND state != 'sent'",
        (now, group_id),
    )
    return changed == 1
