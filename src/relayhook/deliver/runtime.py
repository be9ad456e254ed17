"""The config in force and a sender per destination: swapped whole on reload."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from relayhook.config.settings import Config, Destination
from relayhook.deliver.senders.base import Sender
from relayhook.deliver.senders.factory import make_sender

__all__ = ["Runtime"]


class Runtime:
    """The config in force and a sender per destination; swapped whole on reload.

    A destination whose settings a reload leaves alone keeps its sender (its connections
    and worker processes). A retired runtime closes its senders once the last attempt using
    it is done, except those a newer runtime still holds.
    """

    def __init__(
        self,
        config: Config,
        previous: Runtime | None = None,
        make: Callable[[Destination], Sender] = make_sender,
    ) -> None:
        self.config = config
        senders: dict[str, Sender] = {}
        for name, dest in config.destinations.items():
            if previous is not None and previous.config.destinations.get(name) == dest:
                senders[name] = previous.senders[name]
            else:
                senders[name] = make(dest)
        self.senders: dict[str, Sender] = senders
        # How many runtimes hold each sender, shared by every runtime of one daemon: a
        # sender closes with the last of them. Counted only once every sender was made.
        self._holders: Counter[Sender] = previous._holders if previous is not None else Counter()
        self._holders.update(senders.values())
        self._users = 0
        self._retired = False
        self._closing: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Start what the senders start ahead of the first send (worker processes)."""
        for sender in self.senders.values():
            sender.open()

    def acquire(self) -> Runtime:
        self._users += 1
        return self

    def release(self) -> None:
        self._users -= 1
        if self._retired and self._users == 0:
            self._close_soon()

    def retire(self) -> None:
        self._retired = True
        if self._users == 0:
            self._close_soon()

    def _close_soon(self) -> None:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.close())

    async def close(self) -> None:
        for sender in self.senders.values():
            self._holders[sender] -= 1
            if self._holders[sender] <= 0:
                del self._holders[sender]
                await sender.close()
