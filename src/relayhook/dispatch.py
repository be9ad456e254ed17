"""After the ack: route stored events into deliveries, then send due deliveries.

The database is the queue, so a crash loses nothing and a long outage backlog costs disk,
not RAM. Memory only holds shortcuts: the router takes just-stored events from a bounded
queue instead of reading them back, and the scheduler keeps the ids in flight. It picks at
most as many deliveries as there are free slots, globally and per destination, so one slow
destination never takes another's slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import tenacity

from relayhook import deliverylog as log
from relayhook.config import Config, RetryPolicy
from relayhook.deliver import Outcome, Sender, make_sender
from relayhook.metrics import Metrics
from relayhook.router import InboundEvent, Message, route

__all__ = ["Dispatcher", "Runtime", "backoff"]

logger = logging.getLogger("relayhook.dispatch")
_ROUTE_BATCH = 256
_FRESH_MAX = 10_000  # events held in memory for routing; past this, read from the database
_IDLE_POLL = 1.0
_RESTART = 1.0


def backoff(attempt_number: int, policy: RetryPolicy) -> float:
    """Seconds before the next try: exponential from first_delay, jittered, capped at max_delay."""
    wait = tenacity.wait_exponential_jitter(
        initial=policy.first_delay, max=policy.max_delay, jitter=policy.first_delay
    )
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt_number
    return float(wait(state))


class Runtime:
    """The config in force and a sender per destination; swapped whole on reload.

    A destination whose settings a reload leaves alone keeps its sender (its connections
    and worker processes). A retired runtime closes its senders once the last attempt using
    it is done, except those a newer runtime still holds.
    """

    def __init__(self, config: Config, previous: Runtime | None = None) -> None:
        self.config = config
        senders: dict[str, Sender] = {}
        for name, dest in config.destinations.items():
            if previous is not None and previous.config.destinations.get(name) == dest:
                senders[name] = previous.senders[name]
            else:
                senders[name] = make_sender(dest)
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


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An acknowledged event, as the router needs it."""

    id: int
    source: str
    event_type: str
    received_at: float
    headers: dict[str, str]
    # The parsed JSON; for rows read back, a callable that parses it, so that a body that
    # fails to parse fails its routing (inside _route_one), not the routing loop.
    body: Any

    @classmethod
    def from_row(cls, row: Any) -> StoredEvent:
        text = row["body"]
        return cls(
            row["id"],
            row["source"],
            row["event_type"],
            row["received_at"],
            json.loads(row["headers"]),
            lambda: json.loads(text),
        )


