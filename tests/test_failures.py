"""When a destination fails, against a real daemon, sink, SMTP server and database: the
circuit holds an outage without killing deliveries, a dead delivery falls back to email,
send-test tries a destination by hand, status shows how each stands."""

from __future__ import annotations

import itertools
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import run_relayhook
from support import HTTPSink, SMTPSink, db_count, db_rows, free_port, running, wait_for
from test_daemon import echo_rule, event, make_config, show

ADMIN = "failures-admin-token-0123456789"


@pytest.fixture
def smtp() -> Any:
    s = SMTPSink().start()
    yield s
    s.stop()


def hook_config(
    tmp_path: Path,
    sink: HTTPSink,
    hook: dict[str, Any] | None = None,
    retry: str = "{attempts: 3, first_delay: 100ms, max_delay: 10s}",
    more: dict[str, Any] | None = None,
) -> Path:
    destinations = {"hook": {"webhook": f"http://127.0.0.1:{sink.port}/hook", **(hook or {})}}
    return make_config(
        tmp_path,
        {**destinations, **(more or {})},
        {"echo.yaml": echo_rule(["hook"])},
        retry=retry,
        extra=f"admin_token: {ADMIN}\n",
    )


def delivered_ids(sink: HTTPSink) -> list[str]:
    """The delivery ids of the events that reached /hook, in arrival order, 2xx only."""
    return [json.loads(r.body)["title"].split()[-1] for r in sink.at("/hook")]


def test_an_outage_kills_nothing_probes_once_per_interval_and_drains_in_order(
    tmp_path: Path, sink: HTTPSink
) -> None:
    sink.responses["/hook"] = [503]
    config = hook_config(tmp_path, sink, {"circuit": {"failures": 5, "probe": "5s"}})
    with running(config) as d:
        for n in range(200):
            assert d.post(event(n))[0] == 202
        down_at = time.monotonic()
        wait_for(lambda: "circuit for hook opened" in d.log(), 10, "the circuit to open")
        time.sleep(max(0.0, 60 - (time.monotonic() - down_at)))
        during = sorted(r.at for r in sink.at("/hook"))
        sink.responses["/hook"] = [200]
        assert db_count(tmp_path / "relayhook.db", "deliveries", "state = 'dead'") == 0
        wait_for(
            lambda: len(sink.at("/hook")) >= len(during) + 200, 40, "the backlog after it returns"
        )
        status = d.request("GET", "/api/status", headers={"Authorization": f"Bearer {ADMIN}"})
    assert db_count(tmp_path / "relayhook.db", "deliveries", "state = 'delivered'") == 200
    assert db_count(tmp_path / "relayhook.db", "deliveries", "state = 'dead'") == 0
    # While it was down: the first run of failures (at most failures + concurrency, all
    # within a moment), then the probes, at most one per interval (5 s, 10 s, then
    # max_delay 10 s).
    burst = [t for t in during if t - during[0] < 2.0]
    probes = during[len(burst) :]
    assert len(burst) <= 5 + 8, len(burst)
    gaps = [b - a for a, b in itertools.pairwise([burst[-1], *probes])]
    assert all(gap >= 4.5 for gap in gaps), gaps
    assert 4 <= len(probes) <= 12, probes
    # After it came back: all of them, sent in the order they first fell due (made), give
    # or take the sends in flight at once (8). (The sink may see a few late: HTTP
    # connections do not keep order.)
    after = delivered_ids(sink)[len(during) :]
    assert sorted(after) == sorted(f"d-{n}" for n in range(200))
    sent = db_rows(
        tmp_path / "relayhook.db",
        "SELECT d.title FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
        " WHERE a.outcome = 'delivered' ORDER BY a.started_at",
    )
    order = [int(r["title"].split("d-")[-1]) for r in sent]
    assert all(abs(position - n) <= 8 for position, n in enumerate(order)), str(order)
    (hook,) = status[1]["destinations"]
    assert (hook["destination"], hook["circuit"], hook["queue"]) == ("hook", "closed", 0)
    assert hook["last_success_at"] is not None and "HTTP 503" in hook["last_error"]


