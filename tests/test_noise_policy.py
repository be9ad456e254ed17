"""The noise rules are stated once (policy/noise.py): the dry run's replay in memory
(route/fold.py) and a real store with the real group stage on a fake clock make the same
groups, of the same messages, due at the same times, for any stream of messages."""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CONFIG_HEAD, write_config
from inproc import FakeClock
from pg import fresh_database
from relayhook.config.load import load_config
from relayhook.config.settings import Config
from relayhook.model import Grouping, Message, NewEvent, Routing, Throttling
from relayhook.ops.metrics import Metrics
from relayhook.route.fold import Folds
from relayhook.route.groups import GroupStage
from relayhook.route.quiet import hold_quiet
from relayhook.store.base import Store
from relayhook.store.sqlite.store import SqliteStore

# Monday 2024-01-01 20:00 UTC: streams of a few hours cross the nightly quiet window.
T0 = 1_704_139_200.0
CONFIG = (
    CONFIG_HEAD
    + """\
destinations:
  calm: {webhook: "http://127.0.0.1:9/calm", quiet: nights}
  loud: {webhook: "http://127.0.0.1:9/loud"}
quiet_hours:
  nights:
    timezone: UTC
    times:
      - {from: "21:00", to: "23:30"}
  lunch:
    timezone: Europe/Paris
    times:
      - {days: mon-fri, from: "00:15", to: "01:00"}
"""
)
RULES = """\
event: meter_data.received
rules:
  - {name: plain, to: [loud], title: t, body: b}
  - {name: lunch, to: [loud, calm], title: t, body: b, quiet: lunch}
  - {name: urgent, to: [calm], title: t, body: b, urgent: true}
"""


@pytest.fixture(scope="module")
def config() -> Iterator[Config]:
    with tempfile.TemporaryDirectory() as root:
        path = write_config(Path(root), {"meter.yaml": RULES}, CONFIG)
        yield load_config(path)


# -- the streams -----------------------------------------------------------------------

SETTINGS = st.fixed_dictionaries(
    {
        "throttle": st.none() | st.tuples(st.integers(1, 3), st.sampled_from([10.0, 90.0, 900.0])),
        "group": st.none()
        | st.tuples(
            st.sampled_from([0.0, 5.0, 45.0, 600.0]),  # wait
            st.sampled_from([None, 60.0, 1200.0]),  # interval
            st.sampled_from([None, 2, 3, 5]),  # max
        ),
    }
)
MESSAGE = st.tuples(
    st.sampled_from([0.0, 0.0, 1.0, 4.0, 30.0, 61.0, 400.0, 1900.0, 5000.0]),  # after the last
    st.sampled_from([("plain", "loud"), ("lunch", "loud"), ("lunch", "calm"), ("urgent", "calm")]),
    st.sampled_from(["k1", "k2", "k3"]),
    st.sampled_from(["ok"] * 8 + ["failed", "silenced"]),
)
STREAM = st.tuples(
    st.fixed_dictionaries({"plain": SETTINGS, "lunch": SETTINGS, "urgent": SETTINGS}),
    st.lists(MESSAGE, min_size=1, max_size=24),
)

Stream = list[tuple[float, Message]]


def messages(drawn: tuple[dict[str, Any], list[Any]]) -> Stream:
    """The drawn stream as messages, each with its arrival time (one event each)."""
    rules, drawn_messages = drawn
    at, out = T0, []
    for delta, (rule, destination), key, fate in drawn_messages:
        at += delta
        s = rules[rule]
        throttle = Throttling(key, *s["throttle"]) if s["throttle"] else None
        grouping = Grouping(key, *s["group"]) if s["group"] else None
        m = Message(
            rule, destination, None, f"{rule} {key}", "body", "text",
            error="it did not render" if fate == "failed" else None,
            silence_id=1 if fate == "silenced" else None,
            grouping=grouping, throttle=throttle,
        )  # fmt: skip
        out.append((at, m))
    return out


# -- both sides --------------------------------------------------------------------------

Groups = list[tuple[Any, ...]]


def in_memory(config: Config, stream: Stream) -> Groups:
    folds = Folds(config)
    for event_id, (at, m) in enumerate(stream, 1):
        folds.add(m, at, event_id)
    folds.finish()
    return [
        (g.id, g.rule, g.destination, g.key, g.reason, g.due, g.sent_at, g.members)
        for g in folds.groups
    ]


async def in_store(store: Store, config: Config, stream: Stream) -> Groups:
    """The stream routed into a real store at its times, with the real group stage run
    whenever a group falls due (as the daemon's wakes then)."""
    clock = FakeClock(T0)
    stage = GroupStage(store, lambda: config, Metrics(), lambda: None, clock.time)

    async def groups_due_until(until: float) -> None:
        while (due := await store.next_group_due()) is not None and due <= until:
            clock.now = max(clock.now, due)
            await stage.send_due()

    await store.add_silence([], T0 - 1, T0 + 10**6, "held", "test", T0 - 1)
    for n, (at, m) in enumerate(stream):
        await groups_due_until(at)
        clock.now = at
        new = NewEvent("openvolt", f"e{n}", "meter_data.received", at, {}, "{}", {})
        event_id, _ = await store.add_event(new)
        routings = hold_quiet(config, [Routing(event_id, (m,))], at)
        await store.save_routings(routings, at)
    await groups_due_until(math.inf)
    return await stored_groups(store)


