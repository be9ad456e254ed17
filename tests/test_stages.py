"""Fast in-process tests of the pure stages: retry decisions, routing and rendering, the
render budget, and the scheduler driven by hand with a fake clock and a fake sender.

Nothing here starts a subprocess or opens a socket; the scheduler tests use a real
SqliteStore in tmp_path. Tests marked "BUG:" show a defect found while writing them.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import CONFIG_HEAD, write_config
from inproc import FakeClock
from relayhook.config.load import load_config
from relayhook.config.settings import Config, Destination, RetryPolicy
from relayhook.deliver.retry import backoff, decide
from relayhook.deliver.runtime import Runtime
from relayhook.deliver.scheduler import Scheduler
from relayhook.model import (
    TIMEOUT,
    Delivery,
    DeliveryState,
    Event,
    Message,
    NewEvent,
    Outcome,
    Routing,
)
from relayhook.ops.metrics import Metrics
from relayhook.route.budget import RenderTimeout, budget
from relayhook.route.match import RuleOutcome, route
from relayhook.store.sqlite.store import SqliteStore

RECEIVED_AT = 1_700_000_000.25  # 2023-11-14T22:13:20.250Z
RECEIVED_ISO = "2023-11-14T22:13:20.250Z"

CONFIG = (
    CONFIG_HEAD
    + """\
  other:
    auth: none
destinations:
  ops-slack: {url: "json://127.0.0.1:9/slack"}
  hook: {webhook: "http://127.0.0.1:9/x"}
  shaped:
    webhook: "http://127.0.0.1:9/y"
    body: '{"text": {{ (title ~ " - " ~ body) | tojson }}, "who": {{ rule | tojson }}, "src": {{ source | tojson }}, "meter": {{ payload.meter | tojson }}}'
