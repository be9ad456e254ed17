"""`relayhook test --stored`: the rules on disk against events in the delivery log, beside
what was made of them. The real command against logs filled by the real routing code
through the Store API (1,000 Openvolt events), by a real daemon, and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import CONFIG_HEAD, REPO, run_relayhook
from pg import fresh_database
from relayhook.config.load import load_config
from relayhook.model import NewEvent, Routing
from relayhook.policy.silence import parse_matcher
from relayhook.route.quiet import hold_quiet
from relayhook.route.stage import route_event
from relayhook.store.open import open_store
from support import HTTPSink, db_count, running, wait_for
from test_daemon import sample

METERS = [
    "65a7f5449e51f6170f23c9a1",
    "6514167223e3d1424bf82742",
    "65b0aa1100000000000000b2",
    "65c0bb2200000000000000c3",
]
TYPES = [
    "meter_data.received.daily.json",
    "customer.created.json",
    "meter_data.received.backfill.json",
    "user.created.json",
    "meter.created.json",
    "hosted_consent.revoked.json",
    "api_keys.rotated.json",
    "hosted_consent.approved.json",
]
WHEN = "when: payload is list and payload | length > 0"


def openvolt_event(n: int, at: float) -> dict[str, Any]:
    """The nth event: the samples in turn, meter data with 1 to 3 items over METERS, and
    every 25th of a type no rule takes (kept unrouted)."""
    body = sample(TYPES[n % len(TYPES)])
    body["delivery_id"] = f"d-{n}"
    body["event_timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at))
    if body["event_id"] == "meter_data.received":
        item = body["payload"][0]
        body["payload"] = [
            {**item, "meter_id": METERS[(n // 8 + i) % len(METERS)]} for i in range(1 + n % 3)
        ]
    if n % 25 == 0:
        body["event_id"] = "meter.deleted"
    return body


def destinations(url: str = "json://127.0.0.1:9") -> str:
    return "destinations:\n" + "".join(
        f"  {name}: {{url: '{url}/{name}', format: {fmt}}}\n"
        for name, fmt in (
            ("ops-slack", "markdown"),
            ("ops-email", "html"),
            ("security-email", "html"),
        )
    )


def openvolt_config(root: Path, database: str) -> Path:
    """A config folder with the repository's Openvolt rules and the given database."""
    shutil.copytree(REPO / "rules", root / "rules")
    head = CONFIG_HEAD.replace("database: relayhook.db", f"database: '{database}'")
    (root / "config.yaml").write_text(head + destinations())
    return root / "config.yaml"


def edit_rule(config: Path, file: str, old: str, new: str) -> None:
    path = config.parent / "rules" / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def fill(config: Path, bodies: list[tuple[dict[str, Any], float]]) -> list[int]:
    """Store the events and route them as the daemon does (route_event, quiet hours,
    save_routings), in batches; their ids."""

    async def go() -> list[int]:
        cfg = load_config(str(config))
        store = open_store(cfg.database)
        try:
            added = await asyncio.gather(
                *(
                    store.add_event(
                        NewEvent("openvolt", b["delivery_id"], b["event_id"], at, {},
                                 json.dumps(b), b)
                    )
                    for b, at in bodies
                )
            )  # fmt: skip
            while batch := await store.events_to_route(200):
                routings = [Routing(e.id, route_event(cfg, e)) for e in batch]
                now = max(e.received_at for e in batch)
                await store.save_routings(hold_quiet(cfg, routings, now), now)
            return [event_id for event_id, _ in added]
        finally:
            await store.close()

    return asyncio.run(go())


def stored(config: Path, *args: str) -> tuple[int, str, str]:
    result = run_relayhook("test", "--stored", *args, "--config", str(config))
    return result.returncode, result.stdout, result.stderr