async def stored_groups(store: Store) -> Groups:
    # Read through the store's own connection: what the contract promises is in these rows.
    rows = await store.waiting_groups()
    assert rows == [], "every group went"
    db: Any = store
    if isinstance(store, SqliteStore):
        conn = db._conn
        groups = conn.execute(
            "SELECT id, rule, destination, key, reason, due_at, sent_at FROM groups ORDER BY id"
        ).fetchall()
        members = conn.execute(
            "SELECT group_id, event_id FROM deliveries WHERE group_id IS NOT NULL ORDER BY id"
        ).fetchall()
    else:
        groups, members = await _postgres_rows(db)
    by_group: dict[int, list[int]] = {}
    for group_id, event_id in members:
        by_group.setdefault(int(group_id), []).append(int(event_id))
    return [(*tuple(g), by_group.get(int(g[0]), [])) for g in groups]


async def _postgres_rows(store: Any) -> tuple[Sequence[Any], Sequence[Any]]:
    async def read(conn: Any) -> tuple[list[Any], list[Any]]:
        cur = await conn.execute(
            "SELECT id, rule, destination, key, reason, due_at, sent_at FROM groups ORDER BY id"
        )
        groups = [tuple(r.values()) for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT group_id, event_id FROM deliveries WHERE group_id IS NOT NULL ORDER BY id"
        )
        return groups, [tuple(r.values()) for r in await cur.fetchall()]

    result: tuple[list[Any], list[Any]] = await store._db.read(read)
    return result


# -- the property ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """An empty, migrated log to copy for each example (in memory-backed /dev/shm when
    there is one: each example commits dozens of times)."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as root:
        path = Path(root) / "template.db"
        asyncio.run(SqliteStore(str(path)).close())
        yield path


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=STREAM)
def test_the_dry_run_and_the_sqlite_store_make_the_same_groups(
    config: Config, template: Path, drawn: tuple[dict[str, Any], list[Any]]
) -> None:
    stream = messages(drawn)
    with tempfile.TemporaryDirectory(dir=template.parent) as root:
        path = Path(root) / "relayhook.db"
        shutil.copy(template, path)

        async def replay() -> Groups:
            store = SqliteStore(str(path))
            try:
                return await in_store(store, config, stream)
            finally:
                await store.close()

        stored = asyncio.run(replay())
    assert in_memory(config, stream) == stored


@pytest.fixture(scope="module")
def postgres_log(postgres_dsn: str) -> Iterator[str]:
    with fresh_database(postgres_dsn, "policy") as dsn:
        yield dsn


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=STREAM)
def test_the_dry_run_and_the_postgresql_store_make_the_same_groups(
    config: Config, postgres_log: str, drawn: tuple[dict[str, Any], list[Any]]
) -> None:
    from relayhook.store.postgres.store import PostgresStore

    stream = messages(drawn)

    async def replay() -> Groups:
        store = PostgresStore(postgres_log)
        try:
            await store._db.run(_empty)
            return await in_store(store, config, stream)
        finally:
            await store.close()

    assert in_memory(config, stream) == asyncio.run(replay())


async def _empty(conn: Any) -> None:
    """The log as new, ids from 1 (one database for all the examples: making one each
    time would take most of the test's time)."""
    await conn.execute(
        "TRUNCATE events, deliveries, attempts, groups, throttles, silences"
        " RESTART IDENTITY CASCADE"
    )


def test_a_stream_that_crosses_every_rule() -> None:
    """The property is not empty: a fixed stream makes throttle, wait, max and quiet groups."""
    with tempfile.TemporaryDirectory() as root:
        config = load_config(write_config(Path(root), {"meter.yaml": RULES}, CONFIG))
    rules = {
        "plain": {"throttle": (1, 90.0), "group": None},
        "lunch": {"throttle": None, "group": (45.0, 60.0, 2)},
        "urgent": {"throttle": None, "group": None},
    }
    drawn = [
        (0.0, ("plain", "loud"), "k1", "ok"),
        (1.0, ("plain", "loud"), "k1", "ok"),  # past the limit: held
        (1.0, ("lunch", "calm"), "k2", "ok"),
        (1.0, ("lunch", "calm"), "k2", "ok"),  # full
        (3700.0, ("lunch", "calm"), "k2", "ok"),  # 21:00+: quiet hours hold its group
    ]
    groups = in_memory(config, messages((rules, drawn)))
    reasons = [g[4] for g in groups]
    assert reasons == ["throttle", "max", "wait", "quiet"]
    quiet = groups[-1]
    assert quiet[7] == [5] and groups[2][7] == []  # moved into the quiet group
    # Midnight UTC: nights ends at 23:30, the rule's calendar (00:15-01:00 Paris) at 00:00.
    assert quiet[5] == T0 + 4 * 3600