"""
)


# -- decide() and backoff() ---------------------------------------------------------------

POLICY = RetryPolicy(attempts=4, first_delay=10.0, max_delay=600.0)
NOW = 5_000.0


def fixed_wait(attempt: int, policy: RetryPolicy) -> float:
    """A deterministic stand-in for backoff: 7s per attempt made."""
    return 7.0 * attempt


def test_decide_delivered() -> None:
    decision = decide(Outcome(True), 1, POLICY, NOW, wait=fixed_wait)
    assert decision.state is DeliveryState.DELIVERED
    assert decision.next_attempt_at is None
    # Delivered even on the last attempt the policy allows.
    assert decide(Outcome(True), POLICY.attempts, POLICY, NOW, wait=fixed_wait).state is (
        DeliveryState.DELIVERED
    )


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_decide_retryable_failure_waits_the_backoff(attempt: int) -> None:
    seen: list[tuple[int, RetryPolicy]] = []

    def wait(n: int, policy: RetryPolicy) -> float:
        seen.append((n, policy))
        return fixed_wait(n, policy)

    decision = decide(Outcome(False, "502"), attempt, POLICY, NOW, wait=wait)
    assert decision.state is DeliveryState.RETRYING
    assert decision.next_attempt_at == NOW + 7.0 * attempt
    assert seen == [(attempt, POLICY)]


def test_decide_retry_after_longer_than_backoff_wins() -> None:
    longer = Outcome(False, "429", retry_after=100.0)
    assert decide(longer, 2, POLICY, NOW, wait=fixed_wait).next_attempt_at == NOW + 100.0
    shorter = Outcome(False, "429", retry_after=3.0)
    assert decide(shorter, 2, POLICY, NOW, wait=fixed_wait).next_attempt_at == NOW + 14.0
    zero = Outcome(False, "429", retry_after=0.0)
    assert decide(zero, 2, POLICY, NOW, wait=fixed_wait).next_attempt_at == NOW + 14.0


def test_decide_not_retryable_is_dead_at_once() -> None:
    def wait(n: int, policy: RetryPolicy) -> float:
        raise AssertionError("no backoff for a delivery that is dead")

    decision = decide(Outcome(False, "400 bad request", retry=False), 1, POLICY, NOW, wait=wait)
    assert decision.state is DeliveryState.DEAD
    assert decision.next_attempt_at is None


def test_decide_dead_when_attempts_are_spent() -> None:
    last = decide(Outcome(False, "502"), POLICY.attempts, POLICY, NOW, wait=fixed_wait)
    assert last == decide(Outcome(False, "502"), POLICY.attempts + 3, POLICY, NOW, wait=fixed_wait)
    assert last.state is DeliveryState.DEAD
    assert last.next_attempt_at is None
    # One before the last still retries; a policy of one attempt never does.
    before = decide(Outcome(False, "502"), POLICY.attempts - 1, POLICY, NOW, wait=fixed_wait)
    assert before.state is DeliveryState.RETRYING
    once = RetryPolicy(attempts=1, first_delay=1.0, max_delay=1.0)
    assert decide(Outcome(False, "502"), 1, once, NOW, wait=fixed_wait).state is DeliveryState.DEAD


def test_decide_timeout_retries() -> None:
    decision = decide(TIMEOUT, 1, POLICY, NOW, wait=fixed_wait)
    assert decision.state is DeliveryState.RETRYING
    assert decision.next_attempt_at == NOW + 7.0
    assert TIMEOUT.label == "timeout"
    assert decide(TIMEOUT, POLICY.attempts, POLICY, NOW, wait=fixed_wait).state is (
        DeliveryState.DEAD
    )


def _bounds(n: int, policy: RetryPolicy) -> tuple[float, float]:
    base = policy.first_delay * 2 ** (n - 1) if n < 1000 else math.inf
    return min(base, policy.max_delay), min(base + policy.first_delay, policy.max_delay)


BACKOFF_POLICIES = [
    RetryPolicy(attempts=10, first_delay=1.0, max_delay=3600.0),
    RetryPolicy(),  # the default: first_delay 5s, max_delay 1h
    RetryPolicy(attempts=10, first_delay=0.5, max_delay=30.0),
    RetryPolicy(attempts=10, first_delay=2.0, max_delay=2.0),
]
ATTEMPT_NUMBERS = [*range(1, 70), 100, 500, 1023, 1024, 1025, 5000, 100_000]


@pytest.mark.parametrize("policy", BACKOFF_POLICIES, ids=lambda p: f"{p.first_delay}-{p.max_delay}")
def test_backoff_bounds(policy: RetryPolicy) -> None:
    # The DeprecationWarning is silenced here ONLY so the arithmetic is checked on its own;
    # test_backoff_uses_no_deprecated_tenacity_api below fails on the warning itself.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for n in ATTEMPT_NUMBERS:
            low, high = _bounds(n, policy)
            samples = [backoff(n, policy) for _ in range(20)]
            for s in samples:
                assert low <= s <= high, (n, s, low, high)
            if high - low > policy.first_delay / 2:
                assert len(set(samples)) > 1, f"attempt {n}: no jitter in {samples}"
        # Large attempt numbers hit the cap exactly.
        for n in (60, 1024, 100_000):
            assert backoff(n, policy) == policy.max_delay


def test_backoff_uses_no_deprecated_tenacity_api() -> None:
    # BUG: deliver/retry.py backoff() passes `initial=` to tenacity.wait_exponential_jitter,
    # which tenacity 9.2 deprecates ("use 'multiplier' instead") with a DeprecationWarning for
    # any first_delay other than 1. Under this project's pytest config (filterwarnings =
    # error) or `python -W error`, backoff() therefore RAISES for the default policy (5s), and
    # an in-process Scheduler's attempt task dies inside decide() before its attempt is
    # recorded, leaving the delivery in Scheduler._busy for good. Fix: pass multiplier=.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for policy in BACKOFF_POLICIES:
            low, high = _bounds(1, policy)
            assert low <= backoff(1, policy) <= high


# -- route(): matching and rendering -----------------------------------------------------


def load(tmp_path: Path, rules: dict[str, str], config: str = CONFIG) -> Config:
    return load_config(str(write_config(tmp_path, rules, config)))


def event(event_type: str, body: Any, headers: dict[str, str] | None = None) -> Event:
    return Event(
        id=0,
        source="openvolt",
        event_type=event_type,
        received_at=RECEIVED_AT,
        headers=headers or {},
        body=body,
    )


def outcomes(config: Config, ev: Event, render_timeout: float | None = None) -> dict[str, Any]:
    found = route(config.rules, config.destinations, ev, render_timeout=render_timeout)
    assert [o.rule.name for o in found] == [r.name for r in config.rules]
    return {o.rule.name: o for o in found}


MATCH_RULES = {
    "10-high.yaml": """\
        event: "meter_data.*"
        rules:
          - name: high
            when: "payload.kwh > 10"
            to: ops-slack
            title: "High use on {{ payload.meter }}"
            body: "{{ payload.kwh }} kWh at {{ received_at }}"
        """,
    "20-other.yaml": """\
        event: meter_data.received
        source: other
        rules:
          - name: other-only
            to: ops-slack
            body: "from other"
        """,
    "30-customer.yaml": """\
        event: customer.created
        rules:
          - name: customer
            to: ops-slack
            body: "customer {{ payload.id }}"
        """,
}


def test_route_glob_match_miss_source_and_when(tmp_path: Path) -> None:
    config = load(tmp_path, MATCH_RULES)
    got = outcomes(config, event("meter_data.received", {"payload": {"kwh": 12, "meter": "m-1"}}))

    high: RuleOutcome = got["high"]
    assert (high.matched, high.reason, high.error, high.items) == (True, "matched", None, None)
    (message,) = high.messages
    assert message == Message(
        "high", "ops-slack", None, "High use on m-1", f"12 kWh at {RECEIVED_ISO}", "text"
    )
    assert not got["other-only"].matched
    assert got["other-only"].reason == "source 'openvolt' is not 'other'"
    assert got["other-only"].messages == []
    assert not got["customer"].matched
    assert (
        got["customer"].reason
        == "event type 'meter_data.received' does not match 'customer.created'"
    )

    low = outcomes(config, event("meter_data.received", {"payload": {"kwh": 3, "meter": "m"}}))
    assert not low["high"].matched
    assert low["high"].reason == "when `payload.kwh > 10` was false"
    assert low["high"].messages == []

    # The glob needs the dot: "meter_data.*" does not take "meter_datafoo" or "meter.created".
    for miss in ("meter_datafoo", "meter.created"):
        other = outcomes(config, event(miss, {"payload": {"kwh": 99, "meter": "m"}}))
        assert other["high"].reason == f"event type '{miss}' does not match 'meter_data.*'"

    cust = outcomes(config, event("customer.created", {"payload": {"id": "c-9"}}))
    assert cust["customer"].matched
    assert [m.body for m in cust["customer"].messages] == ["customer c-9"]


STOP_RULES = {
    "10-stop.yaml": """\
        event: "*"
        rules:
          - name: first
            to: ops-slack
            body: a
          - name: x
            when: "event_type == 'stop.me'"
            stop: true
            to: ops-slack
            body: b
          - name: later
            to: ops-slack
            body: c
        """,
    "20-after.yaml": """\
        event: "*"
        rules:
          - name: next-file
            to: ops-slack
            body: d
        """,
}


def test_route_stop_true_stops_later_rules(tmp_path: Path) -> None:
    config = load(tmp_path, STOP_RULES)
    got = outcomes(config, event("stop.me", {}))
    assert got["first"].matched and got["x"].matched
    assert [m.body for m in got["x"].messages] == ["b"]
    for name in ("later", "next-file"):
        assert not got[name].matched
        assert got[name].reason == "not evaluated: rule 'x' has stop: true"
        assert got[name].messages == []

    # A stop rule that does not match stops nothing.
    go_on = outcomes(config, event("go.on", {}))
    assert not go_on["x"].matched
    assert go_on["later"].matched and go_on["next-file"].matched


FOR_EACH_RULES = {
    "10-each.yaml": """\
        event: "meter_data.*"
        rules:
          - name: per-reading
            for_each: "payload.readings"
            to: [ops-slack, hook]
            title: "reading {{ item_number }}"
            body: "{{ item_number }}/{{ item_count }}: {{ item.v }}"
        """,
}


def test_route_for_each_renders_one_message_per_item_per_destination(tmp_path: Path) -> None:
    config = load(tmp_path, FOR_EACH_RULES)
    readings = [{"v": 10}, {"v": 20}, {"v": 30}]
    got = outcomes(config, event("meter_data.received", {"payload": {"readings": readings}}))
    each: RuleOutcome = got["per-reading"]
    assert each.matched and each.error is None and each.items == 3
    assert [(m.item_index, m.destination) for m in each.messages] == [
        (i, d) for i in range(3) for d in ("ops-slack", "hook")
    ]
    slack = [m for m in each.messages if m.destination == "ops-slack"]
    assert [(m.title, m.body) for m in slack] == [
        ("reading 1", "1/3: 10"),
        ("reading 2", "2/3: 20"),
        ("reading 3", "3/3: 30"),
    ]
    hooks = [json.loads(m.body) for m in each.messages if m.destination == "hook"]
    assert [h["body"] for h in hooks] == ["1/3: 10", "2/3: 20", "3/3: 30"]

    empty = outcomes(config, event("meter_data.received", {"payload": {"readings": []}}))
    assert empty["per-reading"].matched and empty["per-reading"].items == 0
    assert empty["per-reading"].messages == []


ERROR_RULES = {
    "10-err.yaml": """\
        event: "*"
        rules:
          - name: broken
            to: [ops-slack, hook]
            body: "{{ payload.missing_field }}"
          - name: fine
            to: ops-slack
            body: "ok {{ payload.meter }}"
        """,
}


def test_route_render_error_fails_that_rule_only(tmp_path: Path) -> None:
    config = load(tmp_path, ERROR_RULES)
    got = outcomes(config, event("meter.created", {"payload": {"meter": "m-2"}}))
    broken: RuleOutcome = got["broken"]
    assert broken.matched
    assert broken.error is not None
    assert broken.error.startswith("undefined:") and "missing_field" in broken.error
    assert broken.reason == f"render error: {broken.error}"
    assert [m.destination for m in broken.messages] == ["ops-slack", "hook"]
    assert all(m.error and "missing_field" in m.error for m in broken.messages)
    assert all(m.body == "" for m in broken.messages)

    fine: RuleOutcome = got["fine"]
    assert (fine.matched, fine.error, fine.reason) == (True, None, "matched")
    assert [(m.body, m.error) for m in fine.messages] == [("ok m-2", None)]


HEADER_RULES = {
    "10-headers.yaml": """\
        event: "*"
        rules:
          - name: show-headers
            to: ops-slack
            title: "{{ received_at }}"
            body: "{{ headers | tojson }}"
        """,
}


def test_route_received_at_iso_and_no_credential_headers(tmp_path: Path) -> None:
    config = load(tmp_path, HEADER_RULES)
    headers = {
        "authorization": "Bearer sekrit-1",
        "X-Api-Key": "sekrit-2",
        "cookie": "session=sekrit-3",
        "x-request-id": "req-7",
        "user-agent": "openvolt/1.0",
    }
    got = outcomes(config, event("meter.created", {}, headers))
    (message,) = got["show-headers"].messages
    assert message.error is None
    assert message.title == RECEIVED_ISO
    assert json.loads(message.body) == {"x-request-id": "req-7", "user-agent": "openvolt/1.0"}
    assert "sekrit" not in message.body


WEBHOOK_RULES = {
    "10-hook.yaml": """\
        event: "meter*"
        rules:
          - name: to-hooks
            to: [hook, shaped, ops-slack]
            format: markdown
            title: "Meter {{ payload.meter }}"
            body: "**{{ event_type }}**"
        """,
}


def test_route_webhook_destinations_shape_the_body(tmp_path: Path) -> None:
    config = load(tmp_path, WEBHOOK_RULES)
    got = outcomes(config, event("meter.created", {"payload": {"meter": "m-3"}}))
    by_dest = {m.destination: m for m in got["to-hooks"].messages}
    assert all(m.error is None for m in by_dest.values())

    plain = by_dest["hook"]
    assert plain.format == "json"
    assert plain.title == "Meter m-3"
    assert json.loads(plain.body) == {
        "title": "Meter m-3",
        "body": "**meter.created**",
        "format": "markdown",
        "rule": "to-hooks",
        "severity": "info",
        "event_type": "meter.created",
        "source": "openvolt",
    }

    shaped = by_dest["shaped"]
    assert shaped.format == "json"
    assert json.loads(shaped.body) == {
        "text": "Meter m-3 - **meter.created**",
        "who": "to-hooks",
        "src": "openvolt",
        "meter": "m-3",
    }

    apprise_msg = by_dest["ops-slack"]
    assert (apprise_msg.format, apprise_msg.body) == ("markdown", "**meter.created**")


# -- the render budget --------------------------------------------------------------------

SLOW_BODY = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"
BUDGET_RULES = {
    "10-slow.yaml": f"""\
        event: "*"
        rules:
          - name: slow
            to: [ops-slack, hook]
            body: "{SLOW_BODY}"
          - name: fast
            to: ops-slack
            body: "fast {{{{ event_type }}}}"
        """,
}


def test_route_render_timeout_fails_the_slow_rule_alone(tmp_path: Path) -> None:
    config = load(tmp_path, BUDGET_RULES)
    # In a thread of its own (as the daemon routes off its loop), so that a budget that
    # does not work fails this test in seconds instead of rendering for hours.
    result: dict[str, Any] = {}

    def work() -> None:
        result["got"] = outcomes(config, event("meter.created", {}), render_timeout=0.3)

    t0 = time.monotonic()
    thread = threading.Thread(target=work, name="route-under-budget", daemon=True)
    thread.start()
    thread.join(5.0)
    elapsed = time.monotonic() - t0
    assert not thread.is_alive(), "route() is still rendering 5s into a 0.3s render_timeout"
    assert elapsed < 1.5, f"route() took {elapsed:.2f}s with render_timeout=0.3"
    got = result["got"]

    slow: RuleOutcome = got["slow"]
    assert slow.matched
    assert slow.error is not None
    assert "'slow'" in slow.error and "render_timeout" in slow.error
    assert slow.reason == slow.error
    assert [m.destination for m in slow.messages] == ["ops-slack", "hook"]
    assert all(m.error == slow.error and m.body == "" for m in slow.messages)

    fast: RuleOutcome = got["fast"]
    assert (fast.matched, fast.error) == (True, None)
    assert [(m.body, m.error) for m in fast.messages] == [("fast meter.created", None)]

    # And in this thread: a budget that fired leaves nothing pending behind it.
    try:
        with budget(0.05):
            _python_work(0.2)
    except RenderTimeout:
        pass
    _python_work(0.2)


def _python_work(seconds: float) -> int:
    """Pure-Python busy work (where an asynchronous exception would land) for `seconds`."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += sum(range(50))
    return n


