"""Several instances on one PostgreSQL database, against a real server (tests/pg.py), real
daemons and a real sink: dedupe across instances, each delivery sent by one instance,
SIGKILL of one instance loses nothing, a waiting group goes once from another, events an
instance stored but never routed are routed by another."""

from __future__ import annotations

import collections
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from conftest import run_relayhook
from pg import fresh_database
from support import Daemon, HTTPSink, running, wait_for
from test_daemon import echo_rule, make_config


def pg_config(
    tmp_path: Path,
    sink: HTTPSink,
    db: str,
    rules: dict[str, Any] | None = None,
    extra: str = "",
    hook: dict[str, Any] | None = None,
) -> Path:
    config = make_config(
        tmp_path,
        {
            "hook": {
                "webhook": f"http://127.0.0.1:{sink.port}/hook",
                "timeout": "2s",
                **(hook or {}),
            }
        },
        rules or {"echo.yaml": echo_rule(["hook"])},
        retry="{attempts: 5, first_delay: 100ms, max_delay: 1s}",
        extra=f"lease: 15s\n{extra}",
    )
    config.write_text(config.read_text().replace("database: relayhook.db", f"database: {db}"))
    return config


def count(db: str, sql: str) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row else 0


def post_all(
    daemons: list[Daemon], events: list[tuple[int, dict[str, Any]]], status: int = 202
) -> None:
    """Post each (instance index, event) from one thread per instance; each answers status
    (202 stored, 200 for a key any instance stored before)."""
    failed: list[Any] = []

    def feed(index: int) -> None:
        for which, event in events:
            if which == index:
                answer = daemons[index].post(event)
                if answer[0] != status:
                    failed.append(answer)

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(len(daemons))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failed == []


def event(n: int) -> dict[str, Any]:
    return {"event_id": "customer.created", "delivery_id": f"d-{n}", "payload": {"n": n}}


def test_three_instances_dedupe_across_them_and_send_each_message_once(
    tmp_path: Path, sink: HTTPSink, postgres_dsn: str
) -> None:
    with fresh_database(postgres_dsn, "daemons") as db:
        config = pg_config(tmp_path, sink, db)
        with running(config) as a, running(config) as b, running(config) as c:
            daemons = [a, b, c]
            first = [(n % 3, event(n)) for n in range(3000)]
            # 300 keys again, each to another instance than the first time.
            repeats = [((n % 3 + 1) % 3, event(n)) for n in range(0, 3000, 10)]
            post_all(daemons, first)
            post_all(daemons, repeats, status=200)
            wait_for(lambda: len(sink.at("/hook")) >= 3000, 60, "3,000 messages")
            wait_for(
                lambda: (
                    count(db, "SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'") == 3000
                ),
                20,
                "every delivery recorded",
            )
            listed = run_relayhook("deliveries", "--limit", "3", "--config", str(config))
            assert listed.returncode == 0 and listed.stdout.count("delivered") == 3
        assert count(db, "SELECT COUNT(*) FROM events") == 3000
    received = [r.json()["title"] for r in sink.at("/hook")]
    assert len(received) == 3000 and len(set(received)) == 3000
    ids = [r.headers["X-Relayhook-Delivery"] for r in sink.at("/hook")]
    assert len(set(ids)) == 3000


