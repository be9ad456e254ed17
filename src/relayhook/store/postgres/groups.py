"""Groups in PostgreSQL: as in SQLite (a message and its group commit together, the due
time is stored), shared by every instance; the open group of a key is unique."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

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

Conn = AsyncConnection[Any]


async def _one(conn: Conn, sql: str, args: tuple[Any, ...]) -> dict[str, Any] | None:
    cur = await conn.execute(sql, args)
    row: dict[str, Any] | None = await cur.fetchone()
    return row


async def join_group(
    conn: Conn, event_id: int, m: Message, now: float, g: Grouping | None = None,
    reason: str = "wait",
) -> int:  # fmt: skip
    g = g or m.grouping
    assert g is not None
    # The open group of a key, locked, or a new one; two instances making the same one at
    # once meet at the unique index, and the loser joins the winner's.
    row = await _one(
        conn,
        "SELECT id, count FROM groups WHERE rule = %s AND destination = %s AND key = %s"
        " AND state = 'open' FOR UPDATE",
        (m.rule, m.destination, g.key),
    )
    if row is None:
        due = await _not_before(conn, m.rule, m.destination, g, now + g.wait)
        made = await _one(
            conn,
            "INSERT INTO groups (rule, destination, key, state, count, event_id, format,"
            " severity, first_at, last_at, due_at, interval, reason)"
            " VALUES (%s, %s, %s, 'open', 1, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (rule, destination, key) WHERE state = 'open' DO NOTHING RETURNING id",
            (m.rule, m.destination, g.key, event_id, m.format, m.severity, now, now, due,
             g.interval, reason),
        )  # fmt: skip
        if made is None:
            return await join_group(conn, event_id, m, now, g, reason)
        group_id, count = int(made["id"]), 1
    else:
        group_id, count = int(row["id"]), int(row["count"]) + 1
        await conn.execute(
            "UPDATE groups SET count = %s, last_at = %s WHERE id = %s", (count, now, group_id)
        )
    if g.max is not None and count >= g.max:
        due = await _not_before(conn, m.rule, m.destination, g, now, group_id)
        await conn.execute(
            "UPDATE groups SET state = 'full', due_at = %s, reason = 'max' WHERE id = %s",
            (due, group_id),
        )
    return group_id


async def _not_before(
    conn: Conn, rule: str, destination: str, g: Grouping, due: float, group_id: int = 0
) -> float:
    if g.interval is None:
        return due
    row = await _one(
        conn,
        "SELECT MAX(COALESCE(sent_at, due_at)) AS last FROM groups WHERE rule = %s"
        " AND destination = %s AND key = %s AND state != 'open' AND id != %s",
        (rule, destination, g.key, group_id),
    )
    last = None if row is None else row["last"]
    return due if last is None else max(due, float(last) + g.interval)


def _due(row: dict[str, Any]) -> DueGroup:
    return DueGroup(
        row["id"], row["rule"], row["destination"], row["key"], row["count"], row["event_id"],
        row["format"], row["severity"], row["first_at"], row["last_at"], row["reason"],
    )  # fmt: skip


async def due_groups(conn: Conn, now: float, limit: int) -> list[DueGroup]:
    cur = await conn.execute(
        "SELECT id, rule, destination, key, count, event_id, format, severity, first_at,"
        " last_at, reason FROM groups WHERE state != 'sent' AND due_at <= %s ORDER BY due_at"
        " LIMIT %s",
        (now, limit),
    )
    return [_due(row) for row in await cur.fetchall()]


async def next_group_due(conn: Conn) -> float | None:
    row = await _one(conn, "SELECT MIN(due_at) AS due FROM groups WHERE state != 'sent'", ())
    return None if row is None or row["due"] is None else float(row["due"])


async def group_members(conn: Conn, group_id: int, limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT d.id, d.title, d.body, d.event_id, e.event_type, e.source, e.received_at,"
        " d.item FROM deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE d.group_id = %s ORDER BY d.id LIMIT %s",
        (group_id, limit),
    )
    return [member_of(row) for row in await cur.fetchall()]


async def close_group(conn: Conn, group: DueGroup, digest: Digest | None, now: float) -> int | None:
    cur = await conn.execute(
        "UPDATE groups SET state = 'sent', sent_at = %s WHERE id = %s AND state != 'sent'",
        (now, group.id),
    )
    if cur.rowcount != 1:
        return None  # sent already, by this instance or another
    await conn.execute(
        "UPDATE groups SET due_at = GREATEST(due_at, %s + interval) WHERE rule = %s AND"
        " destination = %s AND key = %s AND state != 'sent' AND interval IS NOT NULL",
        (now, group.rule, group.destination, group.key),
    )
    if digest is None:
        row = await _one(
            conn, "SELECT id FROM deliveries WHERE group_id = %s ORDER BY id LIMIT 1", (group.id,)
        )
        assert row is not None
        digest_id = int(row["id"])
        await conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = %s, updated_at = %s"
            " WHERE id = %s AND state = 'grouped'",
            (now, now, digest_id),
        )
    else:
        state = "failed" if digest.error else "pending"
        made = await _one(
            conn,
            "INSERT INTO deliveries (event_id, rule, destination, title, body, format, severity,"
            " state, next_attempt_at, created_at, updated_at, last_error)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (group.event_id, group.rule, group.destination, digest.title, digest.body,
             digest.format, group.severity, state, None if digest.error else now, now, now,
             digest.error),
        )  # fmt: skip
        assert made is not None
        digest_id = int(made["id"])
    await conn.execute("UPDATE groups SET digest_id = %s WHERE id = %s", (digest_id, group.id))
    return digest_id


async def throttled(conn: Conn, event_id: int, m: Message, now: float) -> int | None:
    t = m.throttle
    assert t is not None
    # One row per key, updated in place: the row lock orders instances counting at once.
    await conn.execute(
        "INSERT INTO throttles (rule, destination, key, window_start, count)"
        " VALUES (%s, %s, %s, %s, 0) ON CONFLICT (rule, destination, key) DO NOTHING",
        (m.rule, m.destination, t.key, now),
    )
    row = await _one(
        conn,
        "SELECT window_start, count FROM throttles WHERE rule = %s AND destination = %s"
        " AND key = %s FOR UPDATE",
        (m.rule, m.destination, t.key),
    )
    assert row is not None
    if row["count"] == 0 or now >= float(row["window_start"]) + t.per:
        start, count = now, 1
    else:
        start, count = float(row["window_start"]), int(row["count"]) + 1
    await conn.execute(
        "UPDATE throttles SET window_start = %s, count = %s WHERE rule = %s AND destination = %s"
        " AND key = %s",
        (start, count, m.rule, m.destination, t.key),
    )
    if count <= t.limit:
        return None
    hold = Grouping(throttle_key(t.key), start + t.per - now, None, None)
    return await join_group(conn, event_id, m, now, hold, reason="throttle")


async def hold_quiet(conn: Conn, event_id: int, m: Message, now: float) -> int:
    assert m.quiet_until is not None
    hold = Grouping(QUIET_KEY, max(0.0, m.quiet_until - now), None, None)
    return await join_group(conn, event_id, m, now, hold, reason="quiet")


async def hold_group(conn: Conn, group: DueGroup, until: float, now: float) -> int | None:
    cur = await conn.execute(
        "UPDATE groups SET state = 'sent', sent_at = %s WHERE id = %s AND state != 'sent'",
        (now, group.id),
    )
    if cur.rowcount != 1:
        return None
    row = await _one(
        conn,
        "SELECT id FROM groups WHERE rule = %s AND destination = %s AND key = %s"
        " AND state = 'open' FOR UPDATE",
        (group.rule, group.destination, QUIET_KEY),
    )
    if row is None:
        made = await _one(
            conn,
            "INSERT INTO groups (rule, destination, key, state, count, event_id, format,"
            " severity, first_at, last_at, due_at, interval, reason)"
            " VALUES (%s, %s, %s, 'open', %s, %s, %s, %s, %s, %s, %s, NULL, 'quiet')"
            " RETURNING id",
            (group.rule, group.destination, QUIET_KEY, group.count, group.event_id,
             group.format, group.severity, group.first_at, group.last_at, until),
        )  # fmt: skip
        assert made is not None
        quiet_id = int(made["id"])
    else:
        quiet_id = int(row["id"])
        await conn.execute(
            "UPDATE groups SET count = count + %s, first_at = LEAST(first_at, %s),"
            " last_at = GREATEST(last_at, %s) WHERE id = %s",
            (group.count, group.first_at, group.last_at, quiet_id),
        )
    await conn.execute(
        "UPDATE deliveries SET group_id = %s WHERE group_id = %s", (quiet_id, group.id)
    )
    return quiet_id


async def waiting_groups(conn: Conn) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT id, rule, destination, key, reason, count, first_at, last_at, due_at"
        " FROM groups WHERE state != 'sent' ORDER BY due_at, id"
    )
    return [group_view(row) for row in await cur.fetchall()]


async def send_group_now(conn: Conn, group_id: int, now: float) -> bool:
    cur = await conn.execute(
        "UPDATE groups SET due_at = LEAST(due_at, %s) WHERE id = %s AND state != 'sent'",
        (now, group_id),
    )
    return cur.rowcount == 1