class Dispatcher:
    """Owns the routing loop, the delivery scheduler and the attempts in flight."""

    def __init__(
        self,
        store: Any,
        runtime: Runtime,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.metrics = metrics or Metrics()
        self.clock = clock
        self._route_wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._inflight: Counter[str] = Counter()
        self._next_start: dict[str, float] = {}  # monotonic time a paced destination may send
        self._attempts: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._chores: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._fresh: deque[StoredEvent] = deque()
        self._records: list[tuple[Any, ...]] = []
        # Deliveries sent or being sent whose outcome is not written yet: never picked twice.
        self._busy: set[int] = set()
        self._record_wake = asyncio.Event()
        self._rescan = True

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.runtime.open()
        recovered = await self.store.run(lambda c: log.recover(c, self.clock()))
        if recovered:
            logger.info(
                "retrying %d deliveries that were in flight when relayhook stopped", recovered
            )
        await self._report_orphans(self.runtime.config)
        self._loops = [
            asyncio.create_task(self._supervise(name, loop), name=f"relayhook-{name}")
            for name, loop in (
                ("router", self._route_loop),
                ("scheduler", self._send_loop),
                ("recorder", self._record_loop),
            )
        ]

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run loop; when the database fails under it (disk full, locked for long), log
        and start it again after a pause: the state it needs is on disk or kept aside."""
        while not self._stopping:
            try:
                await loop()
            except sqlite3.Error as e:
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
        task = asyncio.get_running_loop().create_task(self._report_orphans(runtime.config))
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)
        self._route_wake.set()
        self._send_wake.set()

    async def _report_orphans(self, config: Config) -> None:
        """Say which waiting deliveries name a destination the config no longer has.

        The scheduler only sends to configured destinations, so these wait, on disk, until
        the destination is configured again (a rename looks like a removal).
        """
        waiting = await self.store.run(log.waiting_by_destination)
        for name, count in sorted(waiting.items()):
            if name not in config.destinations:
                logger.warning(
                    "%d deliveries wait for destination '%s', which the config no longer has;"
                    " they are kept until it is configured again",
                    count,
                    name,
                    extra={"destination": name},
                )

    @property
    def running(self) -> bool:
        return bool(self._loops) and not any(t.done() for t in self._loops)

    async def stop(self, drain_timeout: float) -> None:
        """Stop claiming work; let attempts in flight finish up to drain_timeout."""
        self._stopping = True
        self._route_wake.set()
        self._send_wake.set()
        for task in [*self._loops, *self._chores]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._chores, return_exceptions=True)
        if self._attempts:
            _, pending = await asyncio.wait(self._attempts, timeout=drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if pending:
                logger.info("left %d deliveries in flight for retry after restart", len(pending))
        await self._flush_records()

    @property
    def in_flight(self) -> int:
        return len(self._attempts)

    # -- routing ---------------------------------------------------------------------------

    def accepted(self, event: StoredEvent) -> None:
        """A new event is committed: route it from memory, without reading it back."""
        if len(self._fresh) < _FRESH_MAX:
            self._fresh.append(event)
        else:
            self._rescan = True  # too many waiting: the database scan catches the rest
        self._route_wake.set()

    async def _route_loop(self) -> None:
        # The database is the truth (a scan at start finds what a crash left unrouted);
        # the in-memory queue only saves reading back what was just written.
        self._rescan = True
        while not self._stopping:
            if self._fresh:
                batch = [self._fresh.popleft() for _ in range(min(len(self._fresh), _ROUTE_BATCH))]
            elif self._rescan:
                rows = await self.store.run(lambda c: log.events_to_route(c, _ROUTE_BATCH))
                batch = [StoredEvent.from_row(row) for row in rows]
                self._rescan = len(batch) == _ROUTE_BATCH
            else:
                batch = []
            if not batch:
                # Quiet for a while: look in the database too, in case a hint was lost.
                self._rescan = not await self._wait(self._route_wake, _IDLE_POLL)
                continue
            plan = [(e.id, self._route_one(e)) for e in batch]
            now = self.clock()

            def save(
                conn: Any, plan: list[tuple[int, list[Message]]] = plan, now: float = now
            ) -> list[bool]:
                return log.save_routings(conn, plan, now)

            saved = await self.store.run(save)
            routed, unrouted = (
                self.metrics.routed.labels("routed"),
                self.metrics.routed.labels("unrouted"),
            )
            for (_, messages), fresh in zip(plan, saved, strict=True):
                if not fresh:
                    continue
                (routed if messages else unrouted).inc()
                for m in messages:
                    if m.error:
                        self.metrics.notifications.labels(m.destination, "failed").inc()
            self._send_wake.set()

    def _route_one(self, stored: StoredEvent) -> list[Message]:
        config = self.runtime.config
        try:
            event = InboundEvent(
                source=stored.source,
                event_type=stored.event_type,
                body=stored.body() if callable(stored.body) else stored.body,
                received_at=stored.received_at,
                headers=stored.headers,
            )
            outcomes = route(config.rules, config.destinations, event)
        except Exception:
            logger.exception(
                "event %s could not be routed; kept as unrouted",
                stored.id,
                extra={"event_id": stored.id},
            )
            return []
        messages = [m for o in outcomes for m in o.messages]
        for o in outcomes:
            if o.error:
                logger.warning(
                    "event %s: rule %s failed: %s",
                    stored.id,
                    o.rule.name,
                    o.error,
                    extra={"event_id": stored.id, "rule": o.rule.name},
                )
        if not messages:
            logger.debug(
                "event %s (%s) matched no rule",
                stored.id,
                stored.event_type,
                extra={"event_id": stored.id, "event_type": stored.event_type},
            )
        return messages

    # -- sending ---------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while not self._stopping:
            runtime = self.runtime
            config = runtime.config
            spare = config.concurrency.total - len(self._attempts)
            wants: dict[str, int] = {}
            paced_until: float | None = None
            for name, dest in config.destinations.items():
                free = min(dest.concurrency - self._inflight[name], spare)
                sender = runtime.senders.get(name)
                if sender is not None and sender.min_interval > 0:
                    # A paced destination starts one send per interval.
                    ready_at = self._next_start.get(name, 0.0)
                    if ready_at > time.monotonic():
                        paced_until = min(paced_until or ready_at, ready_at)
                        continue
                    free = min(free, 1)
                if free > 0:
                    wants[name] = free
            now = self.clock()
            busy = frozenset(self._busy)
            rows, next_due = await self.store.run(partial(log.due, wants=wants, busy=busy, now=now))
            for row in rows:
                sender = runtime.senders.get(row.destination)
                if sender is not None and sender.min_interval > 0:
                    self._next_start[row.destination] = time.monotonic() + sender.min_interval
                self._busy.add(row.id)
                self._inflight[row.destination] += 1
                task = asyncio.create_task(self._attempt(row), name=f"delivery-{row.id}")
                self._attempts.add(task)
                task.add_done_callback(self._attempts.discard)
            if rows:
                continue
            now = self.clock()
            if next_due is None or next_due <= now:
                delay = _IDLE_POLL  # nothing waiting, or every destination with due work is full
            else:
                delay = min(_IDLE_POLL, next_due - now)
            if paced_until is not None:
                delay = min(delay, max(0.0, paced_until - time.monotonic()))
            await self._wait(self._send_wake, delay)

    async def _attempt(self, row: log.Claimed) -> None:
        runtime = self.runtime.acquire()
        dest = runtime.config.destinations.get(row.destination)
        sender = runtime.senders.get(row.destination)
        try:
            started, t0 = self.clock(), time.monotonic()
            if dest is None or sender is None:
                outcome = Outcome(False, f"destination '{row.destination}' is not configured")
                policy = runtime.config.retry
            else:
                policy = dest.retry
                try:
                    outcome = await sender.send(row.title, row.body, row.format, row.id)
                except Exception as e:
                    logger.exception("delivery %s: sender raised", row.id)
                    outcome = Outcome(False, f"{type(e).__name__}: {e}")
            duration_ms = (time.monotonic() - t0) * 1000
            number = row.attempts + 1
            now = self.clock()
            error = runtime.config.redactor(outcome.error) if outcome.error else None
            next_at: float | None = None
            if outcome.ok:
                state = "delivered"
            elif not outcome.retry or number >= policy.attempts:
                state = "dead"
            else:
                state = "retrying"
                next_at = now + max(backoff(number, policy), outcome.retry_after or 0.0)
            # Recorded in batches: until then the id stays in the busy set, so nothing picks
            # it again, and a crash before the write leaves it to be retried (at least once).
            self._records.append(
                (row.id, number, started, duration_ms, outcome.label, error, state, next_at, now)
            )
            self._record_wake.set()
            self.metrics.attempts.labels(row.destination, outcome.label).inc()
            if state in ("delivered", "dead"):
                self.metrics.notifications.labels(row.destination, state).inc()
            if state == "delivered":
                self.metrics.latency.labels(row.destination).observe(
                    max(0.0, now - row.received_at)
                )
            level = logging.INFO if outcome.ok else logging.WARNING
            if not logger.isEnabledFor(level):
                return
            logger.log(
                level,
                "delivery %s to %s: attempt %d %s%s",
                row.id,
                row.destination,
                number,
                state,
                f": {error}" if error else "",
                extra={
                    "delivery_id": row.id,
                    "event_id": row.event_id,
                    "destination": row.destination,
                    "attempt": number,
                    "outcome": state,
                },
            )
        finally:
            self._inflight[row.destination] -= 1
            runtime.release()
            self._send_wake.set()

    async def _record_loop(self) -> None:
        while not self._stopping:
            if not self._records:  # after a failed write, they are still waiting
                await self._record_wake.wait()
            self._record_wake.clear()
            await self._flush_records()

    async def _flush_records(self) -> None:
        if not self._records:
            return
        batch, self._records = self._records, []
        try:
            await self.store.run(lambda c: log.record_attempts(c, batch))
        except BaseException:
            self._records[:0] = batch  # written with the next batch; still busy until then
            raise
        self._busy.difference_update(record[0] for record in batch)
        self._send_wake.set()  # retries may be due sooner than the scheduler thought

    async def _wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait for event (then clear it) or seconds; whether the event came."""
        woken = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                woken = await event.wait()
        event.clear()
        return woken