def test_budget_interrupts_a_busy_loop() -> None:
    t0 = time.monotonic()
    with pytest.raises(RenderTimeout), budget(0.2):
        while True:
            _python_work(0.01)
    elapsed = time.monotonic() - t0
    assert 0.19 <= elapsed < 1.0, elapsed


def test_budget_fast_block_does_not_raise() -> None:
    with budget(0.2):
        value = _python_work(0.01)
    assert value > 0
    try:
        _python_work(0.4)  # well past the deadline and several watch ticks
    except RenderTimeout:
        pytest.fail("RenderTimeout arrived after its budget had ended")


def test_budget_never_fires_after_the_block_ends() -> None:
    """Blocks that end around their deadline: the exception is raised inside the `with`
    statement or not at all, never in the code that follows it."""
    inside = 0
    try:
        # Until the watch has fired a few times (or 5 s): budgets of nothing entered and
        # left back to back, so a tick meets one in every phase of entering and leaving;
        # then blocks ending just before, at, and just after their deadline. Where a tick
        # lands is chance, so the loop runs until it has landed inside.
        give_up = time.monotonic() + 5.0
        i = 0
        while inside < 3 and time.monotonic() < give_up:
            loop_end = time.monotonic() + 0.2
            while time.monotonic() < loop_end:
                try:
                    with budget(0.0):
                        pass
                except RenderTimeout:
                    inside += 1
            i += 1
            seconds = 0.02 + 0.005 * (i % 4)
            try:
                with budget(seconds):
                    _python_work(seconds - 0.01 + 0.005 * (i % 3))
            except RenderTimeout:
                inside += 1
            _python_work(0.06)  # more than a tick after each block: a leak lands here
    except RenderTimeout:
        pytest.fail(f"RenderTimeout leaked out of a finished budget (after {inside} inside)")
    assert inside > 0  # the watch did fire, so the leak check above meant something


