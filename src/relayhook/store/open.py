"""The store a config's `database:` names."""

from __future__ import annotations

from relayhook.store.base import Store
from relayhook.store.sqlite.store import SqliteStore

__all__ = ["open_store"]


def open_store(database: str, *, daemon: bool = False) -> Store:
    """The store for `database`; with daemon=True, the one daemon it allows (StoreBusy)."""
    return SqliteStore(database, daemon=daemon)