def stored_json(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = stored(config, "--json", *args)
    assert out, err
    return code, json.loads(out)


def by_rule(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["rule"]: r for r in report["rules"]}


@pytest.fixture(scope="module")
def openvolt_log(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """1,000 Openvolt events of the last 50 minutes and 40 of two hours ago, routed by the
    repository's rules into one SQLite file (built once; the tests only read it)."""
    root = tmp_path_factory.mktemp("log")
    database = str(root / "relayhook.db")
    config = openvolt_config(root / "fill", database)
    now = time.time()
    recent = [(openvolt_event(n, now - 3000 + 3 * n), now - 3000 + 3 * n) for n in range(1000)]
    old = [(openvolt_event(n, now - 7200 + n), now - 7200 + n) for n in range(1000, 1040)]
    ids = fill(config, old + recent)
    return {
        "database": database,
        "old": dict(zip(ids[:40], old, strict=True)),
        "recent": dict(zip(ids[40:], recent, strict=True)),
    }


@pytest.fixture
def config(tmp_path: Path, openvolt_log: dict[str, Any]) -> Path:
    """The repository's rules, to edit, on the shared log."""
    return openvolt_config(tmp_path, openvolt_log["database"])


def of_type(log: dict[str, Any], event_type: str, part: str = "recent") -> list[int]:
    """The ids of the recent (or old) events of a type."""
    return sorted(i for i, (b, _) in log[part].items() if b["event_id"] == event_type)


def lone_meters(log: dict[str, Any], part: str = "recent") -> list[int]:
    """The ids of meter data events of one item (which `payload | length > 1` drops)."""
    return [i for i in of_type(log, "meter_data.received", part)
            if len(log[part][i][0]["payload"]) == 1]  # fmt: skip


def table_rows(database: str) -> dict[str, list[tuple[Any, ...]]]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}  # noqa: S608


# -- the same rules, then one changed ------------------------------------------------------


def test_rules_unchanged_report_no_difference(config: Path, openvolt_log: dict[str, Any]) -> None:
    code, out, err = stored(config, "--since", "1h")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("1000 stored events received since ")
    assert lines[0].endswith("(the last 1h)")
    assert lines[-1] == "no difference"
    customers = len(of_type(openvolt_log, "customer.created"))
    assert f"rule customer-created: would send {customers}, sent {customers}" in lines
    meter = next(line for line in lines if line.startswith("rule meter-data-received:"))
    assert ";" not in meter  # no change summary

    code, report = stored_json(config, "--since", "1h")
    assert code == 0
    assert report["events"] == 1000
    assert report["changed"] == [] and report["difference"] is False
    rules = by_rule(report)
    assert list(rules) == [
        "api-key-rotated", "customer-created", "consent-approved", "consent-revoked",
        "meter-created", "meter-data-received", "user-created",
    ]  # fmt: skip
    for rule in rules.values():
        assert {"rule", "matched", "would_send", "sent", "errors"} <= set(rule)
        assert rule["would_send"] == rule["sent"] and rule["errors"] == 0, rule
        assert rule["changed"] == []
    # One message per item of each meter event, all made (and all folded by meter).
    meter_events = [b for b, _ in openvolt_log["recent"].values()
                    if b["event_id"] == "meter_data.received"]  # fmt: skip
    items = sum(len(b["payload"]) for b in meter_events)
    meter_rule = rules["meter-data-received"]
    assert (meter_rule["matched"], meter_rule["would_send"]) == (len(meter_events), items)
    assert sum(f["messages"] for f in meter_rule["folds"]) == items
    assert {f["key"] for f in meter_rule["folds"]} == set(METERS)
    assert "would fold into " in out and "key 65a7f544…" in out


def test_a_changed_when_reports_exactly_the_events_it_changes(
    config: Path, openvolt_log: dict[str, Any]
) -> None:
    edit_rule(config, "meter_data.received.yaml", WHEN, "when: payload | length > 1")
    lone = lone_meters(openvolt_log)
    assert 50 < len(lone) < 200
    first_meter = openvolt_log["recent"][lone[0]][0]["payload"][0]["meter_id"]

    code, report = stored_json(config, "--since", "1h")
    assert code == 0
    assert report["changed"] == lone and report["difference"] is True
    rules = by_rule(report)
    meter = rules["meter-data-received"]
    assert meter["changed"] == lone
    assert meter["sent"] - meter["would_send"] == len(lone)
    first = meter["changes"][0]
    assert first["event"] == lone[0]
    assert first["event_type"] == "meter_data.received"
    assert first["about"] == f"meter {first_meter[:8]}…"
    assert first["would"] == {} and first["made"] == {
        "ops-slack": {"send": 1, "silenced": 0, "errors": 0}
    }
    for name, rule in rules.items():
        if name != "meter-data-received":
            assert rule["changed"] == [] and rule["would_send"] == rule["sent"], name

    code, out, _ = stored(config, "--since", "1h")
    assert code == 0
    lines = out.splitlines()
    meter_line = next(line for line in lines if line.startswith("rule meter-data-received:"))
    assert meter_line.startswith(
        f"rule meter-data-received: would send {meter['would_send']}, sent {meter['sent']};"
        f" {len(lone)} gone: meter "
    )
    assert (
        f"    event {lone[0]} (meter_data.received, {first['about']}): would send 0, sent 1"
        in lines
    )
    assert f"    … and {len(lone) - 20} more (--json lists them all)" in lines
    assert lines[-1].startswith(f"{len(lone)} events changed: {lone[0]}, {lone[1]}, ")
    customers = len(of_type(openvolt_log, "customer.created"))
    assert f"rule customer-created: would send {customers}, sent {customers}" in lines


def test_a_new_rule_takes_events_that_were_unrouted(
    config: Path, openvolt_log: dict[str, Any]
) -> None:
    (config.parent / "rules" / "meter.deleted.yaml").write_text(
        "event: meter.deleted\nrules:\n  - name: meter-deleted\n    to: [ops-slack]\n"
        "    body: 'gone: {{ event.delivery_id }}'\n"
    )
    unrouted = of_type(openvolt_log, "meter.deleted")
    code, report = stored_json(config, "--since", "1h")
    assert code == 0
    assert report["changed"] == unrouted
    (rule,) = [r for r in report["rules"] if r["rule"] == "meter-deleted"]
    assert (rule["matched"], rule["would_send"], rule["sent"]) == (40, 40, 0)
    code, out, _ = stored(config, "--since", "1h")
    line = next(line for line in out.splitlines() if line.startswith("rule meter-deleted:"))
    assert line.startswith("rule meter-deleted: would send 40, sent 0; 40 new: meter 65")


def test_render_errors_count_and_name_the_first_failing_event(
    config: Path, openvolt_log: dict[str, Any]
) -> None:
    edit_rule(config, "customer.created.yaml", "{{ payload.name }}", "{{ payload.nope.x }}")
    customers = of_type(openvolt_log, "customer.created")
    n = len(customers)
    code, report = stored_json(config, "--since", "1h")
    assert code == 1  # a rule that fails to render is a problem, as with `test EVENT.json`
    rule = by_rule(report)["customer-created"]
    assert (rule["errors"], rule["would_send"], rule["sent"]) == (n, 0, n)
    assert rule["first_error"]["event"] == customers[0]
    assert "nope" in rule["first_error"]["error"]
    code, out, _ = stored(config, "--since", "1h")
    assert code == 1
    assert (
        f"rule customer-created: would send 0, sent {n}; {n} failing now for customer 6514153c…"
        in out.splitlines()
    )
    assert f"{n} render errors, first: event {customers[0]}: " in out


def test_event_ids_and_the_since_window(config: Path, openvolt_log: dict[str, Any]) -> None:
    edit_rule(config, "meter_data.received.yaml", WHEN, "when: payload | length > 1")
    lone = lone_meters(openvolt_log)[3]
    other = of_type(openvolt_log, "user.created")[0]
    code, report = stored_json(config, "--event", str(lone), "--event", str(other))
    assert code == 0
    assert report["events"] == 2 and report["changed"] == [lone]
    # The default window (24h) takes the events of two hours ago too.
    _, everything = stored_json(config)
    assert everything["events"] == 1040
    assert everything["changed"] == sorted(
        lone_meters(openvolt_log, "old") + lone_meters(openvolt_log)
    )


def test_silences_in_force_count_apart(config: Path, openvolt_log: dict[str, Any]) -> None:
    copy = config.parent / "copy.db"
    shutil.copy(openvolt_log["database"], copy)
    config.write_text(config.read_text().replace(openvolt_log["database"], str(copy)))

    async def silence() -> None:
        store = open_store(str(copy))
        try:
            now = time.time()
            matcher = parse_matcher(f"item.meter_id={METERS[0]}")
            await store.add_silence([matcher], now, now + 3600, "backfill", "test", now)
        finally:
            await store.close()

    asyncio.run(silence())
    code, out, _ = stored(config, "--since", "1h")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("rule meter-data-received:"))
    would, sent = (int(n) for n in re.findall(r"\d+", line))
    (muted,) = (int(n) for n in re.findall(r"(\d+) silenced now, 0 in the log", out))
    assert would + muted == sent and muted > 0
    # A silence added since is not a change of the rules: counted, not listed.
    assert line == f"rule meter-data-received: would send {would}, sent {sent}"
    assert f"{muted} silenced now, 0 in the log" in out
    assert out.splitlines()[-1] == "no difference"


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["test", "EVENT", "--stored"], "give EVENT.json or --stored, not both"),
        (["test"], "give EVENT.json ('-' reads stdin), or --stored for the events in the"),
        (["test", "EVENT", "--since", "1h"], "--since and --event go with --stored"),
        (
            ["test", "--stored", "--since", "1h", "--event", "3"],
            "give --since or --event, not both",
        ),
        (["test", "--stored", "--source", "openvolt"], "--source and --header go with EVENT.json"),
        (
            ["test", "--stored", "--since", "soon"],
            "Invalid value for --since: expected a duration such as 500ms, 5s, 10m, 1h or"
            " 1h30m, got 'soon'",
        ),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    config = openvolt_config(tmp_path, "relayhook.db")
    event = tmp_path / "event.json"
    event.write_text(json.dumps(sample("user.created.json")))
    args = [str(event) if a == "EVENT" else a for a in args]
    result = run_relayhook(*args, "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_an_unknown_event_id_is_named(config: Path) -> None:
    code, out, err = stored(config, "--event", "1", "--event", "999998", "--event", "999999")
    assert (code, out) == (1, "")
    assert err == "no stored event with id 999998, 999999\n"


def test_a_database_that_does_not_exist(tmp_path: Path) -> None:
    config = openvolt_config(tmp_path, "nothing-here.db")
    code, out, err = stored(config)
    assert (code, out) == (1, "")
    assert err == f"{tmp_path / 'nothing-here.db'}: no database yet (relayhook serve creates it)\n"
    assert not (tmp_path / "nothing-here.db").exists()


# -- beside a log a real daemon made ----------------------------------------------------------


def test_it_writes_and_sends_nothing(tmp_path: Path, sink: HTTPSink) -> None:
    # The rules' destinations all at the sink; a short group wait, so digests go too.
    config = openvolt_config(tmp_path, "relayhook.db")
    head = CONFIG_HEAD.replace("s3cret-token-value", "test-token")
    config.write_text(head + destinations(f"json://127.0.0.1:{sink.port}"))
    edit_rule(config, "meter_data.received.yaml", "wait: 10s", "wait: 500ms")
    now = time.time()
    with running(config) as daemon:
        for n in range(1, 25):
            status, answer = daemon.post(openvolt_event(n, now))
            assert status == 202, answer
        wait_for(lambda: not _unfinished(tmp_path / "relayhook.db"), 20, "every delivery")
        daemon.stop()
    before, received = table_rows(str(tmp_path / "relayhook.db")), len(sink.received)
    assert received > 20
    assert db_count(tmp_path / "relayhook.db", "groups", "count > 1 AND digest_id > 0")

    code, out, err = stored(config)
    assert code == 0, err
    assert out.splitlines()[0].startswith("24 stored events received since ")
    assert out.splitlines()[-1] == "no difference"
    code, report = stored_json(config)
    assert (code, report["events"], report["changed"]) == (0, 24, [])
    assert sum(r["sent"] for r in report["rules"]) > 20
    # What the dry run says the groups would fold is what the daemon's groups did.
    (meter,) = [r for r in report["rules"] if r["rule"] == "meter-data-received"]
    folds = sorted((f["key"], f["groups"], f["messages"]) for f in meter["folds"])
    with contextlib.closing(sqlite3.connect(tmp_path / "relayhook.db")) as conn:
        made = conn.execute(
            "SELECT key, COUNT(*), SUM(count) FROM groups WHERE rule = 'meter-data-received'"
            " GROUP BY key ORDER BY key"
        ).fetchall()
    assert folds == [tuple(row) for row in made] and folds
    assert table_rows(str(tmp_path / "relayhook.db")) == before
    assert len(sink.received) == received


def _unfinished(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        waiting = conn.execute(
            "SELECT (SELECT COUNT(*) FROM deliveries WHERE state IN ('pending', 'retrying'))"
            " + (SELECT COUNT(*) FROM groups WHERE state != 'sent')"
            " + (SELECT COUNT(*) FROM events WHERE state = 'received')"
        ).fetchone()
    return int(waiting[0])


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
def pg_log(postgres_dsn: str) -> Iterator[str]:
    with fresh_database(postgres_dsn, "stored") as db:
        yield db


def test_postgresql(tmp_path: Path, pg_log: str) -> None:
    config = openvolt_config(tmp_path, pg_log)
    now = time.time()
    events = [(openvolt_event(n, now - 100 + n), now - 100 + n) for n in range(48)]
    ids = fill(config, events)
    rows = _pg_rows(pg_log)

    code, report = stored_json(config, "--since", "1h")
    assert (code, report["events"], report["changed"]) == (0, 48, [])
    edit_rule(config, "meter_data.received.yaml", WHEN, "when: payload | length > 1")
    code, report = stored_json(config, "--since", "1h")
    lone = [i for i, (b, _) in zip(ids, events, strict=True)
            if b["event_id"] == "meter_data.received" and len(b["payload"]) == 1]  # fmt: skip
    assert (code, report["changed"]) == (0, lone)
    code, out, _ = stored(config, "--event", str(lone[0]))
    assert out.splitlines()[-1] == f"1 event changed: {lone[0]}"
    assert _pg_rows(pg_log) == rows


def _pg_rows(db: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (an UPDATE shows as well as an INSERT)."""
    with psycopg.connect(db) as conn:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()  # type: ignore[arg-type]  # noqa: S608
            for t in ("events", "deliveries", "groups", "throttles", "attempts", "silences",
                      "destinations")
        }  # fmt: skip
