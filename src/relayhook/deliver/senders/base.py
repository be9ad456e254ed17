"""What every sender offers the scheduler."""

from __future__ import annotations

from typing import Protocol

from relayhook.model import Delivery, Outcome

__all__ = ["Sender"]


class Sender(Protocol):
    """Sends one attempt and judges it; never raises for a failure it understands."""

    min_interval: float  # seconds between the starts of two sends; 0 for none

    def open(self) -> None:
        """Start what must run before the first send (worker processes)."""

    async def send(self, delivery: Delivery) -> Outcome: ...

    async def close(self) -> None: ...
