"""Groups in SQLite: a message and its group membership commit together, and the time a
group is due is stored, so a digest goes out once, on time, across SIGKILL and reload."""

from __future__ import annotations

import sqlite3
from typing import Any

from relayhook.model import Grouping, Message
from relayhook.store.base import Digest, DueGroup
from relayhook.store.rows import QUIET_KEY, group_view, member_of, throttle_key

__all__ = [
    "close_group",
    "due_groups",
    "group_members",
    "hold_group",
    "hold_quiet",
    "join_group",
    "next_group_due",
    "send_group_now",
    "throttled",
    "waiting_groups",
]


def join_group(
    conn: sqlite3.Connection,
    event_id: int,
    m: Message,
    now: float,
    g: Grouping | None = None,
    reason: str = "wait",
) -> int:
    """The id of the open group m joins (made if there is none), counted and timed; by
    m's own grouping unless g is given (a throttle's hold)."""
    g = g or m.grouping
    assert g is not None
    row = conn.execute(
        "SELECT id, count FROM groups WHERE rule = ? AND destination = ? AND key = ?"
        " AND state = 'open'",
        (m.rule, m.destination, g.key),
    ).fetchone()
    if row is None:
        due = _not_before(conn, m, g, now + g.wait)
        cur = conn.execute(
            "INSERT INTO groups (rule, destination, key, state, count, event_id, format,"
            " severity, first_at, last_at, due_at, interval, reason)"
            " VALUES (?, ?, ?, 'open', 1, ?, ?, ?, ?, ?, ?, ?, ?)",
            (m.rule, m.destination, g.key, event_id, m.format, m.severity, now, now, due,
             g.interval, reason),
        )  # fmt: skip
        group_id, count = int(cur.lastrowid or 0), 1
    else:
        group_id, count = int(row[0]), int(row[1]) + 1
        conn.execute(
            "UPDATE groups SET count = ?, last_at = ? WHERE id = ?", (count, now, group_id)
        )
    if g.max is not None and count >= g.max:
        # Full: it takes no more, and goes as soon as the interval allows.
        conn.execute(
            "UPDATE groups SET state = 'full', due_at = ?, reason = 'max' WHERE id = ?",
            (_not_before(conn, m, g, now, group_id), group_id),
        )
    return group_id


def _not_before(
    conn: sqlite3.Connection, m: Message, g: Grouping, due: float, group_id: int = 0
) -> float:
    """due, or later: an interval after the key's last digest, sent or set to go (full)."""
    if g.interval is None:
        return due
    last = conn.execute(
        "SELECT MAX(COALESCE(sent_at, due_at)) FROM groups WHERE rule = ? AND destination = ?"
        " AND key = ? AND state != 'open' AND id != ?",
        (m.rule, m.destination, g.key, group_id),
    ).fetchone()[0]
    return due if last is None else max(due, float(last) + g.interval)


def due_groups(conn: sqlite3.Connection, now: float, limit: int) -> list[DueGroup]:
    rows = conn.execute(
        "SELECT id, rule, destination, key, count, event_id, format, severity, first_at,"
        " last_at, reason FROM groups WHERE state != 'sent' AND due_at <= ? ORDER BY due_at"
        " LIMIT ?",
        (now, limit),
    )
    return [DueGroup(*row) for row in rows]


def next_group_due(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT MIN(due_at) FROM groups WHERE state != 'sent'").fetchone()
    return None if row[0] is None else float(row[0])


def group_members(conn: sqlite3.Connection, group_id: int, limit: int) -> list[dict[str, Any]]:
    """The first `limit` messages of a group, in arrival order, as a digest lists them."""
    return [
        member_of(row)
        for row in conn.execute(
            "SELECT d.id, d.title, d.body, d.event_id, e.event_type, e.source, e.received_at,"
            " d.item FROM deliveries d JOIN events e ON e.id = d.event_id"
            " WHERE d.group_id = ? ORDER BY d.id LIMIT ?",
            (group_id, limit),
        )
    ]


def close_group(
    conn: sqlite3.Connection, group: DueGroup, digest: Digest | None, now: float
) -> int | None:
    """Send a due group once: its digest as a new delivery (failed when it did not
    render), or its only message as itself when digest is None. The delivery that goes,
    or None when the group was sent already."""
    cur = conn.execute(
        "UPDATE groups SET state = 'sent', sent_at = ? WHERE id = ? AND state != 'sent'",
        (now, group.id),
    )
    if cur.rowcount != 1:
        return None
    # Sent later than it was due (a busy or stopped daemon): the key's next groups keep
    # their interval from now, not from when this one was due.
    conn.execute(
        "UPDATE groups SET due_at = MAX(due_at, ? + interval) WHERE rule = ? AND"
        " destination = ? AND key = ? AND state != 'sent' AND interval IS NOT NULL",
        (now, group.rule, group.destination, group.key),
    )
    if digest is None:
        row = conn.execute(
            "SELECT id FROM deliveries WHERE group_id = ? ORDER BY id LIMIT 1", (group.id,)
        ).fetchone()
        digest_id = int(row[0])
        conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, updated_at = ?"
            " WHERE id = ? AND state = 'grouped'",
            (now, now, digest_id),
        )
    else:
        state = "failed" if digest.error else "pending"
        cur = conn.execute(
            "INSERT INTO deliveries (event_id, rule, destination, title, body, format, severity,"
            " state, next_attempt_at, created_at, updated_at, last_error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (group.event_id, group.rule, group.destination, digest.title, digest.body,
             digest.format, group.severity, state, None if digest.error else now, now, now,
             digest.error),
        )  # fmt: skip
        digest_id = int(cur.lastrowid or 0)
    conn.execute("UPDATE groups SET digest_id = ? WHERE id = ?", (digest_id, group.id))
    return digest_id


