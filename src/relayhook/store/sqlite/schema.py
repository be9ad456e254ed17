"""The SQLite schema, its migrations, and how a connection is opened."""

from __future__ import annotations

import contextlib
import os
import sqlite3

import sqlite_utils
from sqlite_utils.migrations import Migrations

__all__ = ["connect", "migrate", "shrink"]

migrations = Migrations("relayhook")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    for statement in (
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            event_key TEXT NOT NULL,
            event_type TEXT NOT NULL,
            received_at REAL NOT NULL,
            headers TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'received',
            UNIQUE (source, event_key)
        )""",
        "CREATE INDEX events_to_route ON events (id) WHERE state = 'received'",
        "CREATE INDEX events_received_at ON events (received_at)",
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            event_id INTEGER NOT NULL,
            rule TEXT NOT NULL,
            destination TEXT NOT NULL,
            item_index INTEGER,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            format TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_error TEXT,
            replay_of INTEGER REFERENCES deliveries (id)
        )""",
        # The scheduler's query: due work per destination.
        """CREATE INDEX deliveries_due ON deliveries (destination, next_attempt_at)
           WHERE state IN ('pending', 'retrying')""",
        "CREATE INDEX deliveries_state ON deliveries (state, updated_at)",
        "CREATE INDEX deliveries_event ON deliveries (event_id)",
        "CREATE INDEX deliveries_rule ON deliveries (rule, created_at)",
        "CREATE INDEX deliveries_destination ON deliveries (destination, created_at)",
        "CREATE INDEX deliveries_created ON deliveries (created_at)",
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
            number INTEGER NOT NULL,
            started_at REAL NOT NULL,
            duration_ms REAL NOT NULL,
            outcome TEXT NOT NULL,
            error TEXT
        )""",
        "CREATE INDEX attempts_delivery ON attempts (delivery_id, number)",
    ):
        db.execute(statement)


@migrations()
def m002_unfinished_index(db: sqlite_utils.Database) -> None:
    # For the age of the oldest unfinished delivery, read at every /metrics scrape.
    db.execute(
        "CREATE INDEX deliveries_unfinished ON deliveries (created_at)"
        " WHERE state IN ('pending', 'retrying', 'sending')"
    )


@migrations(transactional=False)
def m003_incremental_vacuum(db: sqlite_utils.Database) -> None:
    # So that pruning can hand pages back to the file system (new files get it at creation).
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")


@migrations()
def m004_severity(db: sqlite_utils.Database) -> None:
    # info, success, warning or failure: the notify type the message is sent with.
    db.execute("ALTER TABLE deliveries ADD COLUMN severity TEXT NOT NULL DEFAULT 'info'")


@migrations()
def m005_silences(db: sqlite_utils.Database) -> None:
    for statement in (
        """CREATE TABLE silences (
            id INTEGER PRIMARY KEY,
            matchers TEXT NOT NULL,
            starts_at REAL NOT NULL,
            ends_at REAL NOT NULL,
            comment TEXT NOT NULL,
            author TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX silences_ends ON silences (ends_at)",
        # The silence that muted a delivery, and the for_each item it was made from (what
        # item.<path> matchers read when a delivery is checked again before an attempt).
        "ALTER TABLE deliveries ADD COLUMN silence_id INTEGER REFERENCES silences (id)",
        "ALTER TABLE deliveries ADD COLUMN item TEXT",
        "CREATE INDEX deliveries_silence ON deliveries (silence_id) WHERE silence_id IS NOT NULL",
    ):
        db.execute(statement)


