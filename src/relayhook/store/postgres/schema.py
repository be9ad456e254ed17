"""The PostgreSQL schema and its migrations, applied at start under an advisory lock so
that instances starting together do not race."""

from __future__ import annotations

import psycopg

from relayhook.store.sql import Db

__all__ = ["MIGRATIONS", "lock_key", "migrate", "take_lock"]


def lock_key(name: str) -> int:
    """The advisory lock key of a job: its name's bytes ("relay" is 0x72656C6179)."""
    assert len(name) <= 7, name  # fits a bigint
    return int.from_bytes(name.encode(), "big")


async def take_lock(db: Db, name: str) -> bool:
    """Whether this transaction now holds the job's lock (no wait; held until it ends)."""
    return bool(await db.value("SELECT pg_try_advisory_xact_lock(?)", (lock_key(name),)))


_LOCK = lock_key("relay")  # the advisory lock migrations run under

# Each entry is applied once, in order, in one transaction; never edit one that shipped.
MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "p001_initial",
        [
            """CREATE TABLE events (
                id BIGSERIAL PRIMARY KEY,
                source TEXT NOT NULL,
                event_key TEXT NOT NULL,
                event_type TEXT NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                headers TEXT NOT NULL,
                body TEXT NOT NULL,
                state TEXT NOT NULL DEFAULT 'received',
                UNIQUE (source, event_key)
            )""",
            "CREATE INDEX events_to_route ON events (id) WHERE state = 'received'",
            "CREATE INDEX events_received_at ON events (received_at)",
            """CREATE TABLE silences (
                id BIGSERIAL PRIMARY KEY,
                matchers TEXT NOT NULL,
                starts_at DOUBLE PRECISION NOT NULL,
                ends_at DOUBLE PRECISION NOT NULL,
                comment TEXT NOT NULL,
                author TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX silences_ends ON silences (ends_at)",
            """CREATE TABLE deliveries (
                id BIGSERIAL PRIMARY KEY,
                event_id BIGINT NOT NULL,
                rule TEXT NOT NULL,
                destination TEXT NOT NULL,
                item_index INTEGER,
                title TEXT NOT NULL,
                body TEXT NOT NULL,
                format TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at DOUBLE PRECISION,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                last_error TEXT,
                replay_of BIGINT,
                severity TEXT NOT NULL DEFAULT 'info',
                silence_id BIGINT,
                item TEXT,
                group_id BIGINT,
                fallback_of BIGINT,
                fallback_id BIGINT
            )""",
            """CREATE INDEX deliveries_due ON deliveries (destination, next_attempt_at)
               WHERE state IN ('pending', 'retrying')""",
            "CREATE INDEX deliveries_state ON deliveries (state, updated_at)",
            "CREATE INDEX deliveries_state_id ON deliveries (state, id)",
            "CREATE INDEX deliveries_event ON deliveries (event_id)",
            "CREATE INDEX deliveries_rule ON deliveries (rule, created_at)",
            "CREATE INDEX deliveries_destination ON deliveries (destination, created_at)",
            "CREATE INDEX deliveries_created ON deliveries (created_at)",
            """CREATE INDEX deliveries_unfinished ON deliveries (created_at)
               WHERE state IN ('pending', 'retrying', 'sending')""",
            """CREATE INDEX deliveries_silence ON deliveries (silence_id)
               WHERE silence_id IS NOT NULL""",
            "CREATE INDEX deliveries_group ON deliveries (group_id) WHERE group_id IS NOT NULL",
            """CREATE TABLE attempts (
                id BIGSERIAL PRIMARY KEY,
                delivery_id BIGINT NOT NULL,
                number INTEGER NOT NULL,
                started_at DOUBLE PRECISION NOT NULL,
                duration_ms DOUBLE PRECISION NOT NULL,
                outcome TEXT NOT NULL,
                error TEXT,
                held BOOLEAN NOT NULL DEFAULT FALSE
            )""",
            "CREATE INDEX attempts_delivery ON attempts (delivery_id, number)",
            """CREATE TABLE groups (
                id BIGSERIAL PRIMARY KEY,
                rule TEXT NOT NULL,
                destination TEXT NOT NULL,
                key TEXT NOT NULL,
                state TEXT NOT NULL,
                count INTEGER NOT NULL,
                event_id BIGINT NOT NULL,
                format TEXT NOT NULL,
                severity TEXT NOT NULL,
                first_at DOUBLE PRECISION NOT NULL,
                last_at DOUBLE PRECISION NOT NULL,
                due_at DOUBLE PRECISION NOT NULL,
                interval DOUBLE PRECISION,
                reason TEXT NOT NULL,
                sent_at DOUBLE PRECISION,
                digest_id BIGINT
            )""",
            """CREATE UNIQUE INDEX groups_open ON groups (rule, destination, key)
               WHERE state = 'open'""",
            "CREATE INDEX groups_due ON groups (due_at) WHERE state != 'sent'",
            "CREATE INDEX groups_sent ON groups (rule, destination, key, sent_at)",
            """CREATE TABLE throttles (
                rule TEXT NOT NULL,
                destination TEXT NOT NULL,
                key TEXT NOT NULL,
                window_start DOUBLE PRECISION NOT NULL,
                count INTEGER NOT NULL,
                PRIMARY KEY (rule, destination, key)
            )""",
            """CREATE TABLE destinations (
                name TEXT PRIMARY KEY,
                circuit_open BOOLEAN NOT NULL DEFAULT FALSE,
                failures INTEGER NOT NULL DEFAULT 0,
                opened_at DOUBLE PRECISION,
                probe_every DOUBLE PRECISION NOT NULL DEFAULT 0,
                next_probe_at DOUBLE PRECISION,
                circuit_error TEXT,
                last_success_at DOUBLE PRECISION,
                last_error TEXT,
                last_error_at DOUBLE PRECISION
            )""",
        ],
    ),
    (
        "p002_leases",
        [
            # Who is sending a delivery, and until when: an instance that dies lets go
            # when its lease runs out, and another takes the delivery in its own claim.
            "ALTER TABLE deliveries ADD COLUMN lease_owner TEXT",
            "ALTER TABLE deliveries ADD COLUMN lease_until DOUBLE PRECISION",
            # An attempt finished by an instance that had lost its lease: kept, not counted.
            "ALTER TABLE attempts ADD COLUMN late BOOLEAN NOT NULL DEFAULT FALSE",
        ],
    ),
    (
        "p003_digests",
        # `test --stored` leaves digests out of what routing made: by their group.
        ["CREATE INDEX groups_digest ON groups (digest_id) WHERE digest_id IS NOT NULL"],
    ),
]


async def migrate(conn: psycopg.AsyncConnection[object]) -> list[str]:
    """Apply the migrations not applied yet; the names applied now."""
    applied_now = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS relayhook_migrations"
            " (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT name FROM relayhook_migrations")
        done = {_name(row) for row in await cur.fetchall()}
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO relayhook_migrations (name) VALUES (%s)", (name,))
            applied_now.append(name)
    return applied_now


def _name(row: object) -> str:
    """A migration's name from a row, whatever the connection's row factory."""
    return str(row["name"] if isinstance(row, dict) else row[0])  # type: ignore[index]
