"""The scheduler: takes due deliveries within the limits and runs one attempt for each.

The database is the queue, so a long outage costs disk, not RAM. Each round is one read:
at most as many deliveries as there are free slots, globally and per destination, so a
slow destination never takes another's slots; a paced destination (min_interval) starts
one send per interval. In-flight ids are kept in memory only (the daemon's lock on the
database makes this the only scheduler).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable

from relayhook.deliver.circuit import Circuits
from relayhook.deliver.fallback import fallback_for
from relayhook.deliver.recorder import Recorder
from relayhook.deliver.retry import decide
from relayhook.deliver.runtime import Runtime
from relayhook.model import Attempt, Decision, Delivery, DeliveryState, Outcome
from relayhook.ops.metrics import Metrics
from relayhook.route.noise import Silences
from relayhook.store.base import Store, StoreError

__all__ = ["Scheduler"]

logger = logging.getLogger("relayhook.deliver")
_IDLE_POLL = 1.0
_SHARE_EVERY = 2.0  # seconds between reads of the circuits other instances changed


class Scheduler:
    """Owns the attempts in flight and the busy set."""

    def __init__(
        self,
        store: Store,
        runtime: Callable[[], Runtime],
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        silences: Silences | None = None,
        circuits: Circuits | None = None,
    ) -> None:
        self.store = store
        self._silences = silences
        self.circuits = circuits or Circuits(store, metrics)
        self._runtime = runtime
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        self.recorder = Recorder(store, self._written)
        self._wake = asyncio.Event()
        self._inflight: Counter[str] = Counter()
        # Monotonic time a destination may send again: paced (min_interval) or resting after
        # a rate limit or Retry-After.
        self._next_start: dict[str, float] = {}
        self._probes: set[str] = set()  # destinations whose claim this round is a probe
        self._saving: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        # Deliveries sent or being sent whose attempt is not written yet: never picked twice.
        self._busy: set[int] = set()

    @property
    def in_flight(self) -> int:
        return len(self._attempts)

    def wake(self) -> None:
        self._wake.set()

    def _written(self, ids: list[int]) -> None:
        self._busy.difference_update(ids)
        self._wake.set()  # retries may be due sooner than the last round thought

    def _wants(self, runtime: Runtime) -> tuple[dict[str, int], float | None]:
        """Free slots per destination, and when the next held-back one may start (a
        paced or resting destination, or an open circuit's next probe), as a delay."""
        config = runtime.config
        spare = config.concurrency.total - len(self._attempts)
        wants: dict[str, int] = {}
        waits: list[float] = []
        mono, now = self.monotonic(), self.clock()
        self._probes.clear()
        for name, dest in config.destinations.items():
            free = min(dest.concurrency - self._inflight[name], spare)
            allowed, probe_at = self.circuits.gate(dest, now)
            if not allowed:
                if probe_at is not None and probe_at > now:
                    waits.append(probe_at - now)
                continue
            ready_at = self._next_start.get(name, 0.0)
            if ready_at > mono:
                waits.append(ready_at - mono)
                continue
            sender = runtime.senders.get(name)
            if probe_at is not None:
                free = min(free, 1)  # the one probe of an open circuit
                self._probes.add(name)
            elif sender is not None and sender.min_interval > 0:
                free = min(free, 1)
            if free > 0:
                wants[name] = free
        return wants, min(waits) if waits else None

    async def round(self) -> float | None:
        """Start what is due; None when it started some, else how long to wait."""
        runtime = self._runtime()
        wants, held_for = self._wants(runtime)
        for name in sorted(self._probes):
            now = self.clock()
            mine = self.circuits.get(name).probe_every
            every = await self.store.take_probe(name, now, mine)
            if every is None:
                # Another instance on the database probes this time: we wait our turn.
                self.circuits.probed_elsewhere(name, now + mine)
                self._probes.discard(name)
                wants.pop(name, None)
                continue
            self.circuits.probe_every(name, every)
            # The probe is the delivery that first fell due, like the backlog after it.
            await self.store.requeue_due(name, now)
        claimed, next_due = await self.store.claim_due(wants, frozenset(self._busy), self.clock())
        took = bool(claimed)
        if claimed and self._silences is not None:
            claimed = await self._unmuted(claimed)
        spare = runtime.config.concurrency.total - len(self._attempts)
        chosen = _fair_share(claimed, spare)
        for delivery in chosen:
            self._start(runtime, delivery)
        if len(chosen) < len(claimed):
            # Claimed beyond the total's room: given back, for this round or another instance.
            left = {d.id for d in claimed} - {d.id for d in chosen}
            await self.store.release(sorted(left))
        if took:
            return None  # more may be due: the next round asks at once
        now = self.clock()
        if next_due is None or next_due <= now:
            delay = _IDLE_POLL  # nothing waiting, or every destination with due work is full
        else:
            delay = min(_IDLE_POLL, next_due - now)
        if held_for is not None:
            delay = min(delay, max(0.0, held_for))
        return delay

    async def _unmuted(self, claimed: list[Delivery]) -> list[Delivery]:
        """The claimed deliveries no silence mutes now; the others are marked silenced."""
        assert self._silences is not None
        muting = await self._silences.muting([d.id for d in claimed])
        if not muting:
            return claimed
        done = set(await self.store.mute(list(muting.items()), self.clock()))
        for delivery in claimed:
            if delivery.id in done:
                self.metrics.suppressed.labels(delivery.destination, "silenced").inc()
                logger.info(
                    "delivery %s to %s: silenced by silence %s",
                    delivery.id,
                    delivery.destination,
                    muting[delivery.id],
                    extra={"delivery_id": delivery.id, "destination": delivery.destination},
                )
        return [d for d in claimed if d.id not in muting]

    async def run(self) -> None:
        while True:
            delay = await self.round()
            if delay is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                self._wake.clear()

    def _start(self, runtime: Runtime, delivery: Delivery) -> None:
        sender = runtime.senders.get(delivery.destination)
        if sender is not None and sender.min_interval > 0:
            self._next_start[delivery.destination] = self.monotonic() + sender.min_interval
        probe = delivery.destination in self._probes
        if probe:
            self.circuits.probing(delivery.destination)
            logger.info(
                "circuit for %s: probing with delivery %s",
                delivery.destination,
                delivery.id,
                extra={"delivery_id": delivery.id, "destination": delivery.destination},
            )
        self._busy.add(delivery.id)
        self._inflight[delivery.destination] += 1
        task = asyncio.create_task(self._attempt(delivery, probe), name=f"delivery-{delivery.id}")
        self._attempts.add(task)
        task.add_done_callback(self._attempts.discard)

    async def _attempt(self, delivery: Delivery, probe: bool = False) -> None:
        # The runtime the attempt began with stays open until it ends, across reloads.
        runtime = self._runtime().acquire()
        try:
            attempt = await self._send(runtime, delivery, probe)
        except Exception:
            # Our own failure, not the destination's: no attempt to write, so it must not
            # stay busy for good; it is due again next round.
            logger.exception("delivery %s: the attempt failed inside relayhook", delivery.id)
            self._busy.discard(delivery.id)
            if probe:
                self.circuits.probe_abandoned(delivery.destination)
        else:
            self.recorder.add(attempt)
            self._count(delivery, attempt)
            if self.circuits.changed and self._saving is None:
                self._saving = asyncio.create_task(self._save_circuits())
        finally:
            self._inflight[delivery.destination] -= 1
            runtime.release()
            self._wake.set()

    async def _send(self, runtime: Runtime, delivery: Delivery, probe: bool = False) -> Attempt:
        dest = runtime.config.destinations.get(delivery.destination)
        sender = runtime.senders.get(delivery.destination)
        started, t0 = self.clock(), self.monotonic()
        if dest is None or sender is None:
            outcome = Outcome(False, f"destination '{delivery.destination}' is not configured")
            policy = runtime.config.retry
        else:
            policy = dest.retry
            try:
                outcome = await sender.send(delivery)
            except Exception as e:
                logger.exception("delivery %s: sender raised", delivery.id)
                outcome = Outcome(False, f"{type(e).__name__}: {e}")
        duration_ms = (self.monotonic() - t0) * 1000
        number = delivery.attempts + 1
        now = self.clock()
        error = runtime.config.redactor(outcome.error) if outcome.error else None
        if outcome.retry_after and not outcome.ok:
            # The destination asked for a rest: none of its deliveries go before it ends.
            rest = self.monotonic() + outcome.retry_after
            self._next_start[delivery.destination] = max(
                self._next_start.get(delivery.destination, 0.0), rest
            )
        held = False
        if dest is not None:
            self.circuits.observe(dest, outcome, error, probe, now)
            if dest.name in self.circuits.reordering:
                await self._reorder(dest.name, now)
        if probe and not outcome.ok and outcome.retry:
            # A failed probe spends nothing: the delivery keeps its place and its attempts.
            decision, held = Decision(DeliveryState.RETRYING, delivery.due_at or now), True
        else:
            decision = decide(outcome, number, policy, now)
        fallback = None
        if decision.state is DeliveryState.DEAD and dest is not None:
            fallback = fallback_for(runtime.config, dest, delivery, number, error)
        return Attempt(
            delivery_id=delivery.id,
            number=number,
            started_at=started,
            duration_ms=duration_ms,
            outcome=outcome.label,
            error=error,
            decision=decision,
            recorded_at=now,
            destination=delivery.destination,
            held=held,
            fallback=fallback,
        )

    def _count(self, delivery: Delivery, attempt: Attempt) -> None:
        state = attempt.decision.state
        self.metrics.attempts.labels(delivery.destination, attempt.outcome).inc()
        if state.finished:
            self.metrics.notifications.labels(delivery.destination, state).inc()
        if state is DeliveryState.DELIVERED:
            self.metrics.latency.labels(delivery.destination).observe(
                max(0.0, attempt.recorded_at - delivery.received_at)
            )
        _log(delivery, attempt, attempt.decision)

    async def _reorder(self, name: str, now: float) -> None:
        """The circuit just closed: its backlog back in the order it first fell due."""
        try:
            moved = await self.store.requeue_due(name, now)
            logger.info("%s: %d deliveries waiting go out oldest first", name, moved)
        except StoreError as e:
            logger.error("%s: could not put the backlog in order (%s)", name, e)
        finally:
            self.circuits.reordering.discard(name)

    async def renew_leases(self) -> None:
        """While sends run, keep their leases (a store without leases has nothing to do):
        renewed every third of the lease, so one missed renewal costs nothing."""
        lease = self.store.lease
        if lease is None:
            await asyncio.Event().wait()  # nothing to renew, ever; the pipeline cancels this
        assert lease is not None
        while True:
            await asyncio.sleep(lease / 3)
            if self._busy:
                await self.store.renew_leases(sorted(self._busy), self.clock() + lease)

    async def share_circuits(self) -> None:
        """With several instances (a store with leases), see their circuit changes."""
        if self.store.lease is None:
            await asyncio.Event().wait()  # one daemon: its circuits are all there is
        while True:
            await asyncio.sleep(_SHARE_EVERY)
            await self.circuits.refresh()

    async def _save_circuits(self) -> None:
        # Beside the attempts, not in their way: a circuit changes a few times an outage.
        try:
            await self.circuits.store_changes()
        except StoreError as e:
            logger.error("could not store a circuit (%s); trying with the next change", e)
        finally:
            self._saving = None

    async def drain(self, seconds: float) -> None:
        """Let attempts in flight finish for up to seconds; cancel the rest; write what ended."""
        if self._attempts:
            _, pending = await asyncio.wait(self._attempts, timeout=seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if pending:
                logger.info("left %d deliveries in flight for retry after restart", len(pending))
        await self.recorder.flush()
        if self._saving is not None:
            await asyncio.gather(self._saving, return_exceptions=True)
        await self.circuits.store_changes()


def _fair_share(claimed: list[Delivery], spare: int) -> list[Delivery]:
    """At most spare of the claimed, taken in turn from each destination.

    Each destination asked for up to its own free slots; together they may ask for more
    than the total allows. What is left out stays due for the next round.
    """
    if len(claimed) <= spare:
        return claimed
    queues: dict[str, deque[Delivery]] = {}
    for delivery in claimed:
        queues.setdefault(delivery.destination, deque()).append(delivery)
    chosen: list[Delivery] = []
    while len(chosen) < spare:
        for queue in queues.values():
            if queue and len(chosen) < spare:
                chosen.append(queue.popleft())
    return chosen


def _log(delivery: Delivery, attempt: Attempt, decision: Decision) -> None:
    level = logging.INFO if decision.state is DeliveryState.DELIVERED else logging.WARNING
    if not logger.isEnabledFor(level):
        return
    logger.log(
        level,
        "delivery %s to %s: attempt %d %s%s",
        delivery.id,
        delivery.destination,
        attempt.number,
        "failed as a probe (not counted)" if attempt.held else decision.state,
        f": {attempt.error}" if attempt.error else "",
        extra={
            "delivery_id": delivery.id,
            "event_id": delivery.event_id,
            "destination": delivery.destination,
            "attempt": attempt.number,
            "outcome": decision.state.value,
        },
    )