def test_an_open_circuit_stays_open_across_a_restart_and_probes_on_schedule(
    tmp_path: Path, sink: HTTPSink
) -> None:
    sink.responses["/hook"] = [503]
    config = hook_config(tmp_path, sink, {"circuit": {"failures": 2, "probe": "4s"}})
    with running(config) as d:
        for n in range(3):
            d.post(event(n))
        wait_for(lambda: "circuit for hook opened" in d.log(), 10, "the circuit to open")
        opened = time.monotonic()
        d.kill()
    before = len(sink.at("/hook"))
    result = run_relayhook("status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "open, probe" in result.stdout.splitlines()[1]
    with running(config) as d:
        assert "circuit for hook is open (since the last run)" in d.log()
        metrics = d.request("GET", "/metrics")[1]
        assert 'relayhook_destination_circuit_open{destination="hook"} 1.0' in metrics
        wait_for(lambda: len(sink.at("/hook")) > before, 15, "the first probe")
        first = time.monotonic()
        assert first - opened >= 3.5  # on the schedule set before the restart, not at once
        time.sleep(5)
        assert len(sink.at("/hook")) == before + 1  # the next one is 8 s after the first
        sink.responses["/hook"] = [200]
        wait_for(
            lambda: db_count(tmp_path / "relayhook.db", "deliveries", "state = 'delivered'") == 3,
            20,
            "all three after the next probe",
        )
    assert db_count(tmp_path / "relayhook.db", "deliveries", "state = 'dead'") == 0


def test_a_dead_delivery_falls_back_to_email_once_naming_why(
    tmp_path: Path, sink: HTTPSink, smtp: SMTPSink
) -> None:
    sink.responses["/hook"] = [(500, {"X-Why": "x"})]
    config = hook_config(
        tmp_path,
        sink,
        {"fallback": "mail"},
        retry="{attempts: 3, first_delay: 100ms, max_delay: 200ms}",
        more={"mail": {"url": smtp.url(), "format": "text"}},
    )
    with running(config) as d:
        d.post(event(1))
        wait_for(lambda: len(smtp.messages) == 1, 20, "the fallback email")
        time.sleep(1.5)  # and no second one
    assert len(sink.at("/hook")) == 3
    (mail,) = smtp.messages
    assert mail["Subject"] == "customer.created d-1"
    text = mail.get_content()
    assert 'payload={"n": 1}' in text
    assert (
        "relayhook: sent here because delivery 1 to hook failed after 3 attempts;"
        ' last error: HTTP 500: {"error": "sink says no"}'
    ) in " ".join(text.split())
    dead, fallback = show(config, 1), show(config, 2)
    assert (dead["state"], dead["fallback_id"], dead["fallback_of"]) == ("dead", 2, None)
    assert (fallback["state"], fallback["destination"], fallback["fallback_of"]) == (
        "delivered",
        "mail",
        1,
    )
    shown = run_relayhook("show", "1", "--config", str(config)).stdout
    assert "fell back to delivery 2" in shown


def test_send_test_says_delivered_or_why_not_and_writes_nothing(
    tmp_path: Path, sink: HTTPSink
) -> None:
    sink.responses["/bad"] = [500]
    config = hook_config(
        tmp_path,
        sink,
        more={
            "bad": {"webhook": f"http://127.0.0.1:{sink.port}/bad"},
            "closed": {"webhook": f"http://127.0.0.1:{free_port()}/x", "timeout": "2s"},
        },
    )
    ok = run_relayhook("send-test", "hook", "--title", "Hi", "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("delivered to hook in ") and ok.stdout.endswith(" ms\n")
    (got,) = sink.at("/hook")
    assert got.json()["title"] == "Hi" and "send-test" in got.json()["body"]
    bad = run_relayhook("send-test", "bad", "--config", str(config))
    assert bad.returncode == 1
    assert bad.stderr.startswith("not delivered to bad (") and bad.stderr.count("\n") == 1
    assert 'HTTP 500: {"error": "sink says no"}' in bad.stderr
    closed = run_relayhook("send-test", "closed", "--config", str(config))
    assert closed.returncode == 1 and closed.stderr.count("\n") == 1
    assert "ClientConnectorError" in closed.stderr or "Cannot connect" in closed.stderr
    unknown = run_relayhook("send-test", "nope", "--config", str(config))
    assert unknown.returncode == 2
    assert "no destination named 'nope' (configured: bad, closed, hook)" in unknown.stderr
    assert not (tmp_path / "relayhook.db").exists()  # nothing written, not even a file

    # The API twin, through the running daemon's own sender; nothing in the log either.
    with running(config) as d:
        auth = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
        status, body = d.request("POST", "/api/destinations/hook/test", b"", auth)
        assert (status, body["delivered"], body["error"]) == (200, True, None)
        status, body = d.request(
            "POST", "/api/destinations/bad/test", b'{"title": "T", "body": "B"}', auth
        )
        assert (status, body["delivered"]) == (502, False)
        assert body["error"] == 'HTTP 500: {"error": "sink says no"}'
        status, body = d.request("POST", "/api/destinations/nope/test", b"", auth)
        assert (status, body) == (404, {"error": "no destination named 'nope'"})
        status, body = d.request("POST", "/api/destinations/hook/test", b"[1]", auth)
        assert (status, body) == (
            400,
            {"error": 'send nothing, or {"title": "...", "body": "..."}'},
        )
    assert db_count(tmp_path / "relayhook.db", "deliveries") == 0
    assert db_count(tmp_path / "relayhook.db", "attempts") == 0


def test_deliveries_for_a_removed_destination_go_dead_after_orphan_after(
    tmp_path: Path, sink: HTTPSink
) -> None:
    sink.responses["/hook"] = [503]
    config = hook_config(
        tmp_path, sink, {"circuit": "off"}, more={"other": {"url": "json://127.0.0.1:9/x"}}
    )
    config.write_text(config.read_text() + "orphan_after: 2s\n")
    with running(config) as d:
        d.post(event(1))
        wait_for(lambda: len(sink.at("/hook")) >= 1, 10, "a first attempt")
        text = config.read_text()
        start, end = text.index("  hook:"), text.index("  other:")
        config.write_text(text[:start] + text[end:])
        rules = tmp_path / "rules" / "echo.yaml"
        rules.write_text(rules.read_text().replace("- hook", "- other"))
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: db_count(tmp_path / "relayhook.db", "deliveries", "state = 'dead'") == 1,
            15,
            "the orphan to go dead",
        )
    (row,) = db_rows(tmp_path / "relayhook.db", "SELECT state, last_error FROM deliveries")
    assert row["last_error"] == "destination 'hook' is no longer in the config"


def test_an_apprise_429_rests_the_destination(tmp_path: Path, sink: HTTPSink) -> None:
    sink.responses["/limited"] = [429]
    config = make_config(
        tmp_path,
        {"limited": {"url": sink.url("/limited")}},
        {"echo.yaml": echo_rule(["limited"])},
        retry="{attempts: 5, first_delay: 100ms, max_delay: 200ms}",
    )
    with running(config) as d:
        d.post(event(1))
        d.post(event(2))
        wait_for(lambda: len(sink.at("/limited")) >= 1, 10, "the first send")
        time.sleep(2.0)
    # Both went at once; without the rest, five attempts each would have gone by now.
    assert len(sink.at("/limited")) == 2
    rows = db_rows(
        tmp_path / "relayhook.db",
        "SELECT state, attempts, next_attempt_at, last_error FROM deliveries",
    )
    assert [(r["state"], r["attempts"]) for r in rows] == [("retrying", 1)] * 2
    assert all("error=429" in r["last_error"] for r in rows)
    assert all(r["next_attempt_at"] - time.time() > 25 for r in rows)


@pytest.mark.parametrize(
    ("hook", "more", "message"),
    [
        (
            {"fallback": "mial"},
            {"mail": {"url": "json://127.0.0.1:9/m"}},
            "destination 'hook': fallback: no destination named 'mial' (did you mean 'mail'?)",
        ),
        (
            {"fallback": "mail"},
            {"mail": {"url": "json://127.0.0.1:9/m", "fallback": "hook"}},
            "destination 'hook': fallback: a cycle (hook -> mail -> hook); a delivery falls"
            " back one level only, so one of them must go",
        ),
        (
            {"fallback": "hook"},
            {},
            "destination 'hook': fallback: a cycle (hook -> hook)",
        ),
        (
            {"circuit": {"failures": 0}},
            {},
            "destination 'hook': circuit: failures: must be at least 1, got 0",
        ),
        (
            {"circuit": {"probe": "soon"}},
            {},
            "destination 'hook': circuit: probe: expected a duration",
        ),
        (
            {"circuit": {"failure": 3}},
            {},
            "unknown key 'failure' in destination 'hook': circuit (did you mean 'failures'?)",
        ),
    ],
)
def test_wrong_fallback_and_circuit_are_check_errors(
    tmp_path: Path, sink: HTTPSink, hook: dict[str, Any], more: dict[str, Any], message: str
) -> None:
    config = hook_config(tmp_path, sink, hook, more=more)
    result = run_relayhook("check", "--config", str(config))
    assert result.returncode == 1
    line = next((x for x in result.stderr.splitlines() if message in x), None)
    assert line is not None, result.stderr
    assert line.startswith(f"{config}:") and line.split(":")[1].isdigit(), line
