"""The circuit in the scheduler, in-process with a hand-moved clock and scripted senders
on a real SQLite file: opens, probes once per interval (doubling), spends nothing while
open, closes and drains oldest first, and survives a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayhook.deliver.circuit import Circuits
from relayhook.deliver.scheduler import Scheduler
from relayhook.model import Outcome
from test_stages import SCHED_CONFIG, Harness, harness, run

CONFIG = SCHED_CONFIG.replace(
    'b: {url: "json://127.0.0.1:9/b", min_interval: 0s, concurrency: 3}',
    'b: {url: "json://127.0.0.1:9/b", min_interval: 0s, concurrency: 3,'
    " circuit: {failures: 3, probe: 10s}, retry: {attempts: 3, first_delay: 1s,"
    " max_delay: 40s}}",
)
DOWN = Outcome(False, "HTTP 503: down")


def down(h: Harness, ids: list[int]) -> None:
    for delivery_id in ids:
        h.senders["b"].script[delivery_id] = [DOWN] * 100


def up(h: Harness, ids: list[int]) -> None:
    for delivery_id in ids:
        h.senders["b"].script[delivery_id] = []


async def sends_after(h: Harness, seconds: float) -> list[int]:
    """Move the clock, run a round, and say which deliveries were sent in it."""
    before = len(h.senders["b"].sent)
    h.clock.advance(seconds)
    await h.step()
    return h.senders["b"].sent[before:]


def test_circuit_opens_probes_spends_nothing_then_drains_oldest_first(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path, CONFIG) as h:
            ids = await h.deliveries(*["b"] * 10)
            down(h, ids)
            await h.step()  # three at once (concurrency 3): all fail, the circuit opens
            assert h.senders["b"].sent == ids[:3]
            assert h.scheduler.circuits.is_open("b")
            assert h.metrics.circuit_open.labels("b")._value.get() == 1

            # Nothing while open, until the probe is due: one probe, the delivery that
            # first fell due (made first, though its retry was set for later), every
            # interval, doubling.
            assert await sends_after(h, 5) == []
            assert await sends_after(h, 5) == [ids[0]]
            assert await sends_after(h, 0) == []
            assert await sends_after(h, 10) == []
            assert await sends_after(h, 10) == [ids[0]]  # 20 s after the last one
            assert await sends_after(h, 39) == []
            assert await sends_after(h, 1) == [ids[0]]  # 40 s: max_delay caps it
            probe = await h.delivery(ids[0])
            assert (probe["state"], probe["attempts"]) == ("retrying", 1)  # probes spent none
            assert [a["held"] for a in probe["attempts_log"]] == [False, True, True, True]

            # Back up: the next probe goes through, closes it, and the rest drain in the
            # order they fell due, none dead.
            up(h, ids)
            assert await sends_after(h, 40) == [ids[0]]
            assert not h.scheduler.circuits.is_open("b")
            drained: list[int] = []
            for _ in range(10):
                drained += await sends_after(h, 0)
            # By when each first fell due (made), not when its last retry was set for.
            assert drained == ids[1:]
            states = [(await h.delivery(i))["state"] for i in ids]
            assert states == ["delivered"] * 10
            assert h.metrics.circuit_open.labels("b")._value.get() == 0

    run(main)


def test_an_open_circuit_stays_open_across_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path, CONFIG) as h:
            ids = await h.deliveries(*["b"] * 5)
            down(h, ids)
            await h.step()
            assert h.scheduler.circuits.is_open("b")
            await h.scheduler.drain(1.0)
            # A new scheduler over the same file, as after a restart.
            circuits = Circuits(h.store, h.metrics)
            await circuits.load()
            assert circuits.is_open("b")
            h.scheduler = Scheduler(
                h.store,
                lambda: h.runtime,
                h.metrics,
                clock=h.clock.time,
                monotonic=h.clock.monotonic,
                circuits=circuits,
            )
            assert await sends_after(h, 9) == []
            assert await sends_after(h, 1) == [ids[0]]  # on the schedule it had

    run(main)


@pytest.mark.parametrize(
    ("outcome", "opens"),
    [
        (Outcome(False, "HTTP 400: bad request", retry=False), False),
        (Outcome(False, "HTTP 429", retry_after=0.001, limited=True), False),
        (Outcome(False, "timeout", timeout=True), True),
    ],
)
def test_refusals_and_rate_limits_do_not_open_it(
    tmp_path: Path, outcome: Outcome, opens: bool
) -> None:
    async def main() -> None:
        async with harness(tmp_path, CONFIG) as h:
            ids = await h.deliveries(*["b"] * 3)
            for delivery_id in ids:
                h.senders["b"].script[delivery_id] = [outcome]
            await h.step()
            assert h.scheduler.circuits.is_open("b") is opens

    run(main)