# -- the scheduler, driven by hand -------------------------------------------------------

SCHED_CONFIG = """\
listen: 127.0.0.1:8787
database: relayhook.db
rules: rules
sources:
  openvolt: {auth: none}
concurrency: {total: 20, per_destination: 4}
# first_delay 1s, not more: see test_backoff_uses_no_deprecated_tenacity_api.
retry: {attempts: 3, first_delay: 1s, max_delay: 1h}
destinations:
  a: {url: "json://user:hunter2-pass@127.0.0.1:9/a", min_interval: 0s, concurrency: 2}
  b: {url: "json://127.0.0.1:9/b", min_interval: 0s, concurrency: 3}
"""


class FakeSender:
    """The Sender protocol: scripted outcomes per delivery id (delivered when the script
    runs out), an optional gate every send waits on, and a count of sends in flight."""

    def __init__(self, min_interval: float = 0.0) -> None:
        self.min_interval = min_interval
        self.script: dict[int, list[Outcome | Exception]] = {}
        self.gate: asyncio.Event | None = None
        self.sent: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.opened = False
        self.closed = False

    def open(self) -> None:
        self.opened = True

    async def send(self, delivery: Delivery) -> Outcome:
        delivery_id = delivery.id
        self.sent.append(delivery_id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            queued = self.script.get(delivery_id)
            result = queued.pop(0) if queued else Outcome(True)
            if isinstance(result, Exception):
                raise result
            return result
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed = True


@dataclass
class Harness:
    store: SqliteStore
    runtime: Runtime
    scheduler: Scheduler
    clock: FakeClock
    senders: dict[str, FakeSender]
    metrics: Metrics
    _keys: int = 0

    async def deliveries(self, *destinations: str) -> list[int]:
        """One stored event routed to a message per destination given, due now."""
        self._keys += 1
        event_id, known = await self.store.add_event(
            NewEvent("openvolt", f"k{self._keys}", "meter.created", self.clock.now, {}, "{}", {})
        )
        assert not known
        messages = tuple(
            Message("r", d, i, f"title {i}", f"body {i}", "text")
            for i, d in enumerate(destinations)
        )
        assert await self.store.save_routings([Routing(event_id, messages)], self.clock.now) == [
            True
        ]
        stored = await self.store.get_event(event_id)
        assert stored is not None
        return [d["id"] for d in stored["deliveries"]]

    async def settle(self) -> None:
        """Let the attempts started run to their end (not written yet)."""
        for _ in range(50):
            if self.scheduler.in_flight == 0:
                return
            await asyncio.sleep(0)
        for _ in range(500):  # one waiting on the database (a circuit that just closed)
            if self.scheduler.in_flight == 0:
                return
            await asyncio.sleep(0.002)
        raise AssertionError(f"{self.scheduler.in_flight} attempts still in flight")

    async def step(self) -> float | None:
        """One round, its attempts run and written."""
        delay = await self.scheduler.round()
        await self.settle()
        await self.scheduler.recorder.flush()
        return delay

    async def delivery(self, delivery_id: int) -> dict[str, Any]:
        found = await self.store.get_delivery(delivery_id)
        assert found is not None
        return found

    def sent(self) -> int:
        return sum(len(s.sent) for s in self.senders.values())


@asynccontextmanager
async def harness(
    tmp_path: Path, config_text: str = SCHED_CONFIG, intervals: dict[str, float] | None = None
) -> AsyncIterator[Harness]:
    config = load_config(str(write_config(tmp_path, {}, config_text)))
    senders = {name: FakeSender((intervals or {}).get(name, 0.0)) for name in config.destinations}

    def make(dest: Destination) -> FakeSender:
        return senders[dest.name]

    runtime = Runtime(config, make=make)
    runtime.open()
    clock = FakeClock()
    store = SqliteStore(str(tmp_path / "relayhook.db"))
    metrics = Metrics()
    scheduler = Scheduler(
        store, lambda: runtime, metrics, clock=clock.time, monotonic=clock.monotonic
    )
    try:
        yield Harness(store, runtime, scheduler, clock, senders, metrics)
    finally:
        for sender in senders.values():
            if sender.gate is not None:
                sender.gate.set()
        await scheduler.drain(1.0)
        await runtime.close()
        await store.close()
    assert all(s.opened and s.closed for s in senders.values())


def run(test: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=20))


