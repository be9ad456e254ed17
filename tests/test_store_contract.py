"""The Store contract: what every backend must do, checked in process against each one.

Every test takes the `store` fixture, which is parametrized by backend (BACKENDS below);
a new backend (PostgreSQL) passes when it passes this file unchanged. Timestamps are
fixed and passed explicitly, so nothing here depends on the clock. The store is async;
each step runs through run() (asyncio.run), so no async test plugin is needed.

Tests of SQLite alone (the daemon lock, reopening the file) are at the end, marked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pg import fresh_database
from relayhook.model import (
    Attempt,
    CircuitState,
    Decision,
    Delivery,
    DeliveryState,
    Event,
    Fallback,
    Grouping,
    Message,
    NewEvent,
    Routing,
    Throttling,
)
from relayhook.policy.silence import Matcher, Silence, SilenceFacts
from relayhook.store.base import (
    DeliveryFilter,
    Digest,
    DueGroup,
    EventFilter,
    Made,
    PruneResult,
    Store,
    StoreBusy,
    StoredEvent,
    StoreError,
)
from relayhook.store.open import open_store
from relayhook.store.postgres.store import PostgresStore
from relayhook.store.sqlite.store import SqliteStore

T = TypeVar("T")

PENDING, RETRYING = DeliveryState.PENDING, DeliveryState.RETRYING
DELIVERED, DEAD = DeliveryState.DELIVERED, DeliveryState.DEAD

T0 = 1_800_000_000.0  # a fixed "now"; every time below is T0 plus a few seconds


_IN_USE: list[PostgresStore] = []  # the PostgreSQL stores of the contract's fixtures


def run(coro: Coroutine[Any, Any, T]) -> T:
    """coro in a loop of its own; the PostgreSQL pools it opened are closed in it (a pool
    left open when its loop ends can hang asyncio.run's shutdown)."""

    async def closing() -> T:
        try:
            return await coro
        finally:
            for store in _IN_USE:
                await store.close()

    return asyncio.run(closing())


# -- backends ----------------------------------------------------------------------------


def _sqlite(tmp_path: Path) -> Store:
    return SqliteStore(str(tmp_path / "relayhook.db"))


@contextlib.contextmanager
def _postgresql(dsn: str) -> Iterator[Store]:
    """A PostgresStore on a database of its own on the run's server (conftest)."""
    with fresh_database(dsn, "contract") as db:
        store = PostgresStore(db)
        _IN_USE.append(store)
        try:
            yield store
        finally:
            _IN_USE.remove(store)


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgresql":
        with _postgresql(request.getfixturevalue("postgres_dsn")) as opened:
            yield opened
        return
    opened = _sqlite(tmp_path)
    yield opened
    run(opened.close())


# -- helpers -----------------------------------------------------------------------------


def new_event(
    key: str,
    *,
    source: str = "shop",
    at: float = T0,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    event_type: str = "order.paid",
) -> NewEvent:
    body = {"key": key} if body is None else body
    return NewEvent(source, key, event_type, at, dict(headers or {}), json.dumps(body), body)


def message(
    destination: str = "slack",
    *,
    rule: str = "r1",
    item_index: int | None = None,
    error: str | None = None,
    item: Any = None,
    silence_id: int | None = None,
) -> Message:
    return Message(
        rule,
        destination,
        item_index,
        f"title {rule}",
        f"body {rule}",
        "markdown",
        error,
        item=item,
        silence_id=silence_id,
    )


def attempt(
    delivery_id: int,
    number: int,
    state: DeliveryState,
    at: float,
    *,
    next_at: float | None = None,
    error: str | None = None,
    outcome: str = "failed",
) -> Attempt:
    """An attempt started at `at`, taking 250 ms, recorded 1 s later."""
    return Attempt(delivery_id, number, at, 250.0, outcome, error, Decision(state, next_at), at + 1)


async def routed(
    store: Store, key: str, messages: list[Message], *, at: float = T0, now: float | None = None
) -> tuple[int, list[int]]:
    """Add an event received at `at` and save its routing at `now` (default `at`):
    (event id, its delivery ids in message order)."""
    event_id, known = await store.add_event(new_event(key, at=at))
    assert not known
    assert await store.save_routings(
        [Routing(event_id, tuple(messages))], at if now is None else now
    ) == [True]
    event = await store.get_event(event_id)
    assert event is not None
    return event_id, [d["id"] for d in event["deliveries"]]


async def one(store: Store, key: str, destination: str = "slack", **kw: Any) -> int:
    """The id of the one delivery of a new event routed to `destination`."""
    _, ids = await routed(store, key, [message(destination)], **kw)
    return ids[0]


def ids_of(claimed: list[Delivery]) -> list[int]:
    return [d.id for d in claimed]


def nonzero(depth: Mapping[str, int]) -> dict[str, int]:
    """Queue depth without the states at zero (a backend may list them or leave them out)."""
    return {state: n for state, n in depth.items() if n}


def pick(row: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: row[k] for k in keys}


# -- ping, recover -----------------------------------------------------------------------


def test_ping_succeeds(store: Store) -> None:
    assert run(store.ping()) is None


def test_recover_on_a_fresh_store_finds_nothing(store: Store) -> None:
    assert run(store.recover(T0)) == 0


def test_recover_leaves_waiting_and_finished_work_alone(store: Store) -> None:
    async def go() -> None:
        waiting = await one(store, "a")
        done = await one(store, "b")
        await store.record_attempts([attempt(done, 1, DELIVERED, T0 + 1, outcome="delivered")])
        assert await store.recover(T0 + 50) == 0
        assert pick(await store.get_delivery(waiting) or {}, "state", "next_attempt_at") == {
            "state": "pending",
            "next_attempt_at": T0,
        }
        assert (await store.get_delivery(done) or {})["state"] == "delivered"

    run(go())


# -- add_event ---------------------------------------------------------------------------


def test_add_event_new_then_known_key(store: Store) -> None:
    async def go() -> None:
        first = new_event("k1", body={"n": 1}, headers={"x-id": "1"})
        event_id, known = await store.add_event(first)
        assert known is False
        # The same (source, key) again, even with another body: the first event stands.
        again = new_event("k1", at=T0 + 5, body={"n": 2}, headers={"x-id": "2"})
        assert await store.add_event(again) == (event_id, True)
        assert [e["id"] for e in await store.list_events()] == [event_id]
        stored = await store.get_event(event_id)
        assert stored is not None
        assert json.loads(stored["body"]) == {"n": 1}
        assert stored["headers"] == {"x-id": "1"}
        assert stored["received_at"] == T0
        assert [e.id for e in await store.events_to_route(10)] == [event_id]

    run(go())


def test_add_event_same_key_under_another_source_is_new(store: Store) -> None:
    async def go() -> None:
        a, known_a = await store.add_event(new_event("k1", source="shop"))
        b, known_b = await store.add_event(new_event("k1", source="billing"))
        assert (known_a, known_b) == (False, False)
        assert a != b
        listed = await store.list_events()
        assert {(e["id"], e["source"], e["event_key"]) for e in listed} == {
            (a, "shop", "k1"),
            (b, "billing", "k1"),
        }

    run(go())


def test_add_event_concurrently_gives_distinct_ids_and_stores_all(store: Store) -> None:
    async def go() -> None:
        results = await asyncio.gather(
            *(store.add_event(new_event(f"k{i}", at=T0 + i)) for i in range(50))
        )
        ids = [event_id for event_id, _ in results]
        assert [known for _, known in results] == [False] * 50
        assert len(set(ids)) == 50
        listed = await store.list_events(limit=1000)
        assert sorted(e["id"] for e in listed) == sorted(ids)
        by_id = {e["id"]: e["event_key"] for e in listed}
        assert [by_id[event_id] for event_id in ids] == [f"k{i}" for i in range(50)]

    run(go())


def test_add_event_concurrent_duplicates_keep_one_event(store: Store) -> None:
    async def go() -> None:
        results = await asyncio.gather(
            *(store.add_event(new_event(k)) for k in ["dup"] * 10 + ["other"])
        )
        dup_ids = {event_id for event_id, _ in results[:10]}
        assert len(dup_ids) == 1
        assert sorted(known for _, known in results[:10]) == [False] + [True] * 9
        assert results[10][1] is False
        listed = await store.list_events()
        assert sorted(e["id"] for e in listed) == sorted([*dup_ids, results[10][0]])

    run(go())


# -- events_to_route ---------------------------------------------------------------------


def test_events_to_route_oldest_first_whole_and_limited(store: Store) -> None:
    async def go() -> None:
        bodies = [{"a": [1, 2]}, {"b": None, "n": 1.5}, ["list", {"deep": True}]]
        headers = [{"content-type": "application/json"}, {}, {"x-a": "1", "x-b": "two"}]
        ids = []
        for i, (body, head) in enumerate(zip(bodies, headers, strict=True)):
            event_id, _ = await store.add_event(
                new_event(f"k{i}", at=T0 + i, body=body, headers=head, event_type=f"t{i}")
            )
            ids.append(event_id)
        expected = [
            Event(ids[i], "shop", f"t{i}", T0 + i, headers[i], bodies[i], None) for i in range(3)
        ]
        assert await store.events_to_route(10) == expected
        assert await store.events_to_route(2) == expected[:2]
        assert await store.events_to_route(1) == expected[:1]
        # Only those received before a time (what an instance adopts on a shared database).
        assert await store.events_to_route(10, received_before=T0 + 1) == expected[:1]
        assert await store.events_to_route(10, received_before=T0) == []

        # Routed (with deliveries) or unrouted (with none): gone from it either way.
        assert await store.save_routings(
            [Routing(ids[0], (message(),)), Routing(ids[2], ())], T0 + 10
        ) == [True, True]
        assert await store.events_to_route(10) == [expected[1]]
        assert await store.save_routings([Routing(ids[1], (message(),))], T0 + 11) == [True]
        assert await store.events_to_route(10) == []

    run(go())


# -- save_routings -----------------------------------------------------------------------


def test_save_routings_one_delivery_per_message(store: Store) -> None:
    async def go() -> None:
        event_id, _ = await store.add_event(new_event("k1"))
        messages = (
            message("slack", rule="r1", item_index=0),
            message("slack", rule="r1", item_index=1),
            message("pager", rule="r2", error="template: no such field 'x'"),
        )
        now = T0 + 3
        assert await store.save_routings([Routing(event_id, messages)], now) == [True]

        event = await store.get_event(event_id)
        assert event is not None
        assert event["state"] == "routed"
        got = [
            pick(d, "rule", "destination", "item_index", "state", "attempts", "last_error")
            for d in event["deliveries"]
        ]
        assert got == [
            dict(
                rule="r1",
                destination="slack",
                item_index=0,
                state="pending",
                attempts=0,
                last_error=None,
            ),
            dict(
                rule="r1",
                destination="slack",
                item_index=1,
                state="pending",
                attempts=0,
                last_error=None,
            ),
            dict(
                rule="r2",
                destination="pager",
                item_index=None,
                state="failed",
                attempts=0,
                last_error="template: no such field 'x'",
            ),
        ]
        first, _, failed = (d["id"] for d in event["deliveries"])

        delivery = await store.get_delivery(first)
        assert delivery is not None
        assert pick(
            delivery, "event_id", "title", "body", "format", "next_attempt_at", "created_at",
            "updated_at", "replay_of", "attempts_log",
        ) == dict(
            event_id=event_id, title="title r1", body="body r1", format="markdown",
            next_attempt_at=now, created_at=now, updated_at=now, replay_of=None, attempts_log=[],
        )  # fmt: skip
        assert pick(delivery["event"], "id", "source", "event_key", "event_type", "state") == dict(
            id=event_id, source="shop", event_key="k1", event_type="order.paid", state="routed"
        )

        # The failed one is never due and never waiting.
        failed_row = await store.get_delivery(failed)
        assert failed_row is not None
        assert failed_row["next_attempt_at"] is None
        claimed, _ = await store.claim_due({"slack": 10, "pager": 10}, set(), T0 + 10**6)
        assert sorted(ids_of(claimed)) == sorted(d["id"] for d in event["deliveries"][:2])
        assert await store.waiting_by_destination() == {"slack": 2}

        listed = await store.list_events()
        assert pick(listed[0], "id", "state", "deliveries") == dict(
            id=event_id, state="routed", deliveries=3
        )

    run(go())


def test_save_routings_without_messages_makes_the_event_unrouted(store: Store) -> None:
    async def go() -> None:
        event_id, _ = await store.add_event(new_event("k1"))
        assert await store.save_routings([Routing(event_id, ())], T0) == [True]
        event = await store.get_event(event_id)
        assert event is not None
        assert (event["state"], event["deliveries"]) == ("unrouted", [])
        assert [e["id"] for e in await store.list_events(state="unrouted")] == [event_id]
        assert await store.list_deliveries() == []

    run(go())


def test_save_routings_twice_routes_once(store: Store) -> None:
    async def go() -> None:
        a, _ = await store.add_event(new_event("a"))
        b, _ = await store.add_event(new_event("b"))
        c, _ = await store.add_event(new_event("c"))
        batch = [
            Routing(a, (message("slack"), message("pager"))),
            Routing(b, ()),
            Routing(c, (message(),)),
        ]
        assert await store.save_routings(batch, T0) == [True, True, True]
        assert await store.save_routings(batch, T0 + 1) == [False, False, False]
        # Once more with other messages: still nothing new.
        assert await store.save_routings([Routing(a, (message("email"),))], T0 + 2) == [False]
        assert await store.save_routings([Routing(b, (message("email"),))], T0 + 2) == [False]

        rows = await store.list_deliveries()
        assert sorted((r["event_id"], r["destination"]) for r in rows) == sorted(
            [(a, "slack"), (a, "pager"), (c, "slack")]
        )
        assert {r["created_at"] for r in rows} == {T0}
        states = {e["id"]: (e["state"], e["deliveries"]) for e in await store.list_events()}
        assert states == {a: ("routed", 2), b: ("unrouted", 0), c: ("routed", 1)}

    run(go())


def test_save_routings_twice_in_one_call_routes_once(store: Store) -> None:
    async def go() -> None:
        a, _ = await store.add_event(new_event("a"))
        routing = Routing(a, (message(),))
        assert await store.save_routings([routing, routing], T0) == [True, False]
        assert len(await store.list_deliveries()) == 1

    run(go())


def test_save_routings_keeps_the_first_routing_of_an_event_given_twice(store: Store) -> None:
    async def go() -> None:
        a, _ = await store.add_event(new_event("a"))
        b, _ = await store.add_event(new_event("b"))
        c, _ = await store.add_event(new_event("c"))
        # Two other events matched nothing, so the unrouted ones are marked in one go.
        routings = [Routing(a, (message(),)), Routing(b, ()), Routing(c, ()), Routing(a, ())]
        assert await store.save_routings(routings, T0) == [True, True, True, False]
        assert [d["event_id"] for d in await store.list_deliveries()] == [a]
        states = {e["id"]: e["state"] for e in await store.list_events()}
        assert states == {a: "routed", b: "unrouted", c: "unrouted"}

    run(go())


def test_save_routings_twice_with_several_unrouted_says_false(store: Store) -> None:
    # Several unrouted events are marked in one statement: each still answers whether it
    # was waiting (found by this test: it answered True for all of them).

    async def go() -> None:
        a, _ = await store.add_event(new_event("a"))
        b, _ = await store.add_event(new_event("b"))
        batch = [Routing(a, ()), Routing(b, ())]
        assert await store.save_routings(batch, T0) == [True, True]
        assert await store.save_routings(batch, T0 + 1) == [False, False]

    run(go())


def test_save_routings_of_an_unknown_event_says_false(store: Store) -> None:
    async def go() -> None:
        a, _ = await store.add_event(new_event("a"))
        assert await store.save_routings([Routing(a + 1000, (message(),))], T0) == [False]
        assert await store.save_routings([Routing(a + 1001, ())], T0) == [False]
        assert await store.list_deliveries() == []
        assert [e.id for e in await store.events_to_route(10)] == [a]

    run(go())


# -- claim_due ---------------------------------------------------------------------------


def test_claim_due_fields(store: Store) -> None:
    async def go() -> None:
        event_id, (d,) = await routed(store, "k1", [message("slack", rule="r9")], at=T0, now=T0 + 2)
        claimed, next_due = await store.claim_due({"slack": 5}, set(), T0 + 2)
        first = Delivery(
            d, event_id, "slack", "title r9", "body r9", "markdown", 0, T0, "info", "r9",
            due_at=T0 + 2, fallback_of=None, event_type="order.paid", source="shop",
        )  # fmt: skip
        assert claimed == [first]
        assert next_due is None  # it claimed some: the caller asks again at once

        await store.record_attempts([attempt(d, 1, RETRYING, T0 + 3, next_at=T0 + 9, error="x")])
        claimed, _ = await store.claim_due({"slack": 5}, set(), T0 + 9)
        assert claimed == [replace(first, attempts=1, due_at=T0 + 9)]

    run(go())


def test_claim_due_per_destination_oldest_due_first(store: Store) -> None:
    async def go() -> None:
        a1 = await one(store, "a1", "a", at=T0 + 1)
        a2 = await one(store, "a2", "a", at=T0 + 2)
        a3 = await one(store, "a3", "a", at=T0 + 3)
        b1 = await one(store, "b1", "b", at=T0 + 4)
        now = T0 + 10

        async def claim(wants: dict[str, int]) -> tuple[list[int], float | None]:
            """Claim, then give back (a claim holds what it took until released)."""
            claimed, next_due = await store.claim_due(wants, set(), now)
            await store.release(ids_of(claimed))
            return ids_of(claimed), next_due

        assert await claim({"a": 2}) == ([a1, a2], None)
        assert (await claim({"a": 1}))[0] == [a1]
        claimed, _ = await store.claim_due({"a": 10, "b": 10}, set(), now)
        assert sorted(ids_of(claimed)) == sorted([a1, a2, a3, b1])
        assert [d.id for d in claimed if d.destination == "a"] == [a1, a2, a3]
        await store.release(ids_of(claimed))
        assert await claim({"b": 1}) == ([b1], None)
        # Released, the same work is due again until an attempt is recorded.
        assert (await claim({"a": 2}))[0] == [a1, a2]

    run(go())


def test_claim_due_skips_busy(store: Store) -> None:
    async def go() -> None:
        a1 = await one(store, "a1", "a", at=T0 + 1)
        a2 = await one(store, "a2", "a", at=T0 + 2)
        a3 = await one(store, "a3", "a", at=T0 + 3)
        b1 = await one(store, "b1", "b", at=T0 + 4)
        now = T0 + 10

        async def claim(wants: dict[str, int], busy: set[int]) -> list[Delivery]:
            claimed, _ = await store.claim_due(wants, busy, now)
            await store.release(ids_of(claimed))
            return claimed

        assert ids_of(await claim({"a": 2}, {a1})) == [a2, a3]
        assert ids_of(await claim({"a": 2}, {a1, a2, b1})) == [a3]
        claimed, next_due = await store.claim_due({"a": 5}, {a1, a2, a3}, now)
        assert claimed == []
        assert next_due == T0 + 1  # the in-flight work still waits; the scheduler polls
        assert sorted(ids_of(await claim({"a": 5, "b": 5}, {a2}))) == sorted([a1, a3, b1])

    run(go())


def test_claim_due_takes_nothing_for_a_destination_wanting_none(store: Store) -> None:
    # With busy ids the query asks for more rows than wanted: zero must still take none
    # (found by this test: it handed out up to len(busy)).

    async def go() -> None:
        await one(store, "a1", "a", at=T0 + 1)
        await one(store, "a2", "a", at=T0 + 2)
        b1 = await one(store, "b1", "b", at=T0 + 3)
        b2 = await one(store, "b2", "b", at=T0 + 4)
        claimed, _ = await store.claim_due({"a": 0}, set(), T0 + 10)
        assert claimed == []
        claimed, _ = await store.claim_due({"a": 0, "b": 2}, {b1}, T0 + 10)
        assert ids_of(claimed) == [b2]

    run(go())


def test_claim_due_leaves_work_not_yet_due_and_other_destinations(store: Store) -> None:
    async def go() -> None:
        soon = await one(store, "a1", "a", at=T0 + 20)
        later = await one(store, "a2", "a", at=T0 + 30)
        other = await one(store, "b1", "b", at=T0)

        claimed, next_due = await store.claim_due({"a": 5}, set(), T0 + 10)
        assert (claimed, next_due) == ([], T0 + 20)
        claimed, next_due = await store.claim_due({"a": 5}, set(), T0 + 20)
        assert (ids_of(claimed), next_due) == ([soon], None)
        await store.release(ids_of(claimed))
        claimed, _ = await store.claim_due({"a": 5}, set(), T0 + 30)
        assert ids_of(claimed) == [soon, later]

        # A destination not wanted is neither claimed nor counted for the next due time.
        claimed, next_due = await store.claim_due({"c": 5}, set(), T0 + 100)
        assert (claimed, next_due) == ([], None)
        claimed, next_due = await store.claim_due({}, set(), T0 + 100)
        assert (claimed, next_due) == ([], None)
        claimed, next_due = await store.claim_due({"b": 5}, {other}, T0 + 100)
        assert (claimed, next_due) == ([], T0)  # wanted: counted, though in flight

    run(go())


def test_claim_due_next_due_is_none_when_all_is_finished(store: Store) -> None:
    async def go() -> None:
        d = await one(store, "k")
        await store.record_attempts([attempt(d, 1, DELIVERED, T0 + 1, outcome="delivered")])
        assert await store.claim_due({"slack": 5}, set(), T0 + 100) == ([], None)

    run(go())


# -- record_attempts ---------------------------------------------------------------------


def test_record_attempts_retry_then_delivered(store: Store) -> None:
    async def go() -> None:
        d = await one(store, "k", at=T0)
        first = attempt(d, 1, RETRYING, T0 + 5, next_at=T0 + 65, error="HTTP 503")
        await store.record_attempts([first])
        row = await store.get_delivery(d)
        assert row is not None
        assert pick(
            row, "state", "attempts", "next_attempt_at", "last_error", "updated_at"
        ) == dict(
            state="retrying",
            attempts=1,
            next_attempt_at=T0 + 65,
            last_error="HTTP 503",
            updated_at=T0 + 6,
        )
        assert await store.claim_due({"slack": 5}, set(), T0 + 64.999) == ([], T0 + 65)
        claimed, _ = await store.claim_due({"slack": 5}, set(), T0 + 65)
        assert [(c.id, c.attempts) for c in claimed] == [(d, 1)]
        assert await store.waiting_by_destination() == {"slack": 1}

        second = Attempt(
            d, 2, T0 + 65.5, 1234.5, "timeout", "timed out", Decision(RETRYING, T0 + 200), T0 + 67
        )
        third = Attempt(d, 3, T0 + 200.25, 80.0, "delivered", None, Decision(DELIVERED), T0 + 201)
        await store.record_attempts([second])
        await store.record_attempts([third])
        row = await store.get_delivery(d)
        assert row is not None
        assert pick(
            row, "state", "attempts", "next_attempt_at", "last_error", "updated_at"
        ) == dict(
            state="delivered",
            attempts=3,
            next_attempt_at=None,
            last_error=None,
            updated_at=T0 + 201,
        )
        assert row["attempts_log"] == [
            dict(
                number=1,
                started_at=T0 + 5,
                duration_ms=250.0,
                outcome="failed",
                error="HTTP 503",
                held=False,
                late=False,
            ),
            dict(
                number=2,
                started_at=T0 + 65.5,
                duration_ms=1234.5,
                outcome="timeout",
                error="timed out",
                held=False,
                late=False,
            ),
            dict(
                number=3,
                started_at=T0 + 200.25,
                duration_ms=80.0,
                outcome="delivered",
                error=None,
                held=False,
                late=False,
            ),
        ]
        assert await store.claim_due({"slack": 5}, set(), T0 + 10**6) == ([], None)
        assert await store.waiting_by_destination() == {}

    run(go())


def test_attempts_log_in_order_when_held_attempts_share_a_number(store: Store) -> None:
    # A held attempt (the circuit open) spends no attempt, so the next one has its number:
    # the log lists attempts by number, and those sharing one in the order they were made.
    async def go() -> None:
        d = await one(store, "k", at=T0)
        held = [
            replace(attempt(d, 1, RETRYING, T0 + 10 * i, next_at=T0 + 10 * i + 5), held=True)
            for i in range(1, 8)
        ]
        await store.record_attempts(held[:3])
        await store.record_attempts([held[3]])
        await store.record_attempts(held[4:])
        await store.record_attempts([attempt(d, 1, DELIVERED, T0 + 90, outcome="delivered")])
        row = await store.get_delivery(d)
        assert row is not None
        assert row["attempts"] == 1
        log = [(a["number"], a["started_at"], a["held"]) for a in row["attempts_log"]]
        assert log == [(1, h.started_at, True) for h in held] + [(1, T0 + 90, False)]

    run(go())


def test_record_attempts_dead_finishes_and_several_at_once(store: Store) -> None:
    async def go() -> None:
        dead = await one(store, "a", at=T0)
        done = await one(store, "b", at=T0)
        retry = await one(store, "c", at=T0)
        await store.record_attempts(
            [
                attempt(dead, 1, DEAD, T0 + 1, error="HTTP 400: bad payload"),
                attempt(done, 1, DELIVERED, T0 + 1, outcome="delivered"),
                attempt(retry, 1, RETRYING, T0 + 1, next_at=T0 + 30, error="HTTP 502"),
            ]
        )
        rows = {d: await store.get_delivery(d) for d in (dead, done, retry)}
        got = {
            d: pick(r or {}, "state", "attempts", "next_attempt_at", "last_error")
            for d, r in rows.items()
        }
        assert got == {
            dead: dict(
                state="dead", attempts=1, next_attempt_at=None, last_error="HTTP 400: bad payload"
            ),
            done: dict(state="delivered", attempts=1, next_attempt_at=None, last_error=None),
            retry: dict(
                state="retrying", attempts=1, next_attempt_at=T0 + 30, last_error="HTTP 502"
            ),
        }
        assert [len((r or {})["attempts_log"]) for r in rows.values()] == [1, 1, 1]
        claimed, next_due = await store.claim_due({"slack": 5}, set(), T0 + 10**6)
        assert (ids_of(claimed), next_due) == ([retry], None)

    run(go())


# -- waiting_by_destination --------------------------------------------------------------


def test_waiting_by_destination_counts_unfinished(store: Store) -> None:
    async def go() -> None:
        assert await store.waiting_by_destination() == {}
        _, a = await routed(store, "e1", [message("a"), message("a"), message("a"), message("a")])
        await routed(store, "e2", [message("b"), message("b", error="no template")])
        _, c = await routed(store, "e3", [message("c"), message("c")])
        await store.record_attempts(
            [
                attempt(a[0], 1, RETRYING, T0 + 1, next_at=T0 + 100),
                attempt(a[1], 1, DELIVERED, T0 + 1, outcome="delivered"),
                attempt(c[0], 1, DEAD, T0 + 1),
                attempt(c[1], 1, DELIVERED, T0 + 1, outcome="delivered"),
            ]
        )
        assert await store.waiting_by_destination() == {"a": 3, "b": 1}

    run(go())


# -- replay ------------------------------------------------------------------------------


def test_replay_only_finished_deliveries(store: Store) -> None:
    async def go() -> None:
        event_id, (delivered, dead, pending, failed, retrying) = await routed(
            store,
            "k",
            [
                message("a", rule="r1", item_index=3),
                message("b", rule="r2"),
                message("c"),
                message("d", error="bad template"),
                message("e"),
            ],
        )
        await store.record_attempts(
            [
                attempt(delivered, 1, DELIVERED, T0 + 1, outcome="delivered"),
                attempt(dead, 2, DEAD, T0 + 1, error="HTTP 410"),
                attempt(retrying, 1, RETRYING, T0 + 1, next_at=T0 + 500),
            ]
        )
        unknown = retrying + 1000
        now = T0 + 50
        made = await store.replay([unknown, pending, delivered, failed, retrying, dead], now)
        assert [original for original, _ in made] == [delivered, dead]
        (_, new_delivered), (_, new_dead) = made
        assert len({new_delivered, new_dead, delivered, dead, pending, failed, retrying}) == 7

        keys = ("event_id", "rule", "destination", "item_index", "title", "body", "format")
        for original, new in made:
            old_row, new_row = await store.get_delivery(original), await store.get_delivery(new)
            assert old_row is not None
            assert new_row is not None
            assert pick(new_row, *keys) == pick(old_row, *keys)
            assert pick(
                new_row, "state", "attempts", "next_attempt_at", "created_at", "replay_of",
                "last_error", "attempts_log",
            ) == dict(
                state="pending", attempts=0, next_attempt_at=now, created_at=now,
                replay_of=original, last_error=None, attempts_log=[],
            )  # fmt: skip
            assert new_row["event"]["id"] == event_id
            assert old_row["replay_of"] is None
        # The originals stay as they were.
        states = {d["id"]: d["state"] for d in await store.list_deliveries()}
        assert [states[i] for i in (delivered, dead, pending, failed, retrying)] == [
            "delivered", "dead", "pending", "failed", "retrying",
        ]  # fmt: skip
        assert (states[new_delivered], states[new_dead]) == ("pending", "pending")

        claimed, _ = await store.claim_due({"a": 5, "b": 5}, set(), now)
        assert sorted(ids_of(claimed)) == sorted([new_delivered, new_dead])
        event = await store.get_event(event_id)
        assert event is not None
        assert len(event["deliveries"]) == 7
        assert await store.replay([], now) == []

    run(go())


def test_replay_dead_since(store: Store) -> None:
    async def go() -> None:
        _, (early, on_time, late, delivered, waiting) = await routed(
            store, "k", [message("a"), message("a"), message("a"), message("a"), message("a")]
        )
        # attempt() records at its start + 1: these went dead at T0+6, T0+10 and T0+11.
        await store.record_attempts(
            [
                attempt(early, 1, DEAD, T0 + 5),
                attempt(on_time, 1, DEAD, T0 + 9),
                attempt(late, 1, DEAD, T0 + 10),
                attempt(delivered, 1, DELIVERED, T0 + 20, outcome="delivered"),
                attempt(waiting, 1, RETRYING, T0 + 20, next_at=T0 + 99),
            ]
        )
        made = await store.replay_dead(T0 + 10, T0 + 30)
        assert sorted(original for original, _ in made) == [on_time, late]
        for original, new in made:
            row = await store.get_delivery(new)
            assert row is not None
            assert (row["state"], row["replay_of"], row["next_attempt_at"]) == (
                "pending",
                original,
                T0 + 30,
            )
        assert await store.replay_dead(T0 + 12, T0 + 30) == []
        made = await store.replay_dead(0.0, T0 + 40)
        assert sorted(original for original, _ in made) == [early, on_time, late]

    run(go())


# -- queue_stats -------------------------------------------------------------------------


def test_queue_stats(store: Store) -> None:
    async def go() -> None:
        stats = await store.queue_stats(T0)
        assert (nonzero(stats.depth), stats.oldest_age, stats.awaiting_routing) == ({}, 0.0, 0)

        for key in ("waiting1", "waiting2", "waiting3"):
            await store.add_event(new_event(key))
        _, (old_retry, old_done) = await routed(store, "e1", [message(), message()], at=T0 + 10)
        _, (new_pending, new_dead, _failed) = await routed(
            store, "e2", [message(), message(), message(error="bad")], at=T0 + 40
        )
        unrouted, _ = await store.add_event(new_event("e3"))
        await store.save_routings([Routing(unrouted, ())], T0 + 41)
        await store.record_attempts(
            [
                attempt(old_retry, 1, RETRYING, T0 + 50, next_at=T0 + 500),
                attempt(old_done, 1, DELIVERED, T0 + 50, outcome="delivered"),
                attempt(new_dead, 1, DEAD, T0 + 50),
            ]
        )
        stats = await store.queue_stats(T0 + 100)
        assert nonzero(stats.depth) == {"pending": 1, "retrying": 1}
        assert stats.oldest_age == 90.0  # created at T0+10, retrying since
        assert stats.awaiting_routing == 3

        await store.record_attempts([attempt(old_retry, 2, DEAD, T0 + 101)])
        stats = await store.queue_stats(T0 + 100)
        assert (nonzero(stats.depth), stats.oldest_age) == ({"pending": 1}, 60.0)
        await store.record_attempts(
            [attempt(new_pending, 1, DELIVERED, T0 + 101, outcome="delivered")]
        )
        stats = await store.queue_stats(T0 + 100)
        assert (nonzero(stats.depth), stats.oldest_age, stats.awaiting_routing) == ({}, 0.0, 3)

    run(go())


# -- list_deliveries, list_events, get_* -------------------------------------------------


def test_list_deliveries_filters_newest_first(store: Store) -> None:
    async def go() -> None:
        _, (d1, d2) = await routed(
            store, "e1", [message("a", rule="r1"), message("b", rule="r2")], at=T0 + 1
        )
        e2, (d3,) = await routed(store, "e2", [message("a", rule="r2")], at=T0 + 2)
        _, (d4, d5) = await routed(
            store, "e3", [message("b", rule="r1"), message("a", rule="r1", error="x")], at=T0 + 3
        )
        await store.record_attempts(
            [
                attempt(d1, 1, DELIVERED, T0 + 10, outcome="delivered"),
                attempt(d3, 1, RETRYING, T0 + 10, next_at=T0 + 60, error="HTTP 500"),
            ]
        )

        async def listed(**kw: Any) -> list[int]:
            return [r["id"] for r in await store.list_deliveries(**kw)]

        assert await listed() == [d5, d4, d3, d2, d1]
        assert await listed(state="pending") == [d4, d2]
        assert await listed(state="retrying") == [d3]
        assert await listed(state="failed") == [d5]
        assert await listed(state="dead") == []
        assert await listed(rule="r2") == [d3, d2]
        assert await listed(destination="a") == [d5, d3, d1]
        assert await listed(since=T0 + 2) == [d5, d4, d3]
        assert await listed(since=T0 + 2.5) == [d5, d4]
        assert await listed(limit=2) == [d5, d4]
        assert await listed(destination="a", rule="r1") == [d5, d1]
        assert await listed(destination="b", state="pending", since=T0 + 1) == [d4, d2]
        assert await listed(destination="a", state="pending") == []
        assert await listed(rule="nope") == []

        (row,) = await store.list_deliveries(state="retrying")
        assert pick(
            row, "id", "event_id", "source", "event_type", "rule", "destination", "item_index",
            "state", "attempts", "title", "created_at", "updated_at", "next_attempt_at",
            "last_error", "replay_of",
        ) == dict(
            id=d3, event_id=e2, source="shop", event_type="order.paid", rule="r2", destination="a",
            item_index=None, state="retrying", attempts=1, title="title r2", created_at=T0 + 2,
            updated_at=T0 + 11, next_attempt_at=T0 + 60, last_error="HTTP 500", replay_of=None,
        )  # fmt: skip

    run(go())


def test_list_events_filters_newest_first(store: Store) -> None:
    async def go() -> None:
        e1, _ = await routed(store, "k1", [message(), message("b")], at=T0 + 1)
        e2, _ = await store.add_event(new_event("k2", at=T0 + 2, event_type="refund"))
        e3, _ = await store.add_event(new_event("k3", at=T0 + 3))
        await store.save_routings([Routing(e3, ())], T0 + 3)
        e4, _ = await store.add_event(new_event("k4", at=T0 + 4))

        async def listed(**kw: Any) -> list[int]:
            return [r["id"] for r in await store.list_events(**kw)]

        assert await listed() == [e4, e3, e2, e1]
        assert await listed(state="received") == [e4, e2]
        assert await listed(state="routed") == [e1]
        assert await listed(state="unrouted") == [e3]
        assert await listed(since=T0 + 2) == [e4, e3, e2]
        assert await listed(since=T0 + 2.5, state="received") == [e4]
        assert await listed(limit=3) == [e4, e3, e2]
        assert await listed(limit=1, state="received") == [e4]

        rows = {r["id"]: r for r in await store.list_events()}
        assert pick(
            rows[e1], "source", "event_key", "event_type", "received_at", "state", "deliveries"
        ) == dict(
            source="shop",
            event_key="k1",
            event_type="order.paid",
            received_at=T0 + 1,
            state="routed",
            deliveries=2,
        )
        assert pick(rows[e2], "event_key", "event_type", "state", "deliveries") == dict(
            event_key="k2", event_type="refund", state="received", deliveries=0
        )

    run(go())


def test_get_unknown_is_none(store: Store) -> None:
    async def go() -> None:
        event_id, (d,) = await routed(store, "k", [message()])
        assert await store.get_event(event_id + 1000) is None
        assert await store.get_delivery(d + 1000) is None

    run(go())


# -- silences ----------------------------------------------------------------------------

SHOP = Matcher("source", "=", "shop")
NOT_PAGER = Matcher("destination", "!~", "pager|sms")
ORDER_RE = Matcher("payload.order.id", "=~", r"65a7.*|x\d+")  # a regex, backslash and all
QUOTED = Matcher("item.name", "!=", 'say "hé" ☃')  # quotes and unicode
# str(Matcher) as list_silences gives it: the value JSON-quoted, unicode kept.
SHOP_TEXT = 'source="shop"'
NOT_PAGER_TEXT = 'destination!~"pager|sms"'
ORDER_RE_TEXT = r'payload.order.id=~"65a7.*|x\\d+"'
QUOTED_TEXT = 'item.name!="say \\"hé\\" ☃"'

SILENCE_KEYS = (
    "id", "matchers", "starts_at", "ends_at", "comment", "author", "created_at", "state", "held",
)  # fmt: skip


async def delivery_ids(store: Store, event_id: int) -> list[int]:
    event = await store.get_event(event_id)
    assert event is not None
    return [d["id"] for d in event["deliveries"]]


def test_add_silence_ids_increase_and_active_silences_are_those_in_force(store: Store) -> None:
    async def go() -> None:
        assert await store.active_silences(T0) == []
        spans = [
            ((SHOP,), T0, T0 + 100),
            ((NOT_PAGER,), T0 + 20, T0 + 50),  # starts later
            ((SHOP, NOT_PAGER), T0 - 100, T0 + 5),  # backdated; ends as the next one starts
            ((ORDER_RE, QUOTED), T0 + 5, T0 + 200),
        ]
        ids = [
            await store.add_silence(list(m), starts, ends, f"why {i}", f"who {i}", T0 + i)
            for i, (m, starts, ends) in enumerate(spans)
        ]
        assert sorted(set(ids)) == ids  # increasing
        s1, s2, s3, s4 = (
            Silence(ids[i], m, starts, ends, f"why {i}", f"who {i}", T0 + i)
            for i, (m, starts, ends) in enumerate(spans)
        )

        # In force: starts_at <= now < ends_at; oldest first; matchers as they were given.
        assert await store.active_silences(T0 - 100.001) == []
        assert await store.active_silences(T0 - 100) == [s3]
        assert await store.active_silences(T0) == [s1, s3]
        assert await store.active_silences(T0 + 5) == [s1, s4]
        assert await store.active_silences(T0 + 19.999) == [s1, s4]
        assert await store.active_silences(T0 + 20) == [s1, s2, s4]
        assert await store.active_silences(T0 + 50) == [s1, s4]
        assert await store.active_silences(T0 + 100) == [s4]
        assert await store.active_silences(T0 + 200) == []
        (got,) = [s for s in await store.active_silences(T0 + 10) if s.id == s4.id]
        assert got.matchers == (
            Matcher("payload.order.id", "=~", "65a7.*|x\\d+"),
            Matcher("item.name", "!=", 'say "hé" ☃'),
        )

    run(go())


def test_list_silences_newest_first_with_state_matchers_and_held(store: Store) -> None:
    async def go() -> None:
        assert await store.list_silences(T0) == []
        ended = await store.add_silence([SHOP], T0 - 100, T0 - 10, "old", "ann", T0 - 100)
        active = await store.add_silence(
            [ORDER_RE, QUOTED], T0 - 5, T0 + 100, "deploy", "bob", T0 - 5
        )
        pending = await store.add_silence([NOT_PAGER], T0 + 50, T0 + 80, "window", "cy", T0 - 1)

        # Held: two messages muted when routed and one muted later, all by `active`; one by
        # `ended` while it was in force; none by `pending`. The rest are not held.
        await routed(store, "old", [message("sms", silence_id=ended)], at=T0 - 50)
        _, (_, _, _, late) = await routed(
            store,
            "k",
            [
                message("slack", silence_id=active),
                message("pager", silence_id=active),
                message("slack"),
                message("email"),
            ],
        )
        assert await store.mute([(late, active)], T0 + 1) == [late]

        rows = await store.list_silences(T0 + 10)
        assert [pick(r, *SILENCE_KEYS) for r in rows] == [
            dict(
                id=pending, matchers=[NOT_PAGER_TEXT], starts_at=T0 + 50, ends_at=T0 + 80,
                comment="window", author="cy", created_at=T0 - 1, state="pending", held=0,
            ),
            dict(
                id=active, matchers=[ORDER_RE_TEXT, QUOTED_TEXT], starts_at=T0 - 5,
                ends_at=T0 + 100, comment="deploy", author="bob", created_at=T0 - 5,
                state="active", held=3,
            ),
        ]  # fmt: skip
        rows = await store.list_silences(T0 + 10, include_ended=True)
        assert [r["id"] for r in rows] == [pending, active, ended]
        assert pick(rows[2], *SILENCE_KEYS) == dict(
            id=ended, matchers=[SHOP_TEXT], starts_at=T0 - 100, ends_at=T0 - 10, comment="old",
            author="ann", created_at=T0 - 100, state="ended", held=1,
        )  # fmt: skip

        async def states(now: float, include_ended: bool = False) -> list[tuple[int, str]]:
            return [(r["id"], r["state"]) for r in await store.list_silences(now, include_ended)]

        # The state follows now: pending until starts_at, ended from ends_at.
        assert await states(T0 - 200) == [
            (pending, "pending"), (active, "pending"), (ended, "pending"),
        ]  # fmt: skip
        assert await states(T0 + 50) == [(pending, "active"), (active, "active")]
        assert await states(T0 + 80) == [(active, "active")]
        assert await states(T0 + 80, include_ended=True) == [
            (pending, "ended"), (active, "active"), (ended, "ended"),
        ]  # fmt: skip
        assert await states(T0 + 100) == []

    run(go())


def test_expire_silence_ends_it_now(store: Store) -> None:
    async def go() -> None:
        silence = await store.add_silence([SHOP], T0, T0 + 100, "deploy", "bob", T0)
        other = await store.add_silence([NOT_PAGER], T0, T0 + 100, "other", "bob", T0)
        over = await store.add_silence([SHOP], T0 - 50, T0 - 10, "over", "bob", T0 - 50)
        _, (held,) = await routed(store, "k", [message(silence_id=silence)], at=T0 + 1)

        assert await store.expire_silence(silence, T0 + 10) is True
        assert await store.expire_silence(silence, T0 + 11) is False  # ended already
        assert await store.expire_silence(over, T0 + 10) is False  # ended by itself
        assert await store.expire_silence(other + 1000, T0 + 10) is False  # unknown
        assert [s.id for s in await store.active_silences(T0 + 10)] == [other]
        assert [r["id"] for r in await store.list_silences(T0 + 10)] == [other]
        rows = {r["id"]: r for r in await store.list_silences(T0 + 10, include_ended=True)}
        assert pick(rows[silence], "starts_at", "ends_at", "state", "held", "comment") == dict(
            starts_at=T0, ends_at=T0 + 10, state="ended", held=1, comment="deploy"
        )
        assert pick(rows[over], "ends_at", "state") == dict(ends_at=T0 - 10, state="ended")
        assert pick(rows[other], "ends_at", "state") == dict(ends_at=T0 + 100, state="active")

        # Ending a silence sends nothing: what it held stays silenced, and held.
        row = await store.get_delivery(held)
        assert pick(row or {}, "state", "silence_id") == dict(state="silenced", silence_id=silence)
        assert await store.claim_due({"slack": 5}, set(), T0 + 10**6) == ([], None)

        # At its ends_at a silence has ended already.
        assert await store.expire_silence(other, T0 + 100) is False
        assert [r["ends_at"] for r in await store.list_silences(T0, include_ended=True)] == [
            T0 - 10, T0 + 100, T0 + 10,
        ]  # fmt: skip

    run(go())


def test_expire_silence_before_it_starts(store: Store) -> None:
    async def go() -> None:
        silence = await store.add_silence([SHOP], T0 + 50, T0 + 100, "later", "bob", T0)
        assert await store.expire_silence(silence, T0 + 10) is True
        assert await store.active_silences(T0 + 50) == []
        assert await store.list_silences(T0 + 10) == []
        (row,) = await store.list_silences(T0 + 10, include_ended=True)
        assert pick(row, "starts_at", "ends_at") == dict(starts_at=T0 + 50, ends_at=T0 + 10)
        # Expired, so ended (found by this test: it was called pending, since now < starts_at).
        assert row["state"] == "ended"

    run(go())


def test_save_routings_keeps_a_silenced_message_silenced(store: Store) -> None:
    async def go() -> None:
        silence = await store.add_silence([SHOP], T0, T0 + 100, "deploy", "bob", T0)
        event_id, (sent, held, held_item, failed) = await routed(
            store,
            "k",
            [
                message("slack", rule="r1"),
                message("slack", rule="r2", silence_id=silence),
                message("pager", rule="r2", item_index=0, item={"sku": "a"}, silence_id=silence),
                message("pager", rule="r3", error="bad template"),
            ],
            at=T0 + 1,
        )
        event = await store.get_event(event_id)
        assert event is not None
        assert event["state"] == "routed"
        assert [d["state"] for d in event["deliveries"]] == [
            "pending", "silenced", "silenced", "failed",
        ]  # fmt: skip
        for d in (held, held_item):
            row = await store.get_delivery(d)
            assert row is not None
            assert pick(
                row, "state", "silence_id", "next_attempt_at", "attempts", "last_error",
                "created_at", "updated_at", "replay_of",
            ) == dict(
                state="silenced", silence_id=silence, next_attempt_at=None, attempts=0,
                last_error=None, created_at=T0 + 1, updated_at=T0 + 1, replay_of=None,
            )  # fmt: skip
        for d in (sent, failed):
            assert (await store.get_delivery(d) or {})["silence_id"] is None

        # Never due, never waiting, not in the queue.
        claimed, next_due = await store.claim_due({"slack": 10, "pager": 10}, set(), T0 + 10**6)
        assert (ids_of(claimed), next_due) == ([sent], None)
        assert await store.waiting_by_destination() == {"slack": 1}
        assert nonzero((await store.queue_stats(T0 + 1)).depth) == {"pending": 1}
        assert [r["id"] for r in await store.list_deliveries(state="silenced")] == [
            held_item,
            held,
        ]
        assert [r["held"] for r in await store.list_silences(T0 + 1)] == [2]

    run(go())


def test_silence_facts_what_matchers_read(store: Store) -> None:
    async def go() -> None:
        payload = {"order": {"id": "65a7x", "total": 12.5}, "tags": ["a", "ü"]}
        item = {"name": 'say "hé" ☃', "n": [1, 2]}
        billing, _ = await store.add_event(
            new_event(
                "k1",
                source="billing",
                event_type="invoice.failed",
                body={"payload": payload, "other": 1},
            )
        )
        silence = await store.add_silence([SHOP], T0, T0 + 100, "deploy", "bob", T0)
        routing = Routing(
            billing,
            (
                message("slack", rule="r2", item_index=0, item=item),
                message("pager", rule="r3"),
                message("email", rule="r4", item_index=1, item=0),  # a falsy item is an item
                message("sms", rule="r5", item_index=2, item="text", silence_id=silence),
            ),
        )
        assert await store.save_routings([routing], T0) == [True]
        with_item, without, zero, silenced = await delivery_ids(store, billing)
        # Bodies with no `payload`: an object without the key, and a list.
        _, (plain,) = await routed(store, "k2", [message()])
        listy, _ = await store.add_event(new_event("k3", body=["not", "an", "object"]))
        assert await store.save_routings([Routing(listy, (message(rule="r6"),))], T0) == [True]
        (from_list,) = await delivery_ids(store, listy)

        unknown = from_list + 1000
        facts = await store.silence_facts([with_item, unknown, without, zero, silenced, plain])
        assert facts == {
            with_item: SilenceFacts("billing", "invoice.failed", "r2", "slack", payload, item),
            without: SilenceFacts("billing", "invoice.failed", "r3", "pager", payload, None),
            zero: SilenceFacts("billing", "invoice.failed", "r4", "email", payload, 0),
            silenced: SilenceFacts("billing", "invoice.failed", "r5", "sms", payload, "text"),
            plain: SilenceFacts("shop", "order.paid", "r1", "slack", None, None),
        }
        assert await store.silence_facts([from_list]) == {
            from_list: SilenceFacts("shop", "order.paid", "r6", "slack", None, None)
        }
        assert await store.silence_facts([]) == {}
        assert await store.silence_facts([unknown]) == {}

    run(go())


def test_mute_silences_unfinished_work_only(store: Store) -> None:
    async def go() -> None:
        first = await store.add_silence([SHOP], T0, T0 + 100, "a", "bob", T0)
        second = await store.add_silence([NOT_PAGER], T0, T0 + 100, "b", "bob", T0)
        _, (pending, retrying, delivered, dead, failed, held) = await routed(
            store,
            "k",
            [
                message("a"),
                message("b"),
                message("c"),
                message("d"),
                message("e", error="bad template"),
                message("f", silence_id=first),
            ],
        )
        await store.record_attempts(
            [
                attempt(retrying, 1, RETRYING, T0 + 1, next_at=T0 + 60, error="HTTP 503"),
                attempt(delivered, 1, DELIVERED, T0 + 1, outcome="delivered"),
                attempt(dead, 1, DEAD, T0 + 1, error="HTTP 410"),
            ]
        )
        wants = {d: 5 for d in "abcdef"}
        claimed, _ = await store.claim_due(wants, set(), T0 + 60)
        assert sorted(ids_of(claimed)) == sorted([pending, retrying])
        before = {d: await store.get_delivery(d) for d in (delivered, dead, failed, held)}

        unknown = held + 1000
        asked = [pending, retrying, delivered, dead, failed, held, unknown]
        muted = await store.mute([(d, second) for d in asked], T0 + 20)
        assert sorted(muted) == sorted([pending, retrying])
        for d, attempts in ((pending, 0), (retrying, 1)):
            row = await store.get_delivery(d)
            assert row is not None
            assert pick(
                row, "state", "silence_id", "next_attempt_at", "updated_at", "attempts"
            ) == dict(
                state="silenced",
                silence_id=second,
                next_attempt_at=None,
                updated_at=T0 + 20,
                attempts=attempts,
            )
        # Finished ones (and one silenced already, by another silence) are left exactly alone.
        assert {d: await store.get_delivery(d) for d in before} == before

        assert await store.claim_due(wants, set(), T0 + 10**6) == ([], None)
        assert await store.waiting_by_destination() == {}
        assert nonzero((await store.queue_stats(T0 + 20)).depth) == {}
        assert await store.mute([(d, second) for d in asked], T0 + 21) == []
        assert await store.mute([], T0 + 21) == []
        held_by = {r["id"]: r["held"] for r in await store.list_silences(T0 + 21)}
        assert held_by == {first: 1, second: 2}

    run(go())


def test_replay_a_silenced_delivery_sends_a_copy_with_its_item(store: Store) -> None:
    async def go() -> None:
        silence = await store.add_silence([SHOP], T0, T0 + 100, "deploy", "bob", T0)
        payload = {"order": {"id": "65a7"}}
        event_id, _ = await store.add_event(new_event("k", body={"payload": payload}))
        item = {"sku": "ü-1", "qty": 2}
        routing = Routing(
            event_id,
            (
                message("slack", rule="r1", item_index=0, item=item, silence_id=silence),
                message("slack", rule="r2", silence_id=silence),
                message("pager", rule="r3", item_index=1, item=["x", None]),
            ),
        )
        assert await store.save_routings([routing], T0) == [True]
        at_routing, no_item, to_mute = await delivery_ids(store, event_id)
        assert await store.mute([(to_mute, silence)], T0 + 5) == [to_mute]

        now = T0 + 30
        made = await store.replay([at_routing, no_item, to_mute], now)
        assert [original for original, _ in made] == [at_routing, no_item, to_mute]
        copies = [new for _, new in made]
        assert len({*copies, at_routing, no_item, to_mute}) == 6

        keys = ("event_id", "rule", "destination", "item_index", "title", "body", "format")
        for original, new in made:
            old_row, new_row = await store.get_delivery(original), await store.get_delivery(new)
            assert old_row is not None
            assert new_row is not None
            assert pick(new_row, *keys) == pick(old_row, *keys)
            assert pick(
                new_row, "state", "silence_id", "replay_of", "attempts", "next_attempt_at",
                "created_at", "attempts_log",
            ) == dict(
                state="pending", silence_id=None, replay_of=original, attempts=0,
                next_attempt_at=now, created_at=now, attempts_log=[],
            )  # fmt: skip
            # The original stays silenced, by its silence.
            assert pick(old_row, "state", "silence_id") == dict(
                state="silenced", silence_id=silence
            )

        # The copies keep the item, and say they are replays (which silences let through:
        # a person asked for them).
        assert await store.silence_facts(copies) == {
            copies[0]: SilenceFacts("shop", "order.paid", "r1", "slack", payload, item, True),
            copies[1]: SilenceFacts("shop", "order.paid", "r2", "slack", payload, None, True),
            copies[2]: SilenceFacts(
                "shop", "order.paid", "r3", "pager", payload, ["x", None], True
            ),
        }
        claimed, _ = await store.claim_due({"slack": 5, "pager": 5}, set(), now)
        assert sorted(ids_of(claimed)) == sorted(copies)
        assert await store.waiting_by_destination() == {"slack": 2, "pager": 1}
        # A copy is not held: the silence still counts the three it muted.
        assert [r["held"] for r in await store.list_silences(now)] == [3]

    run(go())


# -- groups ------------------------------------------------------------------------------
# A message whose rule groups it joins the open group of its (rule, destination, key)
# instead of going alone; the group goes once, as one digest, when it is due.

WAIT = 60.0  # a group's first message waits this long for company
ANY_TIME = T0 + 10**6  # late enough for every group below to be due


def grouped(
    key: str,
    destination: str = "slack",
    *,
    rule: str = "r1",
    wait: float = WAIT,
    interval: float | None = None,
    max: int | None = None,
    title: str | None = None,
    item_index: int | None = None,
    item: Any = None,
    severity: str = "info",
) -> Message:
    """A message of `rule` folded into the group of `key` (titled `title r1` unless told)."""
    title = f"title {rule}" if title is None else title
    return Message(
        rule,
        destination,
        item_index,
        title,
        f"body of {title}",
        "markdown",
        severity=severity,
        item=item,
        grouping=Grouping(key, wait, interval, max),
    )


async def unsent_groups(store: Store) -> list[DueGroup]:
    """Every group not sent yet (due or not), soonest due first."""
    return await store.due_groups(ANY_TIME, 100)


def test_messages_of_one_key_join_one_open_group(store: Store) -> None:
    async def go() -> None:
        assert await store.next_group_due() is None
        assert await unsent_groups(store) == []

        e1, (d1,) = await routed(store, "e1", [grouped("db")], at=T0)
        (g,) = await unsent_groups(store)
        first = DueGroup(g.id, "r1", "slack", "db", 1, e1, "markdown", "info", T0, T0, "wait")
        assert g == first
        assert await store.next_group_due() == T0 + WAIT

        # Later messages of the key join it: it counts them, and keeps its first event and
        # its due time (the first message's time plus wait).
        _, (d2,) = await routed(store, "e2", [grouped("db")], at=T0 + 10)
        assert await unsent_groups(store) == [replace(first, count=2, last_at=T0 + 10)]
        _, (d3,) = await routed(store, "e3", [grouped("db")], at=T0 + 20)
        assert await unsent_groups(store) == [replace(first, count=3, last_at=T0 + 20)]
        assert await store.next_group_due() == T0 + WAIT
        assert await store.due_groups(T0 + WAIT - 0.001, 10) == []
        assert await store.due_groups(T0 + WAIT, 10) == [replace(first, count=3, last_at=T0 + 20)]

        # Its messages wait in it: grouped, never due, not waiting, not claimable.
        for d, at in ((d1, T0), (d2, T0 + 10), (d3, T0 + 20)):
            row = await store.get_delivery(d)
            assert row is not None
            assert pick(
                row, "state", "next_attempt_at", "attempts", "last_error", "created_at",
                "updated_at", "title", "body",
            ) == dict(
                state="grouped", next_attempt_at=None, attempts=0, last_error=None,
                created_at=at, updated_at=at, title="title r1", body="body of title r1",
            )  # fmt: skip
        event = await store.get_event(e1)
        assert event is not None
        assert event["state"] == "routed"
        assert [d["state"] for d in event["deliveries"]] == ["grouped"]
        assert await store.claim_due({"slack": 10}, set(), ANY_TIME) == ([], None)
        assert await store.waiting_by_destination() == {}
        assert [r["id"] for r in await store.list_deliveries(state="grouped")] == [d3, d2, d1]

    run(go())


def test_another_key_destination_or_rule_makes_another_group(store: Store) -> None:
    async def go() -> None:
        e1, _ = await routed(store, "e1", [grouped("db")], at=T0)
        e2, _ = await routed(store, "e2", [grouped("web")], at=T0 + 1)
        e3, _ = await routed(store, "e3", [grouped("db", "pager")], at=T0 + 2)
        e4, _ = await routed(store, "e4", [grouped("db", rule="r2")], at=T0 + 3)
        # One event's messages (two items to slack, one to pager) join the groups open.
        await routed(
            store,
            "e5",
            [
                grouped("db", item_index=0, item="a"),
                grouped("db", item_index=1, item="b"),
                grouped("db", "pager"),
            ],
            at=T0 + 4,
        )

        groups = await unsent_groups(store)
        assert len({g.id for g in groups}) == 4
        assert [
            (g.rule, g.destination, g.key, g.count, g.event_id, g.first_at, g.last_at)
            for g in groups
        ] == [
            ("r1", "slack", "db", 3, e1, T0, T0 + 4),
            ("r1", "slack", "web", 1, e2, T0 + 1, T0 + 1),
            ("r1", "pager", "db", 2, e3, T0 + 2, T0 + 4),
            ("r2", "slack", "db", 1, e4, T0 + 3, T0 + 3),
        ]
        assert await store.next_group_due() == T0 + WAIT
        assert await store.claim_due({"slack": 10, "pager": 10}, set(), ANY_TIME) == ([], None)

    run(go())


def test_due_groups_oldest_due_first_honours_limit_and_changes_nothing(store: Store) -> None:
    async def go() -> None:
        # Made in one order, due in another: a waits 100 s, b 10 s, c 50 s.
        await routed(store, "e1", [grouped("a", wait=100)], at=T0)
        await routed(store, "e2", [grouped("b", wait=10)], at=T0 + 1)
        await routed(store, "e3", [grouped("c", wait=50)], at=T0 + 2)
        assert await store.next_group_due() == T0 + 11

        async def due(now: float, limit: int = 10) -> list[str]:
            return [g.key for g in await store.due_groups(now, limit)]

        assert await due(T0 + 10.999) == []
        assert await due(T0 + 11) == ["b"]
        assert await due(T0 + 51.999) == ["b"]
        assert await due(T0 + 52) == ["b", "c"]
        assert await due(T0 + 101) == ["b", "c", "a"]
        assert await due(ANY_TIME, 2) == ["b", "c"]
        assert await due(ANY_TIME, 1) == ["b"]
        assert {g.reason for g in await unsent_groups(store)} == {"wait"}
        # Reading them sends nothing: the same groups are due again.
        assert await due(ANY_TIME) == ["b", "c", "a"]
        assert await store.next_group_due() == T0 + 11
        assert await store.claim_due({"slack": 10}, set(), ANY_TIME) == ([], None)

    run(go())


def test_a_full_group_goes_now_and_the_next_message_opens_another(store: Store) -> None:
    async def go() -> None:
        e1, _ = await routed(store, "e1", [grouped("db", max=3)], at=T0)
        await routed(store, "e2", [grouped("db", max=3)], at=T0 + 5)
        assert await store.next_group_due() == T0 + WAIT
        assert await store.due_groups(T0 + 7, 10) == []

        # The third message fills it: due at once, for reaching max.
        await routed(store, "e3", [grouped("db", max=3)], at=T0 + 7)
        (full,) = await store.due_groups(T0 + 7, 10)
        assert full == DueGroup(
            full.id, "r1", "slack", "db", 3, e1, "markdown", "info", T0, T0 + 7, "max"
        )
        assert await store.due_groups(T0 + 6.999, 10) == []
        assert await store.next_group_due() == T0 + 7

        # Full, it takes no more: the next message of the key opens a new group.
        e4, (d4,) = await routed(store, "e4", [grouped("db", max=3)], at=T0 + 8)
        still_full, fresh = await unsent_groups(store)
        assert still_full == full
        assert fresh.id != full.id
        assert fresh == DueGroup(
            fresh.id, "r1", "slack", "db", 1, e4, "markdown", "info", T0 + 8, T0 + 8, "wait"
        )
        assert await store.next_group_due() == T0 + 7
        assert await store.due_groups(T0 + 8 + WAIT - 0.001, 10) == [full]
        assert (await store.get_delivery(d4) or {})["state"] == "grouped"

        # max 1: a group full with its first message.
        e5, _ = await routed(store, "e5", [grouped("one", max=1)], at=T0 + 9)
        due = await store.due_groups(T0 + 9, 10)
        assert [(g.key, g.count, g.event_id, g.reason) for g in due] == [
            ("db", 3, e1, "max"),
            ("one", 1, e5, "max"),
        ]

    run(go())


def test_interval_keeps_a_key_to_one_digest_per_interval(store: Store) -> None:
    def db(**kw: Any) -> Message:
        return grouped("db", interval=300, **kw)

    async def go() -> None:
        # No digest of the key sent yet: the first group waits only `wait`.
        await routed(store, "e1", [db()], at=T0)
        assert await store.next_group_due() == T0 + WAIT
        (a,) = await store.due_groups(T0 + WAIT, 10)
        sent_at = T0 + 70
        assert await store.close_group(a, Digest("1 × r1", "- a", "markdown"), sent_at) is not None

        # Sent at T0+70: the key's next group is due no earlier than T0+370, not at T0+160;
        # other keys and destinations are not held back.
        e2, _ = await routed(store, "e2", [db(max=2)], at=T0 + 100)
        await routed(
            store, "e3", [grouped("web", interval=300), db(destination="pager")], at=T0 + 100
        )
        assert await store.next_group_due() == T0 + 100 + WAIT
        held = await store.due_groups(sent_at + 300 - 0.001, 10)
        assert [(g.key, g.destination) for g in held] == [("web", "slack"), ("db", "pager")]
        held_ids = {g.id for g in held}
        (b,) = [g for g in await store.due_groups(sent_at + 300, 10) if g.id not in held_ids]
        assert (b.key, b.count, b.event_id, b.reason) == ("db", 1, e2, "wait")

        # Full within the interval, it still waits for it (as a full group: reason max).
        await routed(store, "e4", [db(max=2)], at=T0 + 110)
        assert await store.due_groups(sent_at + 300 - 0.001, 10) == held
        (b,) = [g for g in await store.due_groups(sent_at + 300, 10) if g.id not in held_ids]
        assert (b.key, b.count, b.event_id, b.reason) == ("db", 2, e2, "max")
        second_sent_at = sent_at + 300
        assert await store.close_group(b, Digest("2 × r1", "- a", "markdown"), second_sent_at)

        # A group full with its first message waits out the interval too.
        e5, _ = await routed(store, "e5", [db(max=1)], at=T0 + 400)
        (c,) = [g for g in await unsent_groups(store) if (g.key, g.destination) == ("db", "slack")]
        assert (c.count, c.event_id, c.reason) == (1, e5, "max")
        assert c not in await store.due_groups(second_sent_at + 300 - 0.001, 10)
        assert c in await store.due_groups(second_sent_at + 300, 10)
        assert await store.close_group(c, None, second_sent_at + 300)

        # Once the interval is over, a new group waits only `wait` again.
        await routed(store, "e6", [db()], at=T0 + 2000)
        (d,) = [g for g in await unsent_groups(store) if (g.key, g.destination) == ("db", "slack")]
        assert d not in await store.due_groups(T0 + 2000 + WAIT - 0.001, 10)
        assert d in await store.due_groups(T0 + 2000 + WAIT, 10)

    run(go())


def test_interval_holds_a_group_opened_before_the_last_digest_went(store: Store) -> None:
    # A burst: the first two messages fill a group (max 2), due at T0; the third opens the
    # next group before the full one is sent. That one is held by the interval, not due at
    # T0+1+wait.

    async def go() -> None:
        def db() -> Message:
            return grouped("db", interval=300, max=2)

        await routed(store, "e1", [db()], at=T0)
        await routed(store, "e2", [db()], at=T0)
        e3, _ = await routed(store, "e3", [db()], at=T0 + 1)
        (full,) = await store.due_groups(T0, 10)
        assert (full.count, full.reason) == (2, "max")
        _, nxt = await unsent_groups(store)
        assert (nxt.count, nxt.event_id, nxt.reason) == (1, e3, "wait")
        assert await store.due_groups(T0 + 1 + WAIT, 10) == [full]

        # The full one goes 20 s late (the stage was busy): the next may not go before
        # T0+320, an interval after it was sent (found by this test: it kept T0+300, an
        # interval after the full one was due).
        assert await store.close_group(full, Digest("2 × r1", "- a", "markdown"), T0 + 20)
        assert await store.due_groups(T0 + 1 + WAIT, 10) == []
        assert await store.next_group_due() == T0 + 20 + 300

    run(go())


def test_group_members_first_n_in_arrival_order(store: Store) -> None:
    async def go() -> None:
        item = {"sku": "ü-1", "n": [1, 2.5], "ok": True, "none": None, "q": 'say "hé" ☃'}
        billing, _ = await store.add_event(
            new_event("k1", source="billing", event_type="invoice.failed", at=T0)
        )
        two_items = (
            grouped("db", title="first", item_index=0, item=item),
            grouped("db", title="second", item_index=1, item=0),  # a falsy item is an item
        )
        # Routed after it came in: a member shows when its event was received.
        assert await store.save_routings([Routing(billing, two_items)], T0 + 0.5) == [True]
        shop, _ = await routed(store, "k2", [grouped("db", title="third")], at=T0 + 1, now=T0 + 2)
        await routed(store, "k3", [grouped("web", title="elsewhere")], at=T0 + 3)
        later, _ = await routed(
            store, "k4", [grouped("db", title="fourth", item=["x", None])], at=T0 + 4
        )
        last, _ = await routed(store, "k5", [grouped("db", title="fifth", item="text")], at=T0 + 5)
        db, web = await unsent_groups(store)
        assert (db.key, db.count, web.key, web.count) == ("db", 5, "web", 1)

        def member(
            title: str, event_id: int, received_at: float, item: Any, **kw: str
        ) -> dict[str, Any]:
            return dict(
                title=title, body=f"body of {title}", event_id=event_id,
                event_type=kw.get("event_type", "order.paid"), source=kw.get("source", "shop"),
                received_at=received_at, item=item,
            )  # fmt: skip

        expected = [
            member("first", billing, T0, item, event_type="invoice.failed", source="billing"),
            member("second", billing, T0, 0, event_type="invoice.failed", source="billing"),
            member("third", shop, T0 + 1, None),
            member("fourth", later, T0 + 4, ["x", None]),
            member("fifth", last, T0 + 5, "text"),
        ]
        keys = ("title", "body", "event_id", "event_type", "source", "received_at", "item")

        async def members(group_id: int, limit: int) -> list[dict[str, Any]]:
            return [pick(m, *keys) for m in await store.group_members(group_id, limit)]

        assert await members(db.id, 50) == expected
        assert await members(db.id, 5) == expected
        assert await members(db.id, 3) == expected[:3]
        assert await members(db.id, 1) == expected[:1]
        assert await members(web.id, 50) == [member("elsewhere", web.event_id, T0 + 3, None)]
        assert await members(max(db.id, web.id) + 1000, 50) == []

    run(go())


def test_close_group_with_a_digest_sends_it_exactly_once(store: Store) -> None:
    async def go() -> None:
        e1, (m1,) = await routed(store, "e1", [grouped("db", severity="warning")], at=T0)
        _, (m2,) = await routed(store, "e2", [grouped("db", severity="warning")], at=T0 + 10)
        await routed(store, "e3", [grouped("web")], at=T0 + 30)
        (g,) = await store.due_groups(T0 + WAIT, 10)
        assert (g.key, g.count, g.event_id, g.severity) == ("db", 2, e1, "warning")

        # The digest's own title, body and format; the group's rule, destination, event
        # and severity.
        now = T0 + 61
        digest = Digest("2 × r1", "<ul><li>a</li><li>b</li></ul>", "html")
        made = await store.close_group(g, digest, now)
        assert isinstance(made, int)
        assert made not in (m1, m2)
        row = await store.get_delivery(made)
        assert row is not None
        assert pick(
            row, "event_id", "rule", "destination", "item_index", "title", "body", "format",
            "severity", "state", "attempts", "next_attempt_at", "created_at", "updated_at",
            "last_error", "replay_of", "silence_id", "attempts_log",
        ) == dict(
            event_id=e1, rule="r1", destination="slack", item_index=None, title="2 × r1",
            body="<ul><li>a</li><li>b</li></ul>", format="html", severity="warning",
            state="pending", attempts=0, next_attempt_at=now, created_at=now, updated_at=now,
            last_error=None, replay_of=None, silence_id=None, attempts_log=[],
        )  # fmt: skip
        sent = Delivery(
            made, e1, "slack", "2 × r1", digest.body, "html", 0, T0, "warning", "r1",
            due_at=now, event_type="order.paid", source="shop",
        )  # fmt: skip
        assert await store.claim_due({"slack": 10}, set(), now) == ([sent], None)
        assert await store.waiting_by_destination() == {"slack": 1}

        # Sent: no longer due, and the next group is the other key's.
        assert [g.key for g in await unsent_groups(store)] == ["web"]
        assert await store.due_groups(now, 10) == []
        assert await store.next_group_due() == T0 + 30 + WAIT

        # Once only: closing it again (with a digest or without) adds nothing.
        before = await store.list_deliveries(limit=1000)
        assert await store.close_group(g, Digest("again", "again", "markdown"), now + 1) is None
        assert await store.close_group(g, None, now + 2) is None
        assert await store.list_deliveries(limit=1000) == before
        assert await store.claim_due({"slack": 10}, set(), ANY_TIME) == ([sent], None)
        for m in (m1, m2):
            assert (await store.get_delivery(m) or {})["state"] == "grouped"

    run(go())


def test_close_group_with_a_digest_that_did_not_render_fails_it(store: Store) -> None:
    async def go() -> None:
        e1, _ = await routed(store, "e1", [grouped("db")], at=T0)
        await routed(store, "e2", [grouped("db")], at=T0 + 1)
        (g,) = await store.due_groups(T0 + WAIT, 10)
        now = T0 + 61
        error = "digest: 'dict object' has no attribute 'x'"
        made = await store.close_group(g, Digest("", "", "markdown", error), now)
        assert isinstance(made, int)
        row = await store.get_delivery(made)
        assert row is not None
        assert pick(
            row, "event_id", "rule", "destination", "state", "last_error", "next_attempt_at",
            "attempts", "created_at",
        ) == dict(
            event_id=e1, rule="r1", destination="slack", state="failed", last_error=error,
            next_attempt_at=None, attempts=0, created_at=now,
        )  # fmt: skip

        assert await store.claim_due({"slack": 10}, set(), ANY_TIME) == ([], None)
        assert await store.waiting_by_destination() == {}
        assert await unsent_groups(store) == []
        assert await store.next_group_due() is None
        assert await store.close_group(g, Digest("t", "b", "markdown"), now + 1) is None
        assert [r["id"] for r in await store.list_deliveries(state="failed")] == [made]
        assert await store.list_deliveries(state="pending") == []

    run(go())


def test_close_group_of_one_without_a_digest_sends_its_message_as_itself(store: Store) -> None:
    async def go() -> None:
        e1, (m1,) = await routed(
            store, "e1", [grouped("db", item_index=2, item={"a": 1}, severity="failure")], at=T0
        )
        (g,) = await store.due_groups(T0 + WAIT, 10)
        assert g.count == 1
        now = T0 + 65
        assert await store.close_group(g, None, now) == m1

        row = await store.get_delivery(m1)
        assert row is not None
        assert pick(
            row, "event_id", "rule", "destination", "item_index", "title", "body", "format",
            "severity", "state", "attempts", "next_attempt_at", "created_at", "updated_at",
            "last_error",
        ) == dict(
            event_id=e1, rule="r1", destination="slack", item_index=2, title="title r1",
            body="body of title r1", format="markdown", severity="failure", state="pending",
            attempts=0, next_attempt_at=now, created_at=T0, updated_at=now, last_error=None,
        )  # fmt: skip
        sent = Delivery(
            m1, e1, "slack", "title r1", "body of title r1", "markdown", 0, T0, "failure", "r1",
            due_at=now, event_type="order.paid", source="shop",
        )  # fmt: skip
        assert await store.claim_due({"slack": 10}, set(), now) == ([sent], None)
        assert await store.waiting_by_destination() == {"slack": 1}
        assert await unsent_groups(store) == []
        assert await store.next_group_due() is None

        # Once only; and nothing new was made for it.
        assert await store.close_group(g, None, now + 1) is None
        assert await store.close_group(g, Digest("t", "b", "markdown"), now + 1) is None
        assert [r["id"] for r in await store.list_deliveries(limit=1000)] == [m1]
        assert (await store.get_delivery(m1) or {})["next_attempt_at"] == now

    run(go())


def test_prune_keeps_events_waiting_in_a_group_not_sent(store: Store) -> None:
    cutoff = T0 + 1000
    old = T0 + 1

    async def go() -> None:
        # All received and routed long before the cutoff; the db group waits past it.
        e1, (m1,) = await routed(store, "e1", [grouped("db", wait=5000)], at=old)
        e2, (m2,) = await routed(store, "e2", [grouped("db", wait=5000)], at=old + 1)
        e3, (m3,) = await routed(store, "e3", [grouped("web", max=1)], at=old + 2)  # full
        assert await store.prune(cutoff) == PruneResult(0, 0, 0)
        assert sorted(e["id"] for e in await store.list_events()) == sorted([e1, e2, e3])
        for m in (m1, m2, m3):
            assert (await store.get_delivery(m) or {})["state"] == "grouped"

        # Sent: e2's message is done (the digest carries it) and goes; e1 holds the
        # digest, which has not gone yet, and stays.
        (db,) = [g for g in await unsent_groups(store) if g.key == "db"]
        digest = await store.close_group(db, Digest("2 × r1", "- a\n- b", "markdown"), old + 10)
        assert digest is not None
        assert await store.prune(cutoff) == PruneResult(events=1, deliveries=1, attempts=0)
        assert await store.get_event(e2) is None
        assert await store.get_delivery(m2) is None
        assert [d["id"] for d in (await store.get_event(e1) or {})["deliveries"]] == [m1, digest]

        # The digest delivered: e1 goes, with its grouped message, the digest and its attempt.
        await store.record_attempts([attempt(digest, 1, DELIVERED, old + 20, outcome="delivered")])
        assert await store.prune(cutoff) == PruneResult(events=1, deliveries=2, attempts=1)
        assert await store.get_event(e1) is None
        assert await store.get_delivery(m1) is None
        assert await store.get_delivery(digest) is None

        # The full group not sent keeps its event, and still goes.
        assert [e["id"] for e in await store.list_events()] == [e3]
        assert await store.prune(cutoff) == PruneResult(0, 0, 0)
        assert [(g.key, g.event_id) for g in await store.due_groups(old + 2, 10)] == [("web", e3)]

    run(go())


def test_prune_after_a_group_goes_alone_or_fails(store: Store) -> None:
    cutoff = T0 + 1000
    old = T0 + 1

    async def go() -> None:
        _, (m1,) = await routed(store, "e1", [grouped("a")], at=old)
        e2, (m2,) = await routed(store, "e2", [grouped("b")], at=old)
        a, b = await unsent_groups(store)

        # Sent as itself, its message is pending work: kept until it is delivered.
        assert await store.close_group(a, None, old + 10) == m1
        assert await store.prune(cutoff) == PruneResult(0, 0, 0)
        # A digest that did not render is finished: its event goes with both deliveries.
        failed = await store.close_group(b, Digest("", "", "markdown", "digest: boom"), old + 10)
        assert await store.prune(cutoff) == PruneResult(events=1, deliveries=2, attempts=0)
        assert await store.get_event(e2) is None
        assert await store.get_delivery(m2) is None
        assert failed is not None
        assert await store.get_delivery(failed) is None

        await store.record_attempts([attempt(m1, 1, DELIVERED, old + 20, outcome="delivered")])
        assert await store.prune(cutoff) == PruneResult(events=1, deliveries=1, attempts=1)
        assert await store.list_events() == []
        assert await store.list_deliveries() == []

    run(go())


# -- prune -------------------------------------------------------------------------------


def test_prune(store: Store) -> None:
    cutoff = T0 + 1000
    old, late = T0 + 1, cutoff + 5

    async def go() -> None:
        gone: list[int] = []
        gone_deliveries: list[int] = []
        kept: list[int] = []

        # Finished before the cutoff: go, with every delivery and attempt.
        e, (a, b) = await routed(store, "done", [message("a"), message("b")], at=old)
        await store.record_attempts(
            [
                attempt(a, 1, RETRYING, old + 1, next_at=old + 10),
                attempt(b, 1, DEAD, old + 1),
            ]
        )
        await store.record_attempts([attempt(a, 2, DELIVERED, old + 10, outcome="delivered")])
        gone.append(e)
        gone_deliveries += [a, b]
        e, (f,) = await routed(store, "failed", [message(error="bad template")], at=old)
        gone.append(e)
        gone_deliveries.append(f)
        e, _ = await store.add_event(new_event("unrouted", at=old))
        await store.save_routings([Routing(e, ())], old)
        gone.append(e)
        # Replayed before the cutoff, and the replay delivered before it too.
        e, (r,) = await routed(store, "replayed-early", [message()], at=old)
        await store.record_attempts([attempt(r, 1, DEAD, old + 1)])
        ((_, copy),) = await store.replay([r], old + 5)
        await store.record_attempts([attempt(copy, 1, DELIVERED, old + 6, outcome="delivered")])
        gone.append(e)
        gone_deliveries += [r, copy]

        # Unfinished, touched since the cutoff, not routed yet, or received at/after it: stay.
        e, _ = await routed(store, "pending", [message()], at=old)
        kept.append(e)
        e, (d,) = await routed(store, "retrying", [message()], at=old)
        await store.record_attempts([attempt(d, 1, RETRYING, old + 1, next_at=cutoff + 100)])
        kept.append(e)
        e, (d, _) = await routed(store, "half-done", [message("a"), message("b")], at=old)
        await store.record_attempts([attempt(d, 1, DELIVERED, old + 1, outcome="delivered")])
        kept.append(e)
        e, (touched,) = await routed(store, "touched", [message()], at=old)
        await store.record_attempts([attempt(touched, 1, DEAD, late)])
        kept.append(e)
        e, (d,) = await routed(store, "replayed-late", [message()], at=old)
        await store.record_attempts([attempt(d, 1, DEAD, old + 1)])
        ((_, copy),) = await store.replay([d], late)
        await store.record_attempts([attempt(copy, 1, DELIVERED, late + 1, outcome="delivered")])
        kept.append(e)
        e, _ = await store.add_event(new_event("not-routed", at=old))
        kept.append(e)
        e, (d,) = await routed(store, "at-cutoff", [message()], at=cutoff, now=old)
        await store.record_attempts([attempt(d, 1, DELIVERED, old + 1, outcome="delivered")])
        kept.append(e)
        e, (d,) = await routed(store, "new", [message()], at=late)
        await store.record_attempts([attempt(d, 1, DELIVERED, late, outcome="delivered")])
        kept.append(e)

        before = await store.list_deliveries(limit=1000)
        assert await store.prune(cutoff) == PruneResult(events=4, deliveries=5, attempts=5)

        assert sorted(e["id"] for e in await store.list_events(limit=1000)) == sorted(kept)
        for event_id in gone:
            assert await store.get_event(event_id) is None
        for delivery_id in gone_deliveries:
            assert await store.get_delivery(delivery_id) is None
        after = await store.list_deliveries(limit=1000)
        assert [r for r in before if r["id"] not in gone_deliveries] == after
        assert await store.prune(cutoff) == PruneResult(0, 0, 0)
        kept_row = await store.get_delivery(touched)
        assert kept_row is not None
        assert [a["number"] for a in kept_row["attempts_log"]] == [1]

        # What stayed still works.
        assert await store.waiting_by_destination() == {"slack": 2, "b": 1}
        assert [e.event_type for e in await store.events_to_route(10)] == ["order.paid"]

    run(go())


def test_prune_on_an_empty_store(store: Store) -> None:
    assert run(store.prune(T0)) == PruneResult(0, 0, 0)


# -- throttles and quiet hours -----------------------------------------------------------
# A throttle counts a key's messages in fixed windows from the key's first message; past
# its limit they wait in a group of their own until the window ends. Quiet hours hold
# what would go now in one group per (rule, destination) until they end.


def throttled(
    key: str, destination: str = "slack", *, limit: int = 2, per: float = 10.0, **kw: Any
) -> Message:
    """A message of r1 counted against the throttle of `key`; grouped too with group=KEY."""
    group = kw.pop("group", None)
    return replace(
        message(destination),
        throttle=Throttling(key, limit, per),
        grouping=None if group is None else Grouping(group, WAIT, None, None),
        **kw,
    )


def test_throttle_counts_a_window_and_holds_the_rest_until_its_end(store: Store) -> None:
    async def go() -> None:
        _, (a,) = await routed(store, "e1", [throttled("db")], at=T0)
        _, (b,) = await routed(store, "e2", [throttled("db")], at=T0 + 1)
        # Another key and another destination count on their own.
        _, (c,) = await routed(store, "e3", [throttled("web")], at=T0 + 2)
        _, (d,) = await routed(store, "e4", [throttled("db", "pager")], at=T0 + 2)
        e3, (h1,) = await routed(store, "e5", [throttled("db")], at=T0 + 3)
        _, (h2,) = await routed(store, "e6", [throttled("db")], at=T0 + 9.5)
        states = [(await store.get_delivery(i) or {})["state"] for i in (a, b, c, d, h1, h2)]
        assert states == ["pending"] * 4 + ["grouped"] * 2
        # Held until the window (from T0, the key's first message) ends.
        (g,) = await unsent_groups(store)
        assert (g.key, g.count, g.event_id, g.reason) == ("throttle:db", 2, e3, "throttle")
        assert (g.first_at, g.last_at) == (T0 + 3, T0 + 9.5)
        assert await store.next_group_due() == T0 + 10
        assert await store.due_groups(T0 + 9.9, 10) == []
        assert await store.due_groups(T0 + 10, 10) == [g]
        held = await store.get_delivery(h1)
        assert held is not None and held["group"] is not None
        assert pick(held["group"], "id", "key", "reason", "state", "count", "due_at") == dict(
            id=g.id, key="db", reason="throttle", state="open", count=2, due_at=T0 + 10
        )
        made = await store.close_group(g, Digest("2 × r1", "- a\n- b", "markdown"), T0 + 10)
        digest = await store.get_delivery(made or 0)
        assert digest is not None and digest["digest_of"] is not None
        assert (digest["digest_of"]["id"], digest["digest_of"]["count"]) == (g.id, 2)
        assert ((await store.get_delivery(h2)) or {})["group"]["digest_id"] == made
        listed = {r["id"]: r for r in await store.list_deliveries(limit=100)}
        assert (listed[h1]["group_id"], listed[h1]["digest_id"]) == (g.id, made)
        assert (listed[a]["group_id"], listed[a]["digest_id"]) == (None, None)

        # The next window starts with the first message after the last one ended.
        _, (n1,) = await routed(store, "e7", [throttled("db")], at=T0 + 10)
        _, (n2,) = await routed(store, "e8", [throttled("db")], at=T0 + 15)
        _, (n3,) = await routed(store, "e9", [throttled("db")], at=T0 + 19)
        states = [(await store.get_delivery(i) or {})["state"] for i in (n1, n2, n3)]
        assert states == ["pending", "pending", "grouped"]
        assert await store.next_group_due() == T0 + 20

    run(go())


def test_throttle_before_group_what_passes_joins_the_rule_group(store: Store) -> None:
    async def go() -> None:
        ids = [
            (await routed(store, f"e{n}", [throttled("db", group="g")], at=T0 + n))[1][0]
            for n in range(3)
        ]
        groups = {g.key: g for g in await unsent_groups(store)}
        assert (groups["g"].count, groups["g"].reason) == (2, "wait")
        assert (groups["throttle:db"].count, groups["throttle:db"].reason) == (1, "throttle")
        held = [(await store.get_delivery(i) or {})["group"]["id"] for i in ids]
        assert held == [groups["g"].id, groups["g"].id, groups["throttle:db"].id]

    run(go())


def quiet(until: float, destination: str = "slack", **kw: Any) -> Message:
    """A message of r1 that quiet hours hold until `until`."""
    return replace(message(destination, **kw), quiet_until=until)


def test_quiet_hours_hold_one_group_per_rule_and_destination(store: Store) -> None:
    async def go() -> None:
        e1, (a,) = await routed(store, "e1", [quiet(T0 + 100)], at=T0)
        _, (b,) = await routed(store, "e2", [quiet(T0 + 100)], at=T0 + 5)
        _, (c,) = await routed(store, "e3", [quiet(T0 + 100, "pager")], at=T0 + 6)
        _, (d,) = await routed(store, "e4", [quiet(T0 + 100, rule="r2")], at=T0 + 7)
        groups = await unsent_groups(store)
        assert sorted((g.rule, g.destination, g.key, g.count, g.reason) for g in groups) == [
            ("r1", "pager", "quiet:", 1, "quiet"),
            ("r1", "slack", "quiet:", 2, "quiet"),
            ("r2", "slack", "quiet:", 1, "quiet"),
        ]
        assert await store.next_group_due() == T0 + 100
        assert await store.due_groups(T0 + 99, 10) == []
        for i in (a, b, c, d):
            row = await store.get_delivery(i)
            assert row is not None
            assert (row["state"], row["next_attempt_at"], row["group"]["key"]) == (
                "grouped",
                None,
                "",
            )
        assert await store.claim_due({"slack": 10, "pager": 10}, set(), T0 + 50) == ([], None)
        # A message its rule groups waits in that group, not in the quiet one.
        await routed(store, "e5", [replace(grouped("g"), quiet_until=T0 + 100)], at=T0 + 8)
        assert {g.key for g in await unsent_groups(store)} == {"quiet:", "g"}
        assert e1 in {g.event_id for g in groups}

    run(go())


def test_hold_group_moves_a_due_group_into_the_quiet_group_once(store: Store) -> None:
    async def go() -> None:
        # Two keys' groups fall due in quiet hours; one message already waits for them.
        _, (q,) = await routed(store, "e0", [quiet(T0 + 300)], at=T0 + 1)
        e1, (m1,) = await routed(store, "e1", [grouped("db")], at=T0)
        _, (m2,) = await routed(store, "e2", [grouped("db")], at=T0 + 2)
        _, (m3,) = await routed(store, "e3", [grouped("web")], at=T0 + 3)
        db, web = await store.due_groups(T0 + WAIT + 3, 10)
        (waiting,) = [g for g in await unsent_groups(store) if g.reason == "quiet"]

        assert await store.hold_group(db, T0 + 300, T0 + WAIT) == waiting.id
        assert await store.hold_group(web, T0 + 300, T0 + WAIT + 3) == waiting.id
        assert await store.hold_group(db, T0 + 300, T0 + WAIT + 4) is None  # once only
        (held,) = await unsent_groups(store)
        assert (held.id, held.count, held.reason, held.event_id) == (waiting.id, 4, "quiet", q)
        assert (held.first_at, held.last_at) == (T0, T0 + 3)
        assert await store.next_group_due() == T0 + 300
        members = [m["delivery_id"] for m in await store.group_members(held.id, 50)]
        assert sorted(members) == sorted([q, m1, m2, m3])
        for i in (m1, m2, m3):
            row = await store.get_delivery(i)
            assert row is not None and row["state"] == "grouped"
            assert row["group"]["id"] == held.id

        # With no quiet group open, holding a due group opens one, due when they end.
        assert await store.close_group(held, Digest("4 × r1", "-", "markdown"), T0 + 300)
        _, (m4,) = await routed(store, "e4", [grouped("db")], at=T0 + 400)
        (g,) = await store.due_groups(T0 + 400 + WAIT, 10)
        opened = await store.hold_group(g, T0 + 900, T0 + 400 + WAIT)
        (again,) = await unsent_groups(store)
        assert (again.id, again.key, again.count, again.reason) == (opened, "quiet:", 1, "quiet")
        assert await store.next_group_due() == T0 + 900
        assert await store.close_group(again, None, T0 + 900) == m4
        assert e1 != again.event_id

    run(go())


# -- circuits, fallbacks, destinations ---------------------------------------------------
# A probe's failure is logged but spends no attempt; a dead delivery's fallback is made in
# the same write; each destination's circuit and last outcomes are kept.


def test_a_held_attempt_is_logged_but_spends_nothing(store: Store) -> None:
    async def go() -> None:
        d = await one(store, "a", at=T0)
        await store.record_attempts([attempt(d, 1, RETRYING, T0 + 1, next_at=T0 + 5, error="x")])
        held = replace(attempt(d, 2, RETRYING, T0 + 40, next_at=T0, error="HTTP 503"), held=True)
        await store.record_attempts([held, replace(held, started_at=T0 + 80, recorded_at=T0 + 81)])
        row = await store.get_delivery(d)
        assert row is not None
        assert pick(row, "state", "attempts", "next_attempt_at", "last_error") == dict(
            state="retrying", attempts=1, next_attempt_at=T0, last_error="HTTP 503"
        )
        assert [(a["number"], a["held"]) for a in row["attempts_log"]] == [
            (1, False), (2, True), (2, True),
        ]  # fmt: skip
        (claimed,), _ = await store.claim_due({"slack": 5}, set(), T0 + 100)
        assert (claimed.attempts, claimed.due_at) == (1, T0)

    run(go())


def test_a_dead_delivery_gets_one_linked_fallback(store: Store) -> None:
    async def go() -> None:
        event_id, (d,) = await routed(
            store, "a", [replace(message("slack", item_index=3, item={"m": 1}), severity="failure")]
        )
        fb = Fallback("mail", "title r1", "body r1\n\nrelayhook: sent here because ...", "text")
        dead = replace(attempt(d, 1, DEAD, T0 + 1, error="HTTP 500"), fallback=fb)
        await store.record_attempts([dead])
        row = await store.get_delivery(d)
        assert row is not None
        assert (row["state"], row["fallback_of"]) == ("dead", None)
        made = row["fallback_id"]
        other = await store.get_delivery(made)
        assert other is not None
        assert pick(
            other, "event_id", "rule", "destination", "item_index", "title", "body", "format",
            "severity", "state", "attempts", "next_attempt_at", "fallback_of", "fallback_id",
        ) == dict(
            event_id=event_id, rule="r1", destination="mail", item_index=3, title="title r1",
            body=fb.body, format="text", severity="failure", state="pending", attempts=0,
            next_attempt_at=T0 + 2, fallback_of=d, fallback_id=None,
        )  # fmt: skip
        (claimed,), _ = await store.claim_due({"mail": 5}, set(), T0 + 2)
        assert (claimed.id, claimed.fallback_of, claimed.rule) == (made, d, "r1")
        # Written again (a retried batch): still one fallback.
        await store.record_attempts([dead])
        assert len(await store.list_deliveries(destination="mail")) == 1

    run(go())


def test_circuits_are_stored_and_read_back(store: Store) -> None:
    async def go() -> None:
        assert await store.circuits() == []
        opened = CircuitState("slack", True, 5, T0, 30.0, T0 + 30, "HTTP 503")
        await store.save_circuit(opened)
        await store.save_circuit(CircuitState("pager"))
        assert await store.circuits() == [CircuitState("pager"), opened]
        closed = CircuitState("slack")
        await store.save_circuit(closed)
        assert await store.circuits() == [CircuitState("pager"), closed]

    run(go())


def test_destination_status_circuit_queue_and_last_outcomes(store: Store) -> None:
    async def go() -> None:
        assert await store.destination_status() == {}
        a = await one(store, "a", at=T0)
        b = await one(store, "b", at=T0 + 1)
        await one(store, "c", "pager", at=T0 + 2)
        await store.record_attempts(
            [
                replace(attempt(a, 1, DELIVERED, T0 + 3, outcome="delivered"), destination="slack"),
                replace(
                    attempt(b, 1, RETRYING, T0 + 4, next_at=T0 + 9, error="HTTP 502"),
                    destination="slack",
                ),
            ]
        )
        await store.save_circuit(CircuitState("slack", True, 5, T0 + 5, 30.0, T0 + 35, "x"))
        status = await store.destination_status()
        assert status["slack"] == dict(
            circuit="open", opened_at=T0 + 5, next_probe_at=T0 + 35,
            last_success_at=T0 + 4, last_error="HTTP 502", last_error_at=T0 + 5,
            queue=1, oldest_due_at=T0 + 9,
        )  # fmt: skip
        assert status["pager"] == dict(
            circuit="closed", opened_at=None, next_probe_at=None, last_success_at=None,
            last_error=None, last_error_at=None, queue=1, oldest_due_at=T0 + 2,
        )  # fmt: skip

    run(go())


def test_requeue_due_puts_due_work_back_in_the_order_it_was_made(store: Store) -> None:
    async def go() -> None:
        first = await one(store, "a", at=T0)
        second = await one(store, "b", at=T0 + 1)
        later = await one(store, "c", at=T0 + 2)
        await store.record_attempts(
            [
                attempt(first, 1, RETRYING, T0 + 3, next_at=T0 + 20),
                attempt(later, 1, RETRYING, T0 + 3, next_at=T0 + 500),
            ]
        )
        claimed, _ = await store.claim_due({"slack": 5}, set(), T0 + 30)
        assert ids_of(claimed) == [second, first]
        await store.release(ids_of(claimed))
        assert await store.requeue_due("slack", T0 + 30) == 1
        claimed, _ = await store.claim_due({"slack": 5}, set(), T0 + 30)
        assert ids_of(claimed) == [first, second]  # `later` is not due yet: left alone
        assert [d.due_at for d in claimed] == [T0, T0 + 1]
        assert await store.requeue_due("pager", T0 + 30) == 0

    run(go())


def test_orphans_go_dead_after_a_while_naming_the_destination(store: Store) -> None:
    async def go() -> None:
        kept = await one(store, "a", at=T0)
        gone = await one(store, "b", "old-hook", at=T0)
        recent = await one(store, "c", "old-hook", at=T0 + 50)
        assert await store.orphans(["slack"], T0 + 10, T0 + 60) == {"old-hook": 1}
        rows = {d: await store.get_delivery(d) for d in (kept, gone, recent)}
        assert {d: (r or {})["state"] for d, r in rows.items()} == {
            kept: "pending", gone: "dead", recent: "pending",
        }  # fmt: skip
        assert (rows[gone] or {})["last_error"] == (
            "destination 'old-hook' is no longer in the config"
        )
        assert await store.orphans(["slack"], T0 + 10, T0 + 61) == {}
        assert await store.orphans(["slack", "old-hook"], T0 + 100, T0 + 100) == {}

    run(go())


# -- pages: lists by key, bulk replay, waiting groups --------------------------------------


def test_page_deliveries_filters_and_pages_by_id(store: Store) -> None:
    async def go() -> None:
        a = await one(store, "a", at=T0)
        b = await one(store, "b", "pager", at=T0 + 10)
        c = await one(store, "c", at=T0 + 20)
        d = await one(store, "d", at=T0 + 30)
        await store.record_attempts(
            [attempt(a, 1, DEAD, T0 + 1, error="x"), attempt(c, 1, DELIVERED, T0 + 21)]
        )

        async def ids(f: DeliveryFilter, before: int | None = None, limit: int = 10) -> list[int]:
            return [r["id"] for r in await store.page_deliveries(f, before, limit)]

        assert await ids(DeliveryFilter()) == [d, c, b, a]
        assert await ids(DeliveryFilter(), limit=2) == [d, c]
        assert await ids(DeliveryFilter(), before=c, limit=2) == [b, a]
        assert await ids(DeliveryFilter(states=("dead", "delivered"))) == [c, a]
        assert await ids(DeliveryFilter(destination="pager")) == [b]
        assert await ids(DeliveryFilter(rule="r1", since=T0 + 10, until=T0 + 30)) == [c, b]
        assert await ids(DeliveryFilter(states=("silenced",))) == []
        (row,) = await store.page_deliveries(DeliveryFilter(destination="pager"), None, 10)
        assert pick(row, "id", "state", "destination", "rule", "title", "group_id") == dict(
            id=b, state="pending", destination="pager", rule="r1", title="title r1", group_id=None
        )
        # Replay takes every match that is finished, not just a page.
        assert await store.matching_deliveries(DeliveryFilter()) == [a, c]
        assert await store.matching_deliveries(DeliveryFilter(states=("dead",))) == [a]
        assert await store.matching_deliveries(DeliveryFilter(states=("pending",))) == []

    run(go())


def test_page_events_filters_and_pages_by_id(store: Store) -> None:
    async def go() -> None:
        first, _ = await store.add_event(new_event("k1", at=T0))
        second, _ = await store.add_event(new_event("k2", source="billing", at=T0 + 5))
        third, _ = await store.add_event(new_event("k3", event_type="order.refunded", at=T0 + 10))
        await store.save_routings([Routing(first, ())], T0 + 11)

        async def ids(f: EventFilter, before: int | None = None) -> list[int]:
            return [r["id"] for r in await store.page_events(f, before, 10)]

        assert await ids(EventFilter()) == [third, second, first]
        assert await ids(EventFilter(), before=second) == [first]
        assert await ids(EventFilter(state="unrouted")) == [first]
        assert await ids(EventFilter(source="billing")) == [second]
        assert await ids(EventFilter(event_type="order.refunded")) == [third]
        assert await ids(EventFilter(since=T0 + 5, until=T0 + 10)) == [second]
        (row,) = await store.page_events(EventFilter(source="billing"), None, 10)
        assert pick(row, "id", "source", "event_key", "event_type", "state", "deliveries") == dict(
            id=second, source="billing", event_key="k2", event_type="order.paid",
            state="received", deliveries=0,
        )  # fmt: skip

    run(go())


def test_waiting_groups_and_send_now(store: Store) -> None:
    async def go() -> None:
        await routed(store, "e1", [grouped("db")], at=T0)
        await routed(store, "e2", [grouped("db")], at=T0 + 5)
        await routed(store, "e3", [throttled("web", limit=1)], at=T0 + 6)
        await routed(store, "e4", [throttled("web", limit=1)], at=T0 + 7)
        waiting = await store.waiting_groups()
        assert [pick(g, "rule", "destination", "key", "reason", "count", "due_at") for g in waiting] == [
            dict(rule="r1", destination="slack", key="web", reason="throttle", count=1,
                 due_at=T0 + 16),
            dict(rule="r1", destination="slack", key="db", reason="wait", count=2,
                 due_at=T0 + WAIT),
        ]  # fmt: skip
        db = waiting[1]["id"]
        assert await store.send_group_now(db, T0 + 8)
        assert [g.id for g in await store.due_groups(T0 + 8, 10)] == [db]
        assert await store.next_group_due() == T0 + 8
        (g,) = await store.due_groups(T0 + 8, 10)
        await store.close_group(g, Digest("2 × r1", "-", "markdown"), T0 + 8)
        assert not await store.send_group_now(db, T0 + 9)  # sent already
        assert not await store.send_group_now(db + 1000, T0 + 9)
        assert [w["key"] for w in await store.waiting_groups()] == ["web"]

    run(go())


# -- stored events and what was made of them (relayhook test --stored) --------------------


def test_events_since_pages_by_id_whole_with_key_and_state(store: Store) -> None:
    async def go() -> None:
        ids = []
        for i in range(8):
            event_id, _ = await store.add_event(
                new_event(f"k{i}", at=T0 + i, body={"n": i}, headers={"x-n": str(i)})
            )
            ids.append(event_id)
        assert await store.save_routings(
            [Routing(ids[3], (message(),)), Routing(ids[4], ())], T0 + 20
        ) == [True, True]

        async def pages(since: float, batch: int) -> list[list[StoredEvent]]:
            return [page async for page in store.events_since(since, batch)]

        found = await pages(T0 + 2, 2)
        assert [[s.event.id for s in page] for page in found] == [
            ids[2:4], ids[4:6], ids[6:8],
        ]  # fmt: skip
        third = found[0][0]
        assert third == StoredEvent(
            Event(ids[2], "shop", "order.paid", T0 + 2, {"x-n": "2"}, {"n": 2}), "k2", "received"
        )
        assert [s.state for page in found for s in page] == [
            "received", "routed", "unrouted", "received", "received", "received",
        ]  # fmt: skip
        # A last page that is not full ends it; so does an empty read after a full one.
        assert [len(page) for page in await pages(T0 + 1, 3)] == [3, 3, 1]
        assert [len(page) for page in await pages(T0, 4)] == [4, 4]
        assert await pages(T0 + 8, 10) == []
        # Ids above the first one received since then are taken by time, not by id.
        late, _ = await store.add_event(new_event("late", at=T0 - 100))
        assert [s.event.id for page in await pages(T0 + 6, 10) for s in page] == ids[6:8]
        assert late not in [s.event.id for page in await pages(T0, 100) for s in page]

    run(go())


def test_events_by_id_leaves_unknown_ids_out(store: Store) -> None:
    async def go() -> None:
        a, _ = await store.add_event(new_event("a", at=T0))
        b, _ = await store.add_event(new_event("b", at=T0 + 1, event_type="order.refunded"))
        found = await store.events_by_id([b, b + 1000, a])
        assert [(s.event.id, s.event.event_type, s.key, s.state) for s in found] == [
            (a, "order.paid", "a", "received"),
            (b, "order.refunded", "b", "received"),
        ]
        assert found[0].event.body == {"key": "a"}
        assert await store.events_by_id([b + 1000]) == []

    run(go())


def test_made_for_counts_messages_routing_made_not_digests_replays_or_fallbacks(
    store: Store,
) -> None:
    async def go() -> None:
        silence = await store.add_silence([Matcher("rule", "=", "r2")], T0, T0 + 99, "", "", T0)
        e1, (ok, other, _, _, _) = await routed(
            store,
            "e1",
            [
                message("slack", item_index=0),
                message("slack", item_index=1),
                message("mail", error="template: no such field"),
                message("slack", rule="r2", silence_id=silence),
                grouped("db"),
            ],
        )
        e2, _ = await routed(store, "e2", [grouped("db")], at=T0 + 1)
        e3, (alone,) = await routed(store, "e3", [grouped("web")], at=T0 + 2)
        e4, _ = await routed(store, "e4", [], at=T0 + 3)
        for group in await store.due_groups(ANY_TIME, 10):
            digest = Digest("2 × r1", "-", "markdown") if group.count > 1 else None
            await store.close_group(group, digest, T0 + 100)
        # Made by a person or by a dead delivery, not by routing: left out.
        await store.record_attempts([attempt(ok, 1, DELIVERED, T0 + 5, outcome="delivered")])
        assert len(await store.replay([ok], T0 + 6)) == 1
        fb = Fallback("mail", "t", "b", "text")
        await store.record_attempts([replace(attempt(other, 1, DEAD, T0 + 7), fallback=fb)])
        # The 7 messages, a digest, a replay and a fallback.
        assert len(await store.list_deliveries(limit=100)) == 10

        made = await store.made_for([e1, e2, e3, e4, e4 + 1000])
        assert sorted((m.event_id, m.rule, m.destination, m.state, m.count) for m in made) == sorted([
            (e1, "r1", "slack", "delivered", 1),
            (e1, "r1", "slack", "dead", 1),
            (e1, "r1", "mail", "failed", 1),
            (e1, "r2", "slack", "silenced", 1),
            (e1, "r1", "slack", "grouped", 1),
            (e2, "r1", "slack", "grouped", 1),
            (e3, "r1", "slack", "pending", 1),  # a group of one goes as its message
        ])  # fmt: skip
        assert await store.made_for([e3]) == [Made(e3, "r1", "slack", "pending", 1)]
        assert alone in [d["id"] for d in await store.list_deliveries(state="pending")]
        assert await store.made_for([]) == []

    run(go())


# == SQLite only ==========================================================================
# The daemon lock and reopening a file: no other backend has these as they are here.


def test_sqlite_where_is_the_path(tmp_path: Path) -> None:
    path = str(tmp_path / "relayhook.db")
    store = SqliteStore(path)
    try:
        assert store.where == path
    finally:
        run(store.close())


def test_sqlite_second_daemon_store_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "relayhook.db")
    first = SqliteStore(path, daemon=True)
    try:
        with pytest.raises(StoreBusy) as refused:
            SqliteStore(path, daemon=True)
        assert path in str(refused.value)
        assert f"pid {os.getpid()}" in str(refused.value)
        with pytest.raises(StoreBusy):
            open_store(path, daemon=True)
        run(first.ping())  # the refusal did not disturb the holder
    finally:
        run(first.close())
    again = open_store(path, daemon=True)
    try:
        run(again.ping())
    finally:
        run(again.close())


