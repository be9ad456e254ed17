"""The noise stages between routing and sending; today the first of them, silences.

Silences live in the database (the CLI adds them beside a running daemon), so the
stage keeps the ones in force in memory and reads them again at most every _REFRESH
seconds: a new silence takes hold within that, an expired one lets go within it. A
message is checked when it is made and again before each attempt (the scheduler asks
`muting`), so work that waited through an outage is muted too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence

from relayhook.config.settings import Config
from relayhook.model import Event, Message, Routing
from relayhook.ops.metrics import Metrics
from relayhook.policy.silence import Silence, facts_of, silencing
from relayhook.store.base import Store

__all__ = ["Silences"]

logger = logging.getLogger("relayhook.route")
_REFRESH = 1.0


class Silences:
    """The silences in force, refreshed from the store; mutes messages that match."""

    def __init__(
        self, store: Store, metrics: Metrics, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self._active: list[Silence] = []
        self._read_at = -math.inf

    async def refresh(self) -> list[Silence]:
        now = self.clock()
        # Read again every _REFRESH seconds of the clock, or at once if it went back.
        if not 0 <= now - self._read_at < _REFRESH:
            self._active = await self.store.active_silences(now)
            self._read_at = now
        return self._active

    async def mark(
        self, config: Config, events: Mapping[int, Event], routings: Sequence[Routing], now: float
    ) -> list[Routing]:
        """The routings with every message an active silence matches marked silenced."""
        silences = await self.refresh()
        if not silences:
            return list(routings)
        out = []
        for routing in routings:
            event = events[routing.event_id]
            messages = tuple(
                self._check(silences, event, m, now) if m.error is None else m
                for m in routing.messages
            )
            out.append(Routing(routing.event_id, messages))
        return out

    def _check(
        self, silences: Sequence[Silence], event: Event, message: Message, now: float
    ) -> Message:
        found = silencing(silences, facts_of(event, message), now)
        if found is None:
            return message
        return dataclasses.replace(message, silence_id=found.id)  # counted once saved

    async def muting(self, ids: Sequence[int]) -> dict[int, int]:
        """Of these deliveries about to be tried, the ones a silence mutes now: {id:
        silence id}. Reads their facts only while some silence is in force."""
        silences = await self.refresh()
        if not silences or not ids:
            return {}
        now = self.clock()
        facts = await self.store.silence_facts(ids)
        muted = {}
        for delivery_id, fact in facts.items():
            if fact.replay:
                continue  # a person asked for this one: a silence does not take it back
            found = silencing(silences, fact, now)
            if found is not None:
                muted[delivery_id] = found.id
        return muted