def test_scheduler_sends_due_deliveries(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path) as h:
            ids = await h.deliveries("a", "b", "b")
            assert await h.step() is None  # it started sends
            assert sorted(h.senders["a"].sent + h.senders["b"].sent) == ids
            assert h.senders["a"].sent == ids[:1]
            for delivery_id in ids:
                d = await h.delivery(delivery_id)
                assert (d["state"], d["attempts"], d["next_attempt_at"]) == ("delivered", 1, None)
                (log,) = d["attempts_log"]
                assert (log["number"], log["outcome"], log["error"]) == (1, "delivered", None)
                assert log["started_at"] == h.clock.now
            # Nothing more to do: the next round starts nothing and waits at most the idle poll.
            delay = await h.step()
            assert delay is not None and 0 < delay <= 1.0
            assert h.sent() == 3
            sample = h.metrics.registry.get_sample_value
            labels = {"destination": "b", "outcome": "delivered"}
            assert sample("relayhook_notification_attempts_total", labels) == 2
            assert sample("relayhook_notifications_total", labels) == 2

    run(main)


def test_scheduler_retries_at_the_backoff_then_dies(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path) as h:
            (delivery_id,) = await h.deliveries("a")
            a = h.senders["a"]
            a.script[delivery_id] = [Outcome(False, "502 from hunter2-pass")] * 3
            # Retry policy: attempts 3, first_delay 1s (so 1-2s, then 2-3s).
            for attempt, (low, high) in ((1, (1.0, 2.0)), (2, (2.0, 3.0))):
                assert await h.step() is None
                assert len(a.sent) == attempt
                d = await h.delivery(delivery_id)
                assert (d["state"], d["attempts"]) == ("retrying", attempt)
                assert "hunter2" not in d["last_error"]  # redacted: the URL's password
                due = d["next_attempt_at"]
                assert h.clock.now + low <= due <= h.clock.now + high, due - h.clock.now
                # Not sent again before the clock reaches it; the round says how long to wait.
                h.clock.advance(due - h.clock.now - 0.25)
                delay = await h.step()
                assert delay == pytest.approx(0.25)
                assert len(a.sent) == attempt
                h.clock.advance(0.25)
            # The third attempt is the last the policy allows.
            assert await h.step() is None
            d = await h.delivery(delivery_id)
            assert (d["state"], d["attempts"], d["next_attempt_at"]) == ("dead", 3, None)
            assert [(x["number"], x["outcome"]) for x in d["attempts_log"]] == [
                (1, "failed"),
                (2, "failed"),
                (3, "failed"),
            ]
            assert all(
                "***" in x["error"] and "hunter2" not in x["error"] for x in d["attempts_log"]
            )
            # A dead delivery is never sent again.
            h.clock.advance(86_400)
            assert await h.step() is not None
            assert a.sent == [delivery_id] * 3
            sample = h.metrics.registry.get_sample_value
            assert (
                sample("relayhook_notifications_total", {"destination": "a", "outcome": "dead"})
                == 1
            )

    run(main)