def test_sigkill_of_one_instance_loses_nothing_and_repeats_only_its_sends_in_flight(
    tmp_path: Path, postgres_dsn: str
) -> None:
    sink = HTTPSink(delay=0.1).start()
    try:
        with fresh_database(postgres_dsn, "daemons") as db:
            config = pg_config(tmp_path, sink, db)
            with running(config) as a:
                post_all([a], [(0, event(n)) for n in range(1000)])
                wait_for(
                    lambda: count(db, "SELECT COUNT(*) FROM deliveries") == 1000, 30, "routing"
                )
                with running(config), running(config):
                    wait_for(lambda: len(sink.at("/hook")) >= 150, 30, "sends under way")
                    a.kill()  # with its sends in flight (8 at most: its concurrency)
                    wait_for(
                        lambda: (
                            count(db, "SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
                            == 1000
                        ),
                        90,
                        "every delivery, the killed one's after their leases ran out",
                    )
    finally:
        sink.stop()
    seen = collections.Counter(r.headers["X-Relayhook-Delivery"] for r in sink.at("/hook"))
    assert len(seen) == 1000
    repeated = [d for d, n in seen.items() if n > 1]
    # Its sends in flight (8 at most: its concurrency), and those that had ended but
    # whose attempts its recorder had not written yet (a batch: a few more under load;
    # 9 seen in a serial run, 11 under xdist). Not the deliveries it had merely claimed.
    assert len(repeated) <= 16, repeated
    assert all(seen[d] == 2 for d in repeated)


def test_a_group_waiting_on_a_killed_instance_goes_once_from_another(
    tmp_path: Path, sink: HTTPSink, postgres_dsn: str
) -> None:
    rules = echo_rule(["hook"])
    rules["rules"][0]["group"] = {"wait": "3s"}
    with fresh_database(postgres_dsn, "daemons") as db:
        config = pg_config(tmp_path, sink, db, {"echo.yaml": rules})
        with running(config) as a, running(config):
            post_all([a], [(0, event(n)) for n in range(5)])
            # All five waiting in the one group (an event a killed instance had not routed
            # yet would be adopted seconds later: another test's case).
            wait_for(
                lambda: count(db, "SELECT COUNT(*) FROM deliveries WHERE state = 'grouped'") == 5,
                10,
                "the group of five",
            )
            assert count(db, "SELECT COUNT(*) FROM groups") == 1
            a.kill()
            wait_for(lambda: len(sink.at("/hook")) >= 1, 15, "the digest")
            with running(config):  # a third comes and goes: still one digest
                time.sleep(2)
    (digest,) = [r.json()["title"] for r in sink.at("/hook")]
    assert digest == "5 × echo"


def test_events_an_instance_stored_but_never_routed_are_routed_by_another(
    tmp_path: Path, sink: HTTPSink, postgres_dsn: str
) -> None:
    import asyncio
    import json

    from relayhook.model import NewEvent
    from relayhook.store.postgres.store import PostgresStore

    async def store_only(db: str) -> None:
        # What an instance killed between its commit (the 202) and routing leaves behind.
        store = PostgresStore(db, owner="killed")
        for n in range(20):
            body = event(n)
            await store.add_event(
                NewEvent("openvolt", f"lost-{n}", "customer.created", time.time(), {},
                         json.dumps(body), body)
            )  # fmt: skip
        await store.close()

    with fresh_database(postgres_dsn, "daemons") as db:
        config = pg_config(tmp_path, sink, db)
        with running(config) as a:
            a.post(event(1000))  # its own: routed at once, from memory
            wait_for(lambda: len(sink.at("/hook")) == 1, 10, "its own event")
            asyncio.run(store_only(db))
            # Left to their instance for a few seconds, then taken over, each once.
            wait_for(lambda: len(sink.at("/hook")) == 21, 20, "the orphaned events")
            time.sleep(1)
    titles = sorted(r.json()["title"] for r in sink.at("/hook"))
    assert titles == sorted(f"customer.created d-{n}" for n in [*range(20), 1000])


def _sqlite_log(path: Path, events: int) -> None:
    """A SQLite log with events, deliveries in several states, attempts, a silence, a group."""
    import asyncio
    import json

    from relayhook.model import (
        Attempt,
        Decision,
        DeliveryState,
        Grouping,
        Message,
        NewEvent,
        Routing,
    )
    from relayhook.policy.silence import Matcher
    from relayhook.store.sqlite.store import SqliteStore

    async def fill() -> None:
        store = SqliteStore(str(path))
        await store.add_silence([Matcher("rule", "=", "r")], 1.0, 2e9, "c", "me", 1.0)
        for n in range(events):
            body = {"n": n, "text": "é ☃"}
            new = NewEvent("src", f"k{n}", "t.x", 1000.0 + n, {"h": "v"}, json.dumps(body), body)
            event_id, _ = await store.add_event(new)
            messages = [Message("r", "hook", None, f"title {n}", "body", "text", item={"n": n})]
            if n % 100 == 0:
                messages.append(
                    Message(
                        "g", "hook", 0, "t", "b", "text", grouping=Grouping("k", 60, None, None)
                    )
                )
            await store.save_routings([Routing(event_id, tuple(messages))], 1000.0 + n)
        claimed, _ = await store.claim_due({"hook": 50}, set(), 1e10)
        await store.record_attempts(
            [
                Attempt(d.id, 1, 5000.0, 12.5, "failed", "HTTP 500", Decision(DeliveryState.DEAD),
                        5001.0, "hook", held=d.id % 2 == 0)
                for d in claimed
            ]
        )  # fmt: skip
        await store.close()

    asyncio.run(fill())


def _rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    import sqlite3

    conn = sqlite3.connect(path)
    found = {}
    for table in ("events", "silences", "deliveries", "attempts", "groups", "destinations"):
        found[table] = conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()  # noqa: S608
    conn.close()
    return found


def test_db_copy_sqlite_to_postgresql_and_back_keeps_every_row(
    tmp_path: Path, postgres_dsn: str
) -> None:
    first, back = tmp_path / "first.db", tmp_path / "back.db"
    _sqlite_log(first, 2_500)  # three batches of the copy's 1,000 rows per table
    with fresh_database(postgres_dsn, "daemons") as db:
        there = run_relayhook("db", "copy", str(first), db)
        assert there.returncode == 0, there.stderr
        assert "events: 2500 rows" in there.stdout
        assert count(db, "SELECT COUNT(*) FROM events") == 2_500
        again = run_relayhook("db", "copy", str(first), db)
        assert again.returncode == 1
        assert "not copied: the target is not empty (events, silences, deliveries" in again.stderr
        home = run_relayhook("db", "copy", db, str(back))
        assert home.returncode == 0, home.stderr
    before, after = _rows(first), _rows(back)
    for table, rows in before.items():
        assert len(rows) > 0 or table == "destinations", table
        assert after[table] == rows, table


def test_a_database_that_is_not_there_stops_the_daemon_saying_so(
    tmp_path: Path, sink: HTTPSink
) -> None:
    from support import free_port

    db = f"postgresql://relayhook:s3cret-pw@127.0.0.1:{free_port()}/nothing"
    config = pg_config(tmp_path, sink, db)
    daemon = Daemon(config).start(wait=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(40) == 1
    log = daemon.log()
    assert "cannot use the database postgresql://relayhook:***@127.0.0.1:" in log
    assert "s3cret-pw" not in log


def test_a_lease_shorter_than_two_sends_is_a_check_error(tmp_path: Path, sink: HTTPSink) -> None:
    config = pg_config(tmp_path, sink, "postgresql://relayhook@127.0.0.1:5432/x")
    config.write_text(config.read_text().replace("lease: 15s", "lease: 10s"))
    result = run_relayhook("check", "--config", str(config))
    assert result.returncode == 1
    assert (
        "config: lease: 10s is too short: a send may take 2s (the longest destination timeout),"
        " so a lease must be at least twice that plus 10s (14s), or two instances could send"
        " one delivery"
    ) in result.stderr


def test_two_instances_send_one_probe_per_interval_between_them(
    tmp_path: Path, sink: HTTPSink, postgres_dsn: str
) -> None:
    sink.responses["/hook"] = [503]
    with fresh_database(postgres_dsn, "daemons") as db:
        config = pg_config(tmp_path, sink, db, hook={"circuit": {"failures": 2, "probe": "3s"}})
        with running(config) as a, running(config) as b:
            post_all([a, b], [(n % 2, event(n)) for n in range(6)])
            wait_for(
                lambda: count(db, "SELECT COUNT(*) FROM destinations WHERE circuit_open") == 1,
                15,
                "the circuit to open",
            )
            time.sleep(2.5)  # both instances have seen it open (they read it every 2 s)
            start = len(sink.at("/hook"))
            time.sleep(7)
            probes = sorted(r.at for r in sink.at("/hook")[start:])
    # One probe per 3 s between both instances (the retry policy's max_delay of 1 s keeps
    # the interval from doubling); each alone would probe on its own schedule.
    assert 1 <= len(probes) <= 3, probes
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert all(gap >= 2.5 for gap in gaps), gaps