def test_sqlite_cli_store_beside_a_daemon_store(tmp_path: Path) -> None:
    path = str(tmp_path / "relayhook.db")
    daemon = SqliteStore(path, daemon=True)
    cli = SqliteStore(path)
    try:

        async def go() -> None:
            event_id, (d,) = await routed(daemon, "k", [message()])
            await daemon.record_attempts([attempt(d, 1, DEAD, T0 + 1, error="HTTP 404")])

            assert [r["id"] for r in await cli.list_deliveries(state="dead")] == [d]
            assert [e["id"] for e in await cli.list_events()] == [event_id]
            row = await cli.get_delivery(d)
            assert row is not None
            assert [a["error"] for a in row["attempts_log"]] == ["HTTP 404"]
            ((original, new),) = await cli.replay([d], T0 + 5)
            assert original == d
            await cli.ping()

            claimed, _ = await daemon.claim_due({"slack": 5}, set(), T0 + 5)
            assert ids_of(claimed) == [new]
            replayed = await daemon.get_delivery(new)
            assert replayed is not None
            assert replayed["replay_of"] == d

        run(go())
    finally:
        run(cli.close())
        run(daemon.close())


def test_sqlite_reopened_file_keeps_everything(tmp_path: Path) -> None:
    path = str(tmp_path / "relayhook.db")
    store = SqliteStore(path, daemon=True)
    first, _ = run(store.add_event(new_event("k1")))
    second, _ = run(store.add_event(new_event("k2")))
    run(store.close())

    store = SqliteStore(path, daemon=True)
    try:
        assert run(store.add_event(new_event("k1"))) == (first, True)
        third, known = run(store.add_event(new_event("k3")))
        assert known is False
        assert third not in (first, second)
        assert [e.id for e in run(store.events_to_route(10))] == [first, second, third]
    finally:
        run(store.close())