def test_scheduler_outcomes_retry_after_refusal_timeout_and_raise(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path) as h:
            later, refused, timed_out, raised = await h.deliveries("b", "b", "b", "b")
            b = h.senders["b"]
            b.script[later] = [Outcome(False, "429", retry_after=120.0)]
            b.script[refused] = [Outcome(False, "400 bad request", retry=False)]
            b.script[timed_out] = [TIMEOUT]
            b.script[raised] = [RuntimeError("sender broke")]
            start = h.clock.now
            await h.step()  # b takes 3 at once: the fourth would go in the next round...
            # ...but the 429 asked b for a rest of 120 s: nothing goes to b before it ends.
            assert await h.step() == pytest.approx(1.0)  # the idle poll is shorter
            assert sorted(b.sent) == [later, refused, timed_out]

            d = await h.delivery(later)
            assert (d["state"], d["next_attempt_at"]) == ("retrying", start + 120.0)
            d = await h.delivery(refused)
            assert (d["state"], d["attempts"], d["last_error"]) == ("dead", 1, "400 bad request")
            d = await h.delivery(timed_out)
            assert d["state"] == "retrying"
            assert d["attempts_log"][0]["outcome"] == "timeout"

            h.clock.advance(119)
            assert await h.step() == pytest.approx(1.0)
            assert raised not in b.sent
            h.clock.advance(1)
            await h.step()
            assert raised in b.sent
            d = await h.delivery(raised)
            assert d["state"] == "retrying"
            assert d["last_error"] == "RuntimeError: sender broke"

    run(main)


