"""The route stage: stored events in, deliveries out, rendered off the event loop.

The database is the truth (a scan at start finds what a crash left unrouted); a bounded
in-memory queue of just-stored events only saves reading them back. Rules run in render
threads, each rule within the config's render_timeout, so a template that runs for
minutes delays neither /hooks/ nor sending, and fails alone. Batches go one after the
other, so they stay large under load; one still rendering after _SLOW goes on aside
while the next one starts, so a slow rule holds up only the events in its own batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from relayhook.config.settings import Config
from relayhook.model import Event, Message, Routing
from relayhook.ops.metrics import Metrics
from relayhook.route.match import route
from relayhook.store.base import Store, StoreError

__all__ = ["Mark", "RouteStage", "route_event"]

# A noise stage between what the rules made and what is saved: the routings of a batch
# (its events by id, the config in force, now) in, the same routings with the messages
# it takes marked out (silenced, held until quiet hours end).
Mark = Callable[[Config, Mapping[int, Event], Sequence[Routing], float], Awaitable[list[Routing]]]

logger = logging.getLogger("relayhook.route")
_BATCH = 256
_FRESH_MAX = 10_000  # events held in memory for routing; past this, read from the database
_IDLE_POLL = 1.0
_THREADS = 4  # batches rendering at once
_SLOW = 0.05  # seconds a batch renders before the next one may start beside it
_ADOPT_AFTER = 5.0  # seconds an event waits on a shared database before anyone routes it


def route_event(config: Config, event: Event) -> tuple[Message, ...]:
    """Every message the rules in force make of one stored event; failures are logged."""
    if event.error is not None:
        logger.error(
            "event %s could not be routed (%s); kept as unrouted",
            event.id,
            event.error,
            extra={"event_id": event.id},
        )
        return ()
    try:
        outcomes = route(config.rules, config.destinations, event, config.render_timeout)
    except Exception:
        logger.exception(
            "event %s could not be routed; kept as unrouted", event.id, extra={"event_id": event.id}
        )
        return ()
    for o in outcomes:
        if o.error:
            logger.warning(
                "event %s: rule %s failed: %s",
                event.id,
                o.rule.name,
                o.error,
                extra={"event_id": event.id, "rule": o.rule.name},
            )
    messages = tuple(m for o in outcomes for m in o.messages)
    if not messages:
        logger.debug(
            "event %s (%s) matched no rule",
            event.id,
            event.event_type,
            extra={"event_id": event.id, "event_type": event.event_type},
        )
    return messages


class RouteStage:
    """Routes stored events into deliveries, in batches."""

    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        metrics: Metrics,
        routed: Callable[[bool], None],
        marks: Sequence[Mark] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._marks = tuple(marks)  # in their order (pipeline.py)
        self._config = config
        self.metrics = metrics
        # Told when new deliveries may be waiting, and whether groups may have grown.
        self._routed = routed
        self.clock = clock
        self._fresh: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._rescan = True
        self._pool = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="relayhook-render")
        self._slots = asyncio.Semaphore(_THREADS)
        self._routing: set[int] = set()  # events in a batch being routed now
        self._batches: set[asyncio.Task[None]] = set()
        self._rules_of: Config | None = None
        self._takers: dict[tuple[str, str], bool] = {}
        self._shared = store.lease is not None  # other instances store events too
        self._adopt_at = 0.0  # clock time of the next look for events nobody routed

    def hint(self, event: Event) -> None:
        """A new event is committed: route it from memory, without reading it back."""
        if len(self._fresh) < _FRESH_MAX:
            self._fresh.append(event)
        else:
            self._rescan = True  # too many waiting: the database scan catches the rest
        self._wake.set()

    def wake(self) -> None:
        """Look for work now (a new config may route what waits differently)."""
        self._wake.set()

    async def _next_batch(self) -> list[Event]:
        now = self.clock()
        # (A look at once, too, if the clock went back past the last one.)
        if self._shared and not 0 < self._adopt_at - now <= _ADOPT_AFTER:
            # Instances on one database each route what they stored, from memory; an event
            # still waiting after _ADOPT_AFTER lost its instance (killed before routing it)
            # and is taken over here, however busy this instance is with its own.
            self._adopt_at = now + _ADOPT_AFTER
            adopted = await self._scan()
            if adopted:
                return adopted
        if self._fresh:
            return [self._fresh.popleft() for _ in range(min(len(self._fresh), _BATCH))]
        if self._rescan:
            batch = await self._scan()
            self._rescan = len(batch) == _BATCH
            return batch
        return []

    async def _scan(self) -> list[Event]:
        """Events waiting in the database that this instance is not routing or about to
        (on a shared database: only those older than _ADOPT_AFTER, the younger being
        their own instance's, which would otherwise be rendered twice)."""
        received_before = self.clock() - _ADOPT_AFTER if self._shared else None
        # A bounded read: behind a backlog of its own older than _ADOPT_AFTER, an instance
        # adopts others' events once it has caught up (no scan of thousands every time).
        found = await self.store.events_to_route(_BATCH + len(self._routing), received_before)
        queued = {e.id for e in self._fresh} if self._fresh else set()
        return [e for e in found if e.id not in self._routing and e.id not in queued][:_BATCH]

    async def run(self) -> None:
        self._rescan = True
        while True:
            batch = await self._next_batch()
            if not batch:
                # Quiet for a while: look in the database too, in case a hint was lost.
                woken = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_IDLE_POLL):
                        woken = await self._wake.wait()
                self._wake.clear()
                # A wake-up without hints (after a failed batch, or a reload) asked for a
                # scan itself; only a quiet second adds one.
                self._rescan = self._rescan or not woken
                continue
            config = self._config()
            if not any(self._has_rules(config, e) for e in batch):
                # No template to run: routed right here, with no task or thread to pay
                # for (measured: ~10% of durable ingest when every batch had them).
                await self._route_batch(batch, len(batch))
                continue
            await self._slots.acquire()
            ids = {e.id for e in batch}
            self._routing.update(ids)
            task = asyncio.create_task(self._aside(batch, ids))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            await asyncio.wait({task}, timeout=_SLOW)

    async def _aside(self, batch: list[Event], ids: set[int]) -> None:
        try:
            await self._route_batch(batch, len(ids))
        finally:
            self._routing.difference_update(ids)
            self._slots.release()

    def _has_rules(self, config: Config, event: Event) -> bool:
        """Whether any rule takes this event's type and source (memoised per config)."""
        if config is not self._rules_of:
            self._rules_of, self._takers = config, {}
        key = (event.source, event.event_type)
        found = self._takers.get(key)
        if found is None:
            found = self._takers[key] = any(
                rule.matches_type(event.event_type) and rule.source in (None, event.source)
                for rule in config.rules
            )
        return found and event.error is None

    async def _route_batch(self, batch: list[Event], size: int) -> None:
        try:
            config = self._config()
            # Events no rule takes are routed here at once: they run no template.
            rendering: list[Event] = []
            routings: list[Routing] = []
            for event in batch:
                if self._has_rules(config, event):
                    rendering.append(event)
                else:
                    routings.append(Routing(event.id, route_event(config, event)))
            if rendering:
                routings += await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._route_all, config, rendering
                )
            # The marks in their order, then the store places each message as it saves
            # (policy/noise.py: failed, silenced, throttle, group, quiet hours, due).
            events = {e.id: e for e in batch}
            for mark in self._marks:
                routings = await mark(config, events, routings, self.clock())
            saved = await self.store.save_routings(routings, self.clock())
            self._count(routings, saved)
            self._routed(any(m.may_wait for r in routings for m in r.messages))
        except StoreError as e:
            logger.error("could not save the routing of %d events (%s); retrying", size, e)
            # A pause (a full disk should not turn into a busy loop), then routed again
            # from memory, first: a scan on a shared database would leave them for
            # seconds, taking them for another instance's. (No await after the requeue:
            # they leave _routing before the loop can take them again.)
            await asyncio.sleep(_IDLE_POLL)
            self._fresh.extendleft(reversed(batch))
            self._wake.set()
        except Exception:
            logger.exception("routing %d events failed; retrying", size)
            await self._retry_later()

    async def _retry_later(self) -> None:
        # They are still waiting on disk: a scan finds them after a pause (a full disk
        # should not turn into a busy loop).
        await asyncio.sleep(_IDLE_POLL)
        self._rescan = True
        self._wake.set()

    @staticmethod
    def _route_all(config: Config, batch: Sequence[Event]) -> list[Routing]:
        return [Routing(event.id, route_event(config, event)) for event in batch]

    def _count(self, routings: Sequence[Routing], saved: Sequence[bool]) -> None:
        routed, unrouted = (
            self.metrics.routed.labels("routed"),
            self.metrics.routed.labels("unrouted"),
        )
        for routing, fresh in zip(routings, saved, strict=True):
            if not fresh:
                continue
            (routed if routing.messages else unrouted).inc()
            for m in routing.messages:
                if m.error:
                    self.metrics.notifications.labels(m.destination, "failed").inc()
                elif m.silence_id is not None:
                    self.metrics.suppressed.labels(m.destination, "silenced").inc()

    async def stop(self) -> None:
        """Stop routing; what was not saved is still waiting on disk for the next start."""
        for task in self._batches:
            task.cancel()
        await asyncio.gather(*self._batches, return_exceptions=True)
        # A render in progress ends within its budget; nothing waits for it.
        self._pool.shutdown(wait=False, cancel_futures=True)
