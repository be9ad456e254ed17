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
        self._writing: tuple[asyncio.Future[None], list[Attempt]] | None = None
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
        if self._writing is not None:
            # A write our caller stopped waiting for (shutdown) went on in the store: its
            # outcome decides, or the same attempts would be written twice.
            await self._settle(*self._writing)
        if not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        write = asyncio.ensure_future(self.store.record_attempts(batch))
        self._writing = (write, batch)
        await self._settle(write, batch)

    async def _settle(self, write: asyncio.Future[None], batch: list[Attempt]) -> None:
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            if write.done():
                self._writing = None
                self._finish(write, batch)
            raise  # still writing: the next flush waits for it
        except BaseException:
            self._writing = None
            self._waiting[:0] = batch  # written with the next batch; still busy until then
            raise
        self._writing = None
        self._written([a.delivery_id for a in batch])

    def _finish(self, write: asyncio.Future[None], batch: list[Attempt]) -> None:
        if write.cancelled() or write.exception() is not None:
            self._waiting[:0] = batch
        else:
            self._written([a.delivery_id for a in batch])