def test_scheduler_concurrency_limit_per_destination(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path) as h:
            a, b = h.senders["a"], h.senders["b"]
            a.gate = asyncio.Event()  # a hangs; b does not
            a_ids = await h.deliveries("a", "a", "a", "a", "a")
            b_ids = await h.deliveries("b", "b")

            assert await h.scheduler.round() is None
            await asyncio.sleep(0)
            assert a.in_flight == 2  # a's concurrency: 2
            for _ in range(5):  # more rounds while a is full: no more sends to a
                await h.scheduler.round()
                await asyncio.sleep(0)
            assert a.sent == a_ids[:2]
            assert a.most_in_flight == 2
            # The slow destination took none of b's slots.
            assert sorted(b.sent) == b_ids
            await h.scheduler.recorder.flush()
            for delivery_id in b_ids:
                assert (await h.delivery(delivery_id))["state"] == "delivered"

            a.gate.set()
            await h.settle()
            # The two finished but are not written yet: the next round takes the next two.
            assert await h.scheduler.round() is None
            await h.settle()
            assert a.sent == a_ids[:4]
            await h.scheduler.recorder.flush()
            assert await h.step() is None
            assert a.sent == a_ids
            assert a.most_in_flight == 2
            for delivery_id in a_ids:
                assert (await h.delivery(delivery_id))["state"] == "delivered"

    run(main)


TOTAL_CONFIG = """\
listen: 127.0.0.1:8787
database: relayhook.db
rules: rules
sources:
  openvolt: {auth: none}
concurrency: {total: 3}
retry: {attempts: 3, first_delay: 1s, max_delay: 1h}
destinations:
  a: {url: "json://127.0.0.1:9/a", min_interval: 0s, concurrency: 2}
  b: {url: "json://127.0.0.1:9/b", min_interval: 0s, concurrency: 2}
"""


def test_scheduler_total_concurrency_limit(tmp_path: Path) -> None:
    # BUG: deliver/scheduler.py Scheduler._wants computes `spare` (the global free slots) once
    # and caps each destination by it, without taking away what earlier destinations were
    # given; so one round can start sum(per-destination free) attempts, more than
    # `concurrency.total`. Here total is 3 and a and b allow 2 each: one round starts 4.
    async def main() -> None:
        async with harness(tmp_path, TOTAL_CONFIG) as h:
            config = h.runtime.config
            assert config.concurrency.total == 3
            assert [d.concurrency for d in config.destinations.values()] == [2, 2]
            gate = asyncio.Event()
            for sender in h.senders.values():
                sender.gate = gate
            await h.deliveries("a", "a", "b", "b")
            await h.scheduler.round()
            await asyncio.sleep(0)
            started = h.scheduler.in_flight
            gate.set()
            await h.settle()
            assert started <= 3, f"{started} attempts in flight with concurrency.total 3"

    run(main)


def test_scheduler_paced_destination_starts_one_send_per_interval(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path, intervals={"a": 5.0}) as h:
            a, b = h.senders["a"], h.senders["b"]
            a_ids = await h.deliveries("a", "a", "a")
            b_ids = await h.deliveries("b", "b")
            start = h.clock.mono
            assert await h.step() is None
            assert a.sent == a_ids[:1]  # one, though a's concurrency is 2
            assert sorted(b.sent) == b_ids  # b is not paced

            # Within the interval nothing starts for a, though its deliveries are due.
            h.clock.mono = start + 4.5
            delay = await h.step()
            assert delay == pytest.approx(0.5)  # until a may send again
            assert a.sent == a_ids[:1]

            h.clock.mono = start + 5.0
            assert await h.step() is None
            assert a.sent == a_ids[:2]
            assert await h.step() is not None
            assert a.sent == a_ids[:2]

            h.clock.mono = start + 10.0
            assert await h.step() is None
            assert a.sent == a_ids

    run(main)