@migrations()
def m006_groups(db: sqlite_utils.Database) -> None:
    for statement in (
        # A group is open (taking messages), full (reached max: taking no more) or sent.
        # No foreign keys: retention deletes old events and deliveries, and a sent group
        # may outlive them for a while.
        """CREATE TABLE groups (
            id INTEGER PRIMARY KEY,
            rule TEXT NOT NULL,
            destination TEXT NOT NULL,
            key TEXT NOT NULL,
            state TEXT NOT NULL,
            count INTEGER NOT NULL,
            event_id INTEGER NOT NULL,
            format TEXT NOT NULL,
            severity TEXT NOT NULL,
            first_at REAL NOT NULL,
            last_at REAL NOT NULL,
            due_at REAL NOT NULL,
            interval REAL,
            reason TEXT NOT NULL,
            sent_at REAL,
            digest_id INTEGER
        )""",
        # At most one group per key takes messages; the scheduler of digests reads by due.
        """CREATE UNIQUE INDEX groups_open ON groups (rule, destination, key)
           WHERE state = 'open'""",
        "CREATE INDEX groups_due ON groups (due_at) WHERE state != 'sent'",
        "CREATE INDEX groups_sent ON groups (rule, destination, key, sent_at)",
        "ALTER TABLE deliveries ADD COLUMN group_id INTEGER",
        "CREATE INDEX deliveries_group ON deliveries (group_id) WHERE group_id IS NOT NULL",
    ):
        db.execute(statement)


@migrations()
def m007_throttles(db: sqlite_utils.Database) -> None:
    # The window each throttle key is in: from its first message, `per` seconds long.
    db.execute(
        """CREATE TABLE throttles (
            rule TEXT NOT NULL,
            destination TEXT NOT NULL,
            key TEXT NOT NULL,
            window_start REAL NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (rule, destination, key)
        )"""
    )


@migrations()
def m008_destinations(db: sqlite_utils.Database) -> None:
    for statement in (
        # Per destination: its circuit (written on each change, so an open one stays open
        # across a restart) and how its last attempts went (written with the attempts).
        """CREATE TABLE destinations (
            name TEXT PRIMARY KEY,
            circuit_open INTEGER NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0,
            opened_at REAL,
            probe_every REAL NOT NULL DEFAULT 0,
            next_probe_at REAL,
            circuit_error TEXT,
            last_success_at REAL,
            last_error TEXT,
            last_error_at REAL
        )""",
        # A probe's failure is in the log but spends none of its delivery's attempts.
        "ALTER TABLE attempts ADD COLUMN held INTEGER NOT NULL DEFAULT 0",
        # A dead delivery and the one that stood in for it at its fallback, both ways.
        "ALTER TABLE deliveries ADD COLUMN fallback_of INTEGER",
        "ALTER TABLE deliveries ADD COLUMN fallback_id INTEGER",
    ):
        db.execute(statement)


@migrations()
def m009_deliveries_by_state(db: sqlite_utils.Database) -> None:
    # The pages list a state's deliveries newest first, a page at a time.
    db.execute("CREATE INDEX deliveries_state_id ON deliveries (state, id)")


@migrations()
def m010_late_attempts(db: sqlite_utils.Database) -> None:
    # Only PostgreSQL instances, which lease deliveries, log a late attempt; a log copied
    # from one keeps them.
    db.execute("ALTER TABLE attempts ADD COLUMN late INTEGER NOT NULL DEFAULT 0")


@migrations()
def m011_digests(db: sqlite_utils.Database) -> None:
    # `test --stored` leaves digests out of what routing made: by their group.
    db.execute("CREATE INDEX groups_digest ON groups (digest_id) WHERE digest_id IS NOT NULL")


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (we BEGIN ourselves), WAL, durable commits."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def migrate(path: str) -> None:
    """Create the database and apply pending schema migrations, each in a transaction."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes on a new, empty file
        conn.execute("PRAGMA journal_mode=WAL")
        migrations.apply(sqlite_utils.Database(conn))


def shrink(conn: sqlite3.Connection) -> None:
    """Return free pages to the file system; outside any transaction."""
    # sqlite3's execute() steps this pragma once, freeing one page; executescript() runs
    # it to the end.
    conn.executescript("PRAGMA incremental_vacuum;")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
