"""The recorder: writes finished attempts to the log in batches.

A delivery stays busy (never picked again) from its claim until its attempt is written;
a crash before the write leaves it due, to be tried again: at least once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from relayhook.model import Attempt
from relayhook.store.base import Store

__all__ = ["Recorder"]


class Recorder:
    """Batches attempts into one write; keeps a batch that failed for the next one."""

    def __init__(self, store: Store, written: Callable[[list[int]], None]) -> None:
        self.store = store
        self._written = written  # told the delivery ids once their attempts are on disk
        self._waiting: list[Attempt] = []
        self._wake = asyncio.Event()

    def add(self, attempt: Attempt) -> None:
        self._waiting.append(attempt)
        self._wake.set()

    async def run(self) -> None:
        while True:
            if not self._waiting:  # after a failed write, they are still waiting
                await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        try:
            await self.store.record_attempts(batch)
        except BaseException:
            self._waiting[:0] = batch  # written with the next batch; still busy until then
            raise
        self._written([a.delivery_id for a in batch])