def test_scheduler_never_claims_an_unwritten_attempt_twice(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path) as h:
            failed, delivered = await h.deliveries("b", "b")
            h.senders["b"].script[failed] = [Outcome(False, "503")]
            sent_at = h.clock.now
            assert await h.scheduler.round() is None
            await h.settle()
            assert sorted(h.senders["b"].sent) == [failed, delivered]
            # Both attempts ended but neither is written: the database still says both are
            # due. Rounds, even far in the future, must not send either again.
            h.clock.advance(3600)
            for _ in range(3):
                assert await h.scheduler.round() is not None
                await h.settle()
            assert sorted(h.senders["b"].sent) == [failed, delivered]
            for delivery_id in (failed, delivered):
                assert (await h.delivery(delivery_id))["state"] == "pending"

            await h.scheduler.recorder.flush()
            assert (await h.delivery(delivered))["state"] == "delivered"
            retrying = await h.delivery(failed)
            assert retrying["state"] == "retrying"
            # Written now, with its backoff counted from the attempt's end: due, sent again.
            assert sent_at + 1.0 <= retrying["next_attempt_at"] <= sent_at + 2.0
            assert await h.step() is None
            assert sorted(h.senders["b"].sent) == sorted([failed, delivered, failed])
            assert (await h.delivery(failed))["state"] == "delivered"
            listed = await h.store.list_deliveries(destination="b")
            assert {(x["id"], x["state"], x["attempts"]) for x in listed} == {
                (failed, "delivered", 2),
                (delivered, "delivered", 1),
            }

    run(main)


def test_apprise_urls_keep_their_channel_and_take_our_params() -> None:
    # '#general' is part of an apprise path; it was once read as a URL fragment, which
    # sent to the webhook's default channel and made rto '11#general'.
    from relayhook.config.settings import AppriseDestination, RetryPolicy
    from relayhook.deliver.senders.apprise import apprise_for

    url = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general"
    notifier, _ = apprise_for(AppriseDestination("s", url, RetryPolicy(), timeout=10.0))
    (plugin,) = list(notifier)
    assert plugin.channels == ["#general"]
    assert plugin.socket_read_timeout == 11.0
    assert plugin.socket_connect_timeout == 10.0
    # The console has no host; it keeps its '//' and gets no pacing.
    console, pacing = apprise_for(AppriseDestination("c", "console://", RetryPolicy()))
    assert len(console) == 1 and pacing == 0.0


ESCAPE_CONFIG = (
    CONFIG_HEAD
    + """\
destinations:
  mm: {url: "mmost://127.0.0.1:9/tokenabc", format: markdown}
  con: {url: "console://"}
"""
)
ESCAPE_RULES = {
    "e.yaml": """\
        event: customer.created
        rules:
          - name: e-filter
            to: [mm]
            format: markdown
            body: "{{ payload.name | e }} / {{ payload.name | escape }}"
          - name: console
            to: [con]
            body: "{{ payload.name }}"
        """,
}


def test_escape_filters_people_and_terminals(tmp_path: Path) -> None:
    # Found by review: `| e` returned Markup, which passed the escaping untouched; a
    # user's @name could ping them; a terminal took escape sequences from data.
    config = load(tmp_path, ESCAPE_RULES, ESCAPE_CONFIG)
    name = "@alice [x](https://evil.example) \x1b]8;;https://evil.example\x07link\x1b[0m"
    got = outcomes(config, event("customer.created", {"payload": {"name": name}}))
    (mm,) = got["e-filter"].messages
    assert "@\u2060alice" in mm.body and "@alice" not in mm.body
    assert "[x](https://evil.example)" not in mm.body and "\\[x\\]" in mm.body
    (con,) = got["console"].messages
    assert "\x1b" not in con.body and "\x07" not in con.body
    assert con.body.startswith("@alice [x](https://evil.example) \\x1b]8;;")


THROTTLE_RULES = {
    "t.yaml": """\
        event: customer.created
        rules:
          - name: throttled
            to: ops-slack
            body: "x"
            throttle: {key: "{{ payload.missing.deeper }}", limit: 1, per: 1m}
          - name: plain
            to: ops-slack
            body: "y"
        """,
}


def test_a_throttle_key_that_fails_fails_its_rule_alone(tmp_path: Path) -> None:
    # Its key was rendered outside the rule's error handling: one bad key unrouted the
    # whole event.
    config = load(tmp_path, THROTTLE_RULES)
    got = outcomes(config, event("customer.created", {"payload": {}}))
    (bad,) = got["throttled"].messages
    assert bad.error is not None and "missing" in bad.error
    assert [m.body for m in got["plain"].messages] == ["y"]