# == PostgreSQL only ======================================================================
# Several instances on one database: a claim leases each delivery to its instance.


def test_postgresql_leases_keep_a_delivery_to_one_instance(postgres_dsn: str) -> None:
    with _postgresql(postgres_dsn) as first:
        assert isinstance(first, PostgresStore)
        second = PostgresStore(first.dsn, lease=first.lease or 60.0, owner="second")

        async def go() -> None:
            d = await one(first, "a", at=T0)
            lease = first.lease or 0.0
            (mine,), _ = await first.claim_due({"slack": 5}, set(), T0 + 1)
            assert mine.id == d
            # Leased: the other instance does not get it, not even with nothing busy.
            assert (await second.claim_due({"slack": 5}, set(), T0 + 2))[0] == []
            # Renewed, it stays; run out, the other takes it over in its own claim.
            assert await first.renew_leases([d], T0 + 1 + 2 * lease) == 1
            assert (await second.claim_due({"slack": 5}, set(), T0 + 1 + lease + 1))[0] == []
            (taken,), _ = await second.claim_due({"slack": 5}, set(), T0 + 2 + 2 * lease)
            assert taken.id == d
            assert await first.renew_leases([d], T0 + 1000) == 0  # not first's any more
            # The first instance's late attempt is kept but changes nothing.
            await first.record_attempts([attempt(d, 1, DEAD, T0 + 200, error="late")])
            row = await first.get_delivery(d)
            assert row is not None and (row["state"], row["attempts"]) == ("pending", 0)
            await second.record_attempts([attempt(d, 1, DELIVERED, T0 + 201, outcome="delivered")])
            row = await first.get_delivery(d)
            assert row is not None and (row["state"], row["attempts"]) == ("delivered", 1)
            log = [(a["outcome"], a["late"]) for a in row["attempts_log"]]
            assert log == [("failed", True), ("delivered", False)]
            # Released, a claim is due again at once, for anyone.
            e = await one(first, "b", at=T0)
            (got,), _ = await second.claim_due({"slack": 5}, set(), T0 + 300)
            await second.release([got.id])
            (again,), _ = await first.claim_due({"slack": 5}, set(), T0 + 300)
            assert got.id == again.id == e
            await second.close()

        run(go())


