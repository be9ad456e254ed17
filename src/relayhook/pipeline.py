"""The stages after the ack, in their order, written once here (as Alertmanager's
notify.go composes its MultiStage).

    /hooks/ ─accept─► store ─hint─► route: render ─► silence ─► quiet ─► save ─┐
    ┌───────────────── (policy/noise.py places each message as it is saved) ◄──┘
    └─► groups (due digests) ─wake─► schedule (circuit, silence again) ─► send ─► record

STAGES below is that order: each is a loop the Pipeline starts, under a supervisor
that restarts it after an error (a full disk, a locked database): the state it needs is
on disk or kept aside. MARKS are the noise stages the route stage runs on each batch
between rendering and saving. The HTTP handler sees only its Intake (the config in
force, and "accept this event"), which the Pipeline is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from relayhook.config.settings import Config
from relayhook.deliver.circuit import Circuits
from relayhook.deliver.runtime import Runtime
from relayhook.deliver.scheduler import Scheduler
from relayhook.model import Event, NewEvent
from relayhook.ops.metrics import Metrics
from relayhook.route.groups import GroupStage
from relayhook.route.noise import Silences
from relayhook.route.quiet import mark_quiet
from relayhook.route.stage import Mark, RouteStage
from relayhook.store.base import Store, StoreError
from relayhook.text.units import format_duration

__all__ = ["Pipeline"]

logger = logging.getLogger("relayhook.pipeline")
_RESTART = 1.0


class Pipeline:
    """Owns the runtime in force and the stages; the /hooks/ handler's Intake."""

    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """clock gives the Unix time every stage reads; monotonic, the scheduler's pacing
        and rests (min_interval, Retry-After), which a change of wall time must not move."""
        self.store = store
        self.runtime = runtime
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.silences = Silences(store, self.metrics, clock)
        self.circuits = Circuits(store, self.metrics)
        self.scheduler = Scheduler(
            store,
            lambda: self.runtime,
            self.metrics,
            clock,
            monotonic,
            silences=self.silences,
            circuits=self.circuits,
        )
        self.groups = GroupStage(
            store, lambda: self.runtime.config, self.metrics, self.scheduler.wake, clock
        )
        # The noise stages on each routed batch, in this order, before it is saved.
        marks: tuple[Mark, ...] = (self.silences.mark, mark_quiet)
        self.router = RouteStage(
            store, lambda: self.runtime.config, self.metrics, self._routed, marks, clock
        )
        # The loops, in the order the data flows through them.
        self.stages: tuple[tuple[str, Callable[[], Awaitable[None]]], ...] = (
            ("router", self.router.run),  # stored events → rendered, marked, placed
            ("groups", self.groups.run),  # due groups → digests
            ("scheduler", self.scheduler.run),  # due deliveries → senders
            ("recorder", self.scheduler.recorder.run),  # outcomes → the delivery log
            # Beside them: upkeep of what the stages share.
            ("orphans", self._orphans),
            ("leases", self.scheduler.renew_leases),
            ("circuits", self.scheduler.share_circuits),
            ("listen", self._listen),
        )
        self._loops: list[asyncio.Task[None]] = []
        self._chores: set[asyncio.Task[None]] = set()
        self._stopping = False

    def _routed(self, grouped: bool) -> None:
        self.scheduler.wake()
        if grouped:
            self.groups.wake()  # a group may have filled up

    @property
    def config(self) -> Config:
        return self.runtime.config

    async def accept(self, event: NewEvent) -> tuple[int, bool]:
        event_id, duplicate = await self.store.add_event(event)
        if not duplicate:
            self.router.hint(
                Event(
                    event_id,
                    event.source,
                    event.event_type,
                    event.received_at,
                    event.headers,
                    event.body,
                )
            )
        return event_id, duplicate

    async def start(self) -> None:
        self.runtime.open()
        recovered = await self.store.recover(self.clock())
        if recovered:
            logger.info(
                "retrying %d deliveries that were in flight when relayhook stopped", recovered
            )
        await self.circuits.load()
        await self._report_orphans(self.runtime.config)
        self._loops = [
            asyncio.create_task(self._supervise(name, loop), name=f"relayhook-{name}")
            for name, loop in self.stages
        ]

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        while not self._stopping:
            try:
                await loop()
            except StoreError as e:
                logger.error("%s: database error (%s); trying again in %gs", name, e, _RESTART)
                await asyncio.sleep(_RESTART)
            except Exception:
                logger.exception("%s failed; starting it again in %gs", name, _RESTART)
                await asyncio.sleep(_RESTART)

    def swap(self, runtime: Runtime) -> None:
        """Put a new config in force; attempts already running finish on the old one."""
        old, self.runtime = self.runtime, runtime
        old.retire()
        runtime.open()
        self.circuits.follow_config(runtime.config.destinations)
        task = asyncio.get_running_loop().create_task(self._report_orphans(runtime.config))
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)
        self.router.wake()
        self.scheduler.wake()

    async def _report_orphans(self, config: Config) -> None:
        """Say which waiting deliveries name a destination the config no longer has.

        The scheduler only sends to configured destinations, so these wait, on disk, until
        the destination is configured again (a rename looks like a removal).
        """
        waiting = await self.store.waiting_by_destination()
        for name, count in sorted(waiting.items()):
            if name not in config.destinations:
                logger.warning(
                    "%d deliveries wait for destination '%s', which the config no longer has;"
                    " they are kept until it is configured again, or for orphan_after (%s)",
                    count,
                    name,
                    format_duration(config.orphan_after),
                    extra={"destination": name},
                )

    async def _listen(self) -> None:
        """Wake the stage that has new work another instance stored (PostgreSQL)."""

        def heard(topic: str) -> None:
            if topic == "deliveries":
                self.scheduler.wake()
            elif topic == "groups":
                self.groups.wake()

        await self.store.listen(heard)

    async def _orphans(self) -> None:
        """Deliveries to a destination gone from the config for orphan_after go dead."""
        while True:
            config = self.runtime.config
            now = self.clock()
            found = await self.store.orphans(
                list(config.destinations), now - config.orphan_after, now
            )
            for name, count in sorted(found.items()):
                logger.warning(
                    "%d deliveries to destination '%s' are now dead: it has not been in the"
                    " config for orphan_after (%s)",
                    count,
                    name,
                    format_duration(config.orphan_after),
                    extra={"destination": name},
                )
                self.metrics.notifications.labels(name, "dead").inc(count)
            await asyncio.sleep(min(60.0, max(0.5, config.orphan_after / 4)))

    @property
    def running(self) -> bool:
        return bool(self._loops) and not any(t.done() for t in self._loops)

    @property
    def in_flight(self) -> int:
        return self.scheduler.in_flight

    async def stop(self, drain_timeout: float) -> None:
        """Stop taking work; let attempts in flight finish up to drain_timeout."""
        self._stopping = True
        for task in [*self._loops, *self._chores]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._chores, return_exceptions=True)
        await self.router.stop()
        await self.scheduler.drain(drain_timeout)
