"""`relayhook serve` end to end: real process, real HTTP and SMTP sinks, real SQLite file."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, SAMPLES, run_relayhook
from support import Daemon, HTTPSink, SMTPSink, db_count, db_rows, running, wait_for

TOKEN = "test-token"


def make_config(
    root: Path,
    destinations: dict[str, Any],
    rules: dict[str, Any],
    retry: str = "{attempts: 5, first_delay: 100ms, max_delay: 500ms}",
    extra: str = "",
) -> Path:
    (root / "rules").mkdir(exist_ok=True)
    for name, doc in rules.items():
        (root / "rules" / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    config = {
        "database": "relayhook.db",
        "rules": "rules",
        "sources": {
            "openvolt": {
                "event_type": "event_id",
                "event_key": "delivery_id",
                "auth": {"token": TOKEN},
            }
        },
        "destinations": destinations,
    }
    text = yaml.safe_dump(config, sort_keys=False) + f"retry: {retry}\n" + extra
    (root / "config.yaml").write_text(text)
    return root / "config.yaml"


def echo_rule(to: list[str], event: str = "*") -> dict[str, Any]:
    return {
        "event": event,
        "rules": [
            {
                "name": "echo",
                "to": to,
                "title": "{{ event_type }} {{ event.delivery_id }}",
                "body": "payload={{ payload | tojson }}",
            }
        ],
    }


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text())


def event(n: int, event_type: str = "customer.created") -> dict[str, Any]:
    return {"event_id": event_type, "delivery_id": f"d-{n}", "payload": {"n": n}}


@pytest.fixture
def smtp() -> Any:
    s = SMTPSink().start()
    yield s
    s.stop()


def show(config: Path, delivery_id: int) -> dict[str, Any]:
    result = run_relayhook("show", str(delivery_id), "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


_DRY_RUNS: dict[str, Any] = {}  # sample file name: its dry run's rules


@pytest.mark.parametrize("processes", [0, 1], ids=["threads", "worker-processes"])
def test_every_sample_arrives_in_chat_and_email(
    tmp_path: Path, sink: HTTPSink, smtp: SMTPSink, processes: int
) -> None:
    # The example rules, with every rule also sending to ops-email; ungrouped, so that
    # each message arrives as the dry run shows it (digests: tests/test_groups.py).
    rules_dir = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules_dir)
    for path in rules_dir.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        for rule in doc["rules"]:
            rule["to"] = sorted({*rule["to"], "ops-email"})
            for key in ("group", "digest_title", "digest_body", "digest_template"):
                rule.pop(key, None)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    config = make_config(
        tmp_path,
        {
            "ops-slack": {"url": sink.url("/slack"), "format": "markdown", "processes": processes},
            "ops-email": {
                "url": smtp.url("ops@example.com"),
                "format": "html",
                "min_interval": "0s",
                "processes": processes,
            },
            "security-email": {
                "url": smtp.url("security@example.com"),
                "format": "html",
                "min_interval": "0s",
                "processes": processes,
            },
        },
        {},
    )
    samples = sorted(SAMPLES.glob("*.json"))
    expected: list[dict[str, Any]] = []
    for path in samples:
        # The same rules and destinations for both params (processes changes no message):
        # each sample's dry run is run once.
        if path.name not in _DRY_RUNS:
            dry = run_relayhook("test", str(path), "--json", "--config", str(config))
            assert dry.returncode == 0, dry.stderr
            _DRY_RUNS[path.name] = json.loads(dry.stdout)["rules"]
        for rule in _DRY_RUNS[path.name]:
            expected.extend(rule["messages"])
    with running(config) as daemon:
        for path in samples:
            status, answer = daemon.post(json.loads(path.read_text()))
            assert status == 202, answer
        chat = [m for m in expected if m["destination"] == "ops-slack"]
        mail = [m for m in expected if m["destination"].endswith("email")]
        wait_for(
            lambda: len(sink.at("/slack")) >= len(chat) and len(smtp.messages) >= len(mail),
            30,
            "every message",
        )
        time.sleep(0.3)
    got_chat = sorted((r.json()["title"], r.json()["message"]) for r in sink.at("/slack"))
    assert [t for t, _ in got_chat] == sorted(m["title"] for m in chat)
    # Markdown rules arrive as rendered; apprise converts html rules to the chat's markdown.
    for m in chat:
        if m["format"] == "markdown":
            assert (m["title"], m["body"]) in got_chat
    rotated = next(b for t, b in got_chat if t.startswith("Security notice"))
    assert rotated.startswith(
        "**Security notice.** The Openvolt API key for this account was rotated"
    )
    assert len(smtp.messages) == len(mail)
    subjects = sorted(str(m["Subject"]) for m in smtp.messages)
    assert subjects == sorted(m["title"] for m in mail)
    revoked = next(m for m in smtp.messages if str(m["Subject"]).startswith("URGENT"))
    html = revoked.get_body(("html",))
    assert html is not None and "<li>MPAN 1200012345678</li>" in html.get_content()
    db = tmp_path / "relayhook.db"
    assert db_count(db, "deliveries", "state != 'delivered'") == 0
    types = db_rows(
        db,
        "SELECT DISTINCT e.event_type FROM deliveries d JOIN events e"
        " ON e.id = d.event_id WHERE d.destination = 'ops-email'",
    )
    assert len(types) == 7  # all seven Openvolt event types reached email


def test_same_delivery_id_twice_is_one_delivery(tmp_path: Path, sink: HTTPSink) -> None:
    config = make_config(
        tmp_path, {"hook": {"url": sink.url("/a")}}, {"all.yaml": echo_rule(["hook"])}
    )
    with running(config) as daemon:
        first = daemon.post(event(1))
        second = daemon.post(event(1))
        assert first[0] == 202 and "event_id" in first[1]
        assert second == (200, {"duplicate": True, "event_id": first[1]["event_id"]})
        wait_for(lambda: len(sink.at("/a")) == 1, what="the delivery")
        time.sleep(0.5)
    assert len(sink.at("/a")) == 1
    assert db_count(tmp_path / "relayhook.db", "deliveries") == 1


def test_retried_until_delivered_on_try_four(tmp_path: Path, sink: HTTPSink) -> None:
    sink.responses["/flaky"] = [500, 500, 500, 200]
    config = make_config(
        tmp_path, {"flaky": {"url": sink.url("/flaky")}}, {"all.yaml": echo_rule(["flaky"])}
    )
    with running(config) as daemon:
        assert daemon.post(event(1))[0] == 202
        db = tmp_path / "relayhook.db"
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 1, what="delivery")
    d = show(config, 1)
    assert d["state"] == "delivered" and d["attempts"] == 4
    outcomes = [(a["number"], a["outcome"]) for a in d["attempts_log"]]
    assert outcomes == [(1, "failed"), (2, "failed"), (3, "failed"), (4, "delivered")]
    assert "error=500" in d["attempts_log"][0]["error"]
    assert all(a["duration_ms"] >= 0 and a["started_at"] > 0 for a in d["attempts_log"])
    assert len(sink.at("/flaky")) == 4


def test_forbidden_forever_is_dead_after_exactly_attempts(tmp_path: Path, sink: HTTPSink) -> None:
    sink.responses["/no"] = [403]
    config = make_config(
        tmp_path,
        {"no": {"url": sink.url("/no")}},
        {"all.yaml": echo_rule(["no"])},
        retry="{attempts: 3, first_delay: 50ms, max_delay: 100ms}",
    )
    with running(config) as daemon:
        daemon.post(event(1))
        db = tmp_path / "relayhook.db"
        wait_for(lambda: db_count(db, "deliveries", "state = 'dead'") == 1, what="dead")
        time.sleep(1.5)  # then silence
        assert len(sink.at("/no")) == 3
    assert db_count(tmp_path / "relayhook.db", "attempts") == 3
    listed = run_relayhook("deliveries", "--status", "dead", "--json", "--config", str(config))
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["attempts"] == 3 and "error=403" in row["last_error"]


def test_render_failure_and_unrouted_are_kept(tmp_path: Path, sink: HTTPSink) -> None:
    rules = {
        "a.yaml": {
            "event": "customer.created",
            "rules": [
                {"name": "broken", "to": ["hook"], "body": "{{ payload.missing }}"},
                {"name": "fine", "to": ["hook"], "body": "ok {{ payload.n }}"},
            ],
        }
    }
    config = make_config(tmp_path, {"hook": {"url": sink.url("/a")}}, rules)
    with running(config) as daemon:
        daemon.post(event(1))
        daemon.post(event(2, "nobody.cares"))
        wait_for(lambda: len(sink.at("/a")) == 1, what="the good rule's delivery")
        db = tmp_path / "relayhook.db"
        wait_for(lambda: db_count(db, "events", "state = 'unrouted'") == 1, what="unrouted")
    (failed,) = db_rows(tmp_path / "relayhook.db", "SELECT * FROM deliveries WHERE rule = 'broken'")
    assert failed["state"] == "failed"
    assert failed["last_error"] == "undefined: 'dict object' has no attribute 'missing'"
    assert sink.at("/a")[0].json()["message"] == "ok 1"


def test_bad_inputs_get_clear_errors_and_write_nothing(tmp_path: Path, sink: HTTPSink) -> None:
    config = make_config(
        tmp_path, {"hook": {"url": sink.url("/a")}}, {"all.yaml": echo_rule(["hook"])}
    )
    db = tmp_path / "relayhook.db"
    with running(config) as daemon:
        cases = [
            (daemon.post(event(1), source="nope"), 404, "unknown source 'nope'"),
            (daemon.post(event(1), token="wrong"), 401, "invalid token"),
            (
                daemon.post(event(1), token=None),
                401,
                "missing token: send ?token=... or Authorization: Bearer ...",
            ),
            (
                daemon.post(None, raw=b"{not json"),
                400,
                "request body is not valid JSON: Expecting property name enclosed in double quotes"
                " at line 1 column 2",
            ),
            (daemon.post(None, raw=b""), 400, "request body is empty; expected a JSON document"),
            (daemon.post(None, raw=b"\xff\xfe"), 400, "request body is not UTF-8 text"),
            (
                daemon.post({"delivery_id": "x"}),
                422,
                "event type missing: field event_id is not in the request",
            ),
            (
                daemon.post({"event_id": 5, "delivery_id": "x"}),
                422,
                "event type must be a non-empty string: field event_id is a number",
            ),
            (daemon.post([1, 2]), 422, "event type missing: field event_id is not in the request"),
        ]
        for (status, body), want_status, want_message in cases:
            assert (status, body) == (want_status, {"error": want_message})
        assert db_count(db, "events") == 0
        # Bearer works as well as ?token=, and the good request is the only row.
        status, _ = daemon.post(event(1), token=None, headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 202
        assert db_count(db, "events") == 1
        assert daemon.request("GET", "/healthz") == (200, {"status": "ok"})
        assert daemon.request("GET", "/nowhere") == (404, {"error": "Not Found"})
        assert daemon.request("POST", "/hooks") == (404, {"error": "unknown source ''"})
        assert daemon.request("GET", "/hooks/openvolt") == (
            405,
            {"error": "method not allowed: send events with POST"},
        )


def test_a_failed_commit_is_a_503_and_keeps_nothing(tmp_path: Path, sink: HTTPSink) -> None:
    config = make_config(
        tmp_path, {"hook": {"url": sink.url("/a")}}, {"all.yaml": echo_rule(["hook"])}
    )
    db = tmp_path / "relayhook.db"
    with running(config) as daemon:
        assert daemon.post(event(1))[0] == 202
        # A real failure inside the daemon's write transaction, as a full disk would be.
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON events"
                " BEGIN SELECT RAISE(ABORT, 'disk is on fire'); END"
            )
            conn.commit()
        assert daemon.post(event(2)) == (
            503,
            {
                "error": "could not store the event (disk is on fire); nothing was kept,"
                " send it again later"
            },
        )
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute("DROP TRIGGER refuse")
            conn.commit()
        assert daemon.post(event(2))[0] == 202
        assert db_count(db, "events") == 2
        wait_for(lambda: len(sink.at("/a")) == 2, 10, "both deliveries")
    assert "POST /hooks/openvolt: could not store the event: disk is on fire" in daemon.log()


def test_a_failing_delivery_log_holds_work_without_sending_twice(
    tmp_path: Path, sink: HTTPSink
) -> None:
    config = make_config(
        tmp_path, {"hook": {"url": sink.url("/a")}}, {"all.yaml": echo_rule(["hook"])}
    )
    db = tmp_path / "relayhook.db"
    with running(config) as daemon:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON attempts"
                " BEGIN SELECT RAISE(ABORT, 'disk is on fire'); END"
            )
            conn.commit()
        for n in range(5):
            assert daemon.post(event(n))[0] == 202
        # Sent, but their outcomes cannot be written: the recorder fails and starts again.
        wait_for(lambda: len(sink.at("/a")) == 5, 10, "five sends")
        wait_for(
            lambda: "recorder: database error (disk is on fire); trying again in 1s" in daemon.log()
        )
        time.sleep(2.5)  # a scheduler that forgot them would send them again by now
        assert len(sink.at("/a")) == 5
        assert daemon.request("GET", "/readyz")[0] == 200
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute("DROP TRIGGER refuse")
            conn.commit()
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 5, 10, "records")
        assert daemon.post(event(9))[0] == 202
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 6, 10, "one more")
    assert len(sink.at("/a")) == 6
    assert db_count(db, "attempts") == 6


def test_hanging_destination_does_not_delay_another(tmp_path: Path, sink: HTTPSink) -> None:
    sink.responses["/hang"] = ["hang"]
    sink.hang_seconds = 5
    config = make_config(
        tmp_path,
        {
            "slow": {"url": sink.url("/hang"), "timeout": "1s", "concurrency": 2},
            "fast": {"url": sink.url("/fast")},
        },
        {"all.yaml": echo_rule(["slow", "fast"])},
    )
    with running(config) as daemon:
        start = time.monotonic()
        for n in range(20):
            daemon.post(event(n))
        wait_for(lambda: len(sink.at("/fast")) == 20, 10, "fast deliveries")
        fast_done = time.monotonic() - start
        db = tmp_path / "relayhook.db"
        wait_for(lambda: db_count(db, "attempts", "outcome = 'timeout'") >= 2, 10, "timeouts")
    # 20 deliveries to the hanging destination at 2 at a time would take 10 s of timeouts.
    assert fast_done < 5, fast_done
    (timeout,) = db_rows(db, "SELECT error FROM attempts WHERE outcome = 'timeout' LIMIT 1")
    assert timeout["error"] == "timeout (may have been delivered)"


def test_sigkill_after_ack_loses_nothing(tmp_path: Path) -> None:
    down = HTTPSink()  # its port is not listening yet: the destination is down
    config = make_config(
        tmp_path,
        # What is proven here is that none is lost, not how fast they drain: no circuit
        # (opened by the refused sends, it held them for its 30-s probe after the restart),
        # and a webhook (apprise's json:// went at 30 a second, in a thread each).
        {
            "hook": {
                "webhook": f"http://127.0.0.1:{down.port}/c",
                "concurrency": 16,
                "circuit": "off",
            }
        },
        {"all.yaml": echo_rule(["hook"])},
        retry="{attempts: 1000, first_delay: 100ms, max_delay: 1s}",
    )
    daemon = Daemon(config).start()
    acked = set()
    try:
        for n in range(1000):
            status, body = daemon.post(event(n))
            assert status == 202, body
            acked.add(f"d-{n}")
    finally:
        daemon.kill()
    assert len(acked) == 1000
    down.start()
    try:
        with running(config):

            def arrived() -> set[str]:
                return {r.json()["title"].split()[-1] for r in down.at("/c")}

            wait_for(lambda: arrived() >= acked, 120, "every acknowledged event to arrive")
        assert arrived() == acked
    finally:
        down.stop()


def test_replay_cli(tmp_path: Path, sink: HTTPSink) -> None:
    sink.responses["/a"] = [403, 403, 200]
    config = make_config(
        tmp_path,
        {"hook": {"url": sink.url("/a")}},
        {"all.yaml": echo_rule(["hook"])},
        retry="{attempts: 2, first_delay: 50ms, max_delay: 100ms}",
    )
    db = tmp_path / "relayhook.db"
    with running(config) as daemon:
        daemon.post(event(1))
        wait_for(lambda: db_count(db, "deliveries", "state = 'dead'") == 1, what="dead")
        result = run_relayhook("replay", "--dead", "--since", "1h", "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert result.stdout == "delivery 1 queued again as 2\n"
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 1, what="replayed")
        again = run_relayhook("replay", "2", "--config", str(config))
        assert again.stdout == "delivery 2 queued again as 3\n"
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 2, what="replayed")
    assert show(config, 2)["replay_of"] == 1
    human = run_relayhook("show", "1", "--config", str(config))
    assert "delivery 1: dead after 2 attempt(s)" in human.stdout
    listing = run_relayhook("deliveries", "--config", str(config))
    assert listing.stdout.splitlines()[1].split()[:3] == ["3", "delivered", "1"]
    bad = run_relayhook("replay", "99", "--config", str(config))
    assert (
        bad.returncode == 1
        and "not replayed (unknown, or not delivered/dead/silenced): 99" in bad.stderr
    )
    usage = run_relayhook("replay", "--config", str(config))
    assert usage.returncode == 2


def test_min_interval_paces_a_destination(tmp_path: Path, sink: HTTPSink) -> None:
    config = make_config(
        tmp_path,
        {"paced": {"url": sink.url("/p"), "min_interval": "300ms"}},
        {"all.yaml": echo_rule(["paced"])},
    )
    with running(config) as daemon:
        for n in range(4):
            daemon.post(event(n))
        wait_for(lambda: len(sink.at("/p")) == 4, 20, "paced deliveries")
    times = sorted(r.at for r in sink.at("/p"))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.28, gaps