def test_postgresql_one_instance_takes_each_probe(postgres_dsn: str) -> None:
    with _postgresql(postgres_dsn) as first:
        assert isinstance(first, PostgresStore)
        second = PostgresStore(first.dsn, owner="second")

        async def go() -> None:
            # Not stored open (yet): nobody is denied, and the interval is the caller's.
            assert await first.take_probe("slack", T0, 30.0) == 30.0
            await first.save_circuit(CircuitState("slack", True, 5, T0, 60.0, T0 + 30, "x"))
            assert await second.take_probe("slack", T0 + 10, 30.0) is None  # not due
            # Due: second takes it, with the interval the last prober stored (doubled).
            assert await second.take_probe("slack", T0 + 30, 30.0) == 60.0
            assert await first.take_probe("slack", T0 + 31, 30.0) is None  # taken till T0+90
            (row,) = await first.circuits()
            assert row.next_probe_at == T0 + 90
            await second.close()

        run(go())


def test_postgresql_one_instance_runs_a_periodic_job_at_a_time(postgres_dsn: str) -> None:
    with _postgresql(postgres_dsn) as first:
        assert isinstance(first, PostgresStore)
        second = PostgresStore(first.dsn, owner="second")

        async def go() -> None:
            async with first.exclusive("groups") as mine:
                assert mine
                async with second.exclusive("groups") as theirs:
                    assert not theirs  # first runs it now
                async with second.exclusive("prune") as other_job:
                    assert other_job  # another job is another lock
            async with second.exclusive("groups") as theirs:
                assert theirs  # the block ended: free
            # A block ended by an error gives the lock back too.
            with pytest.raises(RuntimeError):
                async with first.exclusive("groups"):
                    raise RuntimeError("boom")
            async with second.exclusive("groups") as theirs:
                assert theirs
            await second.close()

        run(go())