def throttled(conn: sqlite3.Connection, event_id: int, m: Message, now: float) -> int | None:
    """Count m against its throttle: None while under the limit, else the group it is held
    in until its window ends (one digest, reason 'throttle')."""
    t = m.throttle
    assert t is not None
    row = conn.execute(
        "SELECT window_start, count FROM throttles WHERE rule = ? AND destination = ? AND key = ?",
        (m.rule, m.destination, t.key),
    ).fetchone()
    if row is None or now >= float(row[0]) + t.per:
        start, count = now, 1
    else:
        start, count = float(row[0]), int(row[1]) + 1
    conn.execute(
        "INSERT INTO throttles (rule, destination, key, window_start, count)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (rule, destination, key)"
        " DO UPDATE SET window_start = excluded.window_start, count = excluded.count",
        (m.rule, m.destination, t.key, start, count),
    )
    if count <= t.limit:
        return None
    hold = Grouping(throttle_key(t.key), start + t.per - now, None, None)
    return join_group(conn, event_id, m, now, hold, reason="throttle")


def hold_quiet(conn: sqlite3.Connection, event_id: int, m: Message, now: float) -> int:
    """The quiet-hours group m waits in until m.quiet_until (one per rule and destination)."""
    assert m.quiet_until is not None
    hold = Grouping(QUIET_KEY, max(0.0, m.quiet_until - now), None, None)
    return join_group(conn, event_id, m, now, hold, reason="quiet")


def hold_group(conn: sqlite3.Connection, group: DueGroup, until: float, now: float) -> int | None:
    """Move a due group's messages into the quiet-hours group of its rule and destination
    (made, due at until, if there is none); the group itself is done, sending nothing."""
    cur = conn.execute(
        "UPDATE groups SET state = 'sent', sent_at = ? WHERE id = ? AND state != 'sent'",
        (now, group.id),
    )
    if cur.rowcount != 1:
        return None
    row = conn.execute(
        "SELECT id FROM groups WHERE rule = ? AND destination = ? AND key = ? AND state = 'open'",
        (group.rule, group.destination, QUIET_KEY),
    ).fetchone()
    if row is None:
        cur = conn.execute(
            "INSERT INTO groups (rule, destination, key, state, count, event_id, format,"
            " severity, first_at, last_at, due_at, interval, reason)"
            " VALUES (?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, NULL, 'quiet')",
            (group.rule, group.destination, QUIET_KEY, group.count, group.event_id,
             group.format, group.severity, group.first_at, group.last_at, until),
        )  # fmt: skip
        quiet_id = int(cur.lastrowid or 0)
    else:
        quiet_id = int(row[0])
        conn.execute(
            "UPDATE groups SET count = count + ?, first_at = MIN(first_at, ?),"
            " last_at = MAX(last_at, ?) WHERE id = ?",
            (group.count, group.first_at, group.last_at, quiet_id),
        )
    conn.execute("UPDATE deliveries SET group_id = ? WHERE group_id = ?", (quiet_id, group.id))
    return quiet_id


def waiting_groups(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, rule, destination, key, reason, count, first_at, last_at, due_at"
        " FROM groups WHERE state != 'sent' ORDER BY due_at, id"
    )
    return [group_view(row) for row in rows]


def send_group_now(conn: sqlite3.Connection, group_id: int, now: float) -> bool:
    cur = conn.execute(
        "UPDATE groups SET due_at = MIN(due_at, ?) WHERE id = ? AND state != 'sent'",
        (now, group_id),
    )
    return cur.rowcount == 1
