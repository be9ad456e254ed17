"""The store a config's `database:` names: a SQLite file, or a PostgreSQL server."""

from __future__ import annotations

import os

from relayhook.store.base import Store
from relayhook.store.sqlite.store import SqliteStore

__all__ = ["is_server", "log_exists", "open_store"]

_SERVER_SCHEMES = ("postgresql://", "postgres://")


def is_server(database: str) -> bool:
    """Whether `database` names a PostgreSQL server rather than a SQLite file."""
    return database.startswith(_SERVER_SCHEMES)


def log_exists(database: str) -> bool:
    """Whether there is a log to read: a SQLite file that exists, or any server."""
    return is_server(database) or os.path.exists(database)


def open_store(database: str, *, daemon: bool = False, lease: float = 60.0) -> Store:
    """The store for `database`; with daemon=True, SQLite allows one daemon (StoreBusy)
    while PostgreSQL serves several, each taking deliveries under a lease."""
    if is_server(database):
        from relayhook.store.postgres.store import PostgresStore  # psycopg only when used

        return PostgresStore(database, lease=lease)
    return SqliteStore(database, daemon=daemon)