def test_postgresql_a_stalled_holder_loses_its_job_lock(postgres_dsn: str) -> None:
    with _postgresql(postgres_dsn) as first:
        assert isinstance(first, PostgresStore)
        first.hold_idle = 1.0
        second = PostgresStore(first.dsn, owner="second")

        async def go() -> None:
            with pytest.raises(StoreError):
                async with first.exclusive("groups") as mine:
                    assert mine
                    await asyncio.sleep(2.5)  # stalled, saying nothing to the server
                    async with second.exclusive("groups") as theirs:
                        assert theirs  # the server ended the stalled session, and its lock
            await second.close()
            await first.close()  # in this loop: its pool is refilling the connection it lost

        run(go())


def test_postgresql_instances_grouping_keys_in_opposite_orders_do_not_deadlock(
    postgres_dsn: str,
) -> None:
    with _postgresql(postgres_dsn) as first:
        assert isinstance(first, PostgresStore)
        second = PostgresStore(first.dsn, owner="second")

        async def batch(store: Store, name: str, keys: list[str]) -> list[bool]:
            ids = [(await store.add_event(new_event(f"{name}-{k}")))[0] for k in keys]
            routings = [Routing(i, (grouped(k),)) for i, k in zip(ids, keys, strict=True)]
            return await store.save_routings(routings, T0)

        async def go() -> None:
            keys = [f"meter-{n}" for n in range(8)]
            for round_ in range(15):
                saved = await asyncio.gather(
                    batch(first, f"a{round_}", keys), batch(second, f"b{round_}", keys[::-1])
                )
                assert saved == [[True] * 8, [True] * 8]
            groups = {(g["key"], g["count"]) for g in await first.waiting_groups()}
            assert groups == {(k, 30) for k in keys}
            await second.close()
            await first.close()

        run(go())
