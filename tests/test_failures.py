"""When a destination fails: the circuit holds an outage without killing deliveries, a
dead delivery falls back to email, send-test tries a destination by hand, status shows
how each stands. The circuit's, the rest's and the orphans' timing run in process on a
clock moved by hand (tests/inproc.py: the real daemon, store, app and senders, against a
real sink and SMTP server); a 12-s outage on a real daemon keeps the real timers honest."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import run_relayhook
from inproc import FakeClock, relay, run
from support import HTTPSink, SMTPSink, db_count, db_rows, free_port, running, wait_for
from test_daemon import echo_rule, event, make_config

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

    async def main() -> None:
        async with relay(config, sink) as r:
            down_at = r.clock.now
            for n in range(200):  # a millisecond apart: the drain's order is theirs
                assert (await r.post(event(n)))[0] == 202
                r.clock.advance(0.001)
            await r.advance(0.8)
            for _ in range(24):  # a minute down, looked at every 2.5 s
                await r.advance(2.5)
                assert r.count("deliveries", "state = 'dead'") == 0
            during = [x.at - down_at for x in sink.at("/hook")]
            sink.responses["/hook"] = [200]
            await r.advance(5)  # the next probe goes through and the backlog drains
            assert r.count("deliveries", "state = 'delivered'") == 200
            assert r.count("deliveries", "state = 'dead'") == 0
            status = await r.request(
                "GET", "/api/status", headers={"Authorization": f"Bearer {ADMIN}"}
            )
        # While it was down: the first run of failures (at most failures + concurrency, all
        # while they came in), then one probe per interval: 5 s, 10 s, then max_delay 10 s
        # (seen at the first look after each was due: the looks are at 1 s + 2.5 s * n).
        burst = [t for t in during if t < 0.2]
        assert 5 <= len(burst) <= 5 + 8, during
        probes = during[len(burst) :]
        assert probes == pytest.approx([6.0, 16.0, 26.0, 36.0, 46.0, 56.0], abs=0.01), during
        assert probes[0] - burst[-1] >= 5.0
        # After it came back: all of them. (In the order they first fell due: the clock
        # stands still while they drain here, so that order is checked on the real clock
        # below, and exactly in test_circuit_stage.)
        after = delivered_ids(sink)[len(during) :]
        assert sorted(after) == sorted(f"d-{n}" for n in range(200))
        (hook,) = status[1]["destinations"]
        assert (hook["destination"], hook["circuit"], hook["queue"]) == ("hook", "closed", 0)
        assert hook["last_success_at"] is not None and "HTTP 503" in hook["last_error"]

    run(main)


def test_a_12s_outage_on_a_real_daemon_kills_nothing(tmp_path: Path, sink: HTTPSink) -> None:
    """The outage above on the real clock, shortened, with a SIGKILL in it: without the
    circuit, three attempts 100 ms apart would have killed them all within a second; the
    open circuit is on disk by the time it says so, and the restarted daemon probes on
    its schedule (exactly so: the in-process restart test above)."""
    sink.responses["/hook"] = [503]
    config = hook_config(tmp_path, sink, {"circuit": {"failures": 5, "probe": "2s"}})
    db = tmp_path / "relayhook.db"
    with running(config) as d:
        for n in range(50):
            assert d.post(event(n))[0] == 202
        down_at = time.monotonic()
        wait_for(lambda: "circuit for hook opened" in d.log(), 10, "the circuit to open")
        d.kill()
    with running(config) as d:
        assert "circuit for hook is open (since the last run)" in d.log()
        time.sleep(max(0.0, 12 - (time.monotonic() - down_at)))
        during = sorted(x.at for x in sink.at("/hook"))
        assert db_count(db, "deliveries", "state = 'dead'") == 0
        sink.responses["/hook"] = [200]
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 50, 30, "all")
    assert db_count(db, "deliveries", "state = 'dead'") == 0
    burst = [t for t in during if t - during[0] < 1.0]
    probes = during[len(burst) :]
    assert len(burst) <= 5 + 8 and 1 <= len(probes) <= 6, (burst, probes)
    gaps = [b - a for a, b in itertools.pairwise([burst[-1], *probes])]
    assert all(gap >= 1.5 for gap in gaps), gaps  # never before the probe interval
    # The backlog went in the order it first fell due (made), give or take the sends in
    # flight at once (8).
    sent = db_rows(
        db,
        "SELECT d.title FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
        " WHERE a.outcome = 'delivered' ORDER BY a.started_at",
    )
    order = [int(r["title"].split("d-")[-1]) for r in sent]
    assert all(abs(position - n) <= 8 for position, n in enumerate(order)), str(order)


def test_an_open_circuit_stays_open_across_a_restart_and_probes_on_schedule(
    tmp_path: Path, sink: HTTPSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.responses["/hook"] = [503]
    config = hook_config(tmp_path, sink, {"circuit": {"failures": 2, "probe": "4s"}})
    clock = FakeClock()
    opened = clock.now

    async def first() -> None:
        async with relay(config, sink, clock=clock) as r:
            for n in range(3):
                await r.post(event(n))
            await r.settle()
            assert "circuit for hook opened" in caplog.text
            await r.advance(1)

    async def second() -> None:
        async with relay(config, sink, clock=clock) as r:
            assert "circuit for hook is open (since the last run)" in caplog.text
            assert 'relayhook_destination_circuit_open{destination="hook"} 1.0' in (
                await r.metrics()
            )
            await r.advance(2.9)
            assert len(sink.at("/hook")) == before  # not at once on start
            await r.advance(0.1)
            assert [x.at - opened for x in sink.at("/hook")][before:] == [4.0]  # as set before
            await r.advance(7.9)
            assert len(sink.at("/hook")) == before + 1  # the next one is 8 s after the first
            sink.responses["/hook"] = [200]
            await r.advance(0.1)
            assert r.count("deliveries", "state = 'delivered'") == 3
            assert r.count("deliveries", "state = 'dead'") == 0

    run(first)
    before = len(sink.at("/hook"))
    result = run_relayhook("status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "open, probe" in result.stdout.splitlines()[1]
    run(second)


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
    auth = {"Authorization": f"Bearer {ADMIN}"}

    async def main() -> None:
        async with relay(config, sink) as r:
            await r.post(event(1))
            await r.settle()
            for attempts in (1, 2):  # the retries: 100-200 ms, then 200 ms (max_delay)
                assert (len(sink.at("/hook")), smtp.messages) == (attempts, [])
                await r.advance(0.2)
            await r.until(lambda: len(smtp.messages) == 1, "the fallback email")
            await r.advance(60)
            assert len(smtp.messages) == 1  # and no second one
            assert len(sink.at("/hook")) == 3
            dead = (await r.request("GET", "/api/deliveries/1", headers=auth))[1]
            fallback = (await r.request("GET", "/api/deliveries/2", headers=auth))[1]
        assert (dead["state"], dead["fallback_id"], dead["fallback_of"]) == ("dead", 2, None)
        assert (fallback["state"], fallback["destination"], fallback["fallback_of"]) == (
            "delivered",
            "mail",
            1,
        )

    run(main)
    (mail,) = smtp.messages
    assert mail["Subject"] == "customer.created d-1"
    text = mail.get_content()
    assert 'payload={"n": 1}' in text
    assert (
        "relayhook: sent here because delivery 1 to hook failed after 3 attempts;"
        ' last error: HTTP 500: {"error": "sink says no"}'
    ) in " ".join(text.split())
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

    async def main() -> None:
        async with relay(config, sink) as r:
            await r.post(event(1))
            await r.settle()
            assert len(sink.at("/hook")) == 1
            text = config.read_text()
            start, end = text.index("  hook:"), text.index("  other:")
            config.write_text(text[:start] + text[end:])
            rules = tmp_path / "rules" / "echo.yaml"
            rules.write_text(rules.read_text().replace("- hook", "- other"))
            assert await r.daemon.reload() == (True, [])
            await r.advance(1.9)
            # The orphans' look runs on its own beat (every orphan_after / 4, real time).
            await asyncio.sleep(0.6)
            assert r.count("deliveries", "state = 'dead'") == 0  # not before orphan_after
            await r.advance(0.2)
            await r.until(lambda: r.count("deliveries", "state = 'dead'") == 1, "the orphan")
            (row,) = r.rows("SELECT state, last_error FROM deliveries")
        assert row["last_error"] == "destination 'hook' is no longer in the config"

    run(main)


def test_an_apprise_429_rests_the_destination(tmp_path: Path, sink: HTTPSink) -> None:
    sink.responses["/limited"] = [429]
    # Two rules, so one event makes both deliveries at once: both are sent in one round
    # (two events could be routed apart, the second after the rest began).
    rules = echo_rule(["limited"])
    rules["rules"].append({**rules["rules"][0], "name": "echo-again"})
    config = make_config(
        tmp_path,
        {"limited": {"url": sink.url("/limited")}},
        {"echo.yaml": rules},
        retry="{attempts: 5, first_delay: 100ms, max_delay: 200ms}",
    )

    async def main() -> None:
        async with relay(config, sink) as r:
            await r.post(event(1))
            await r.advance(0.5)
            await r.advance(20)
            # Both went at once; without the rest, five attempts each would have gone by now.
            assert len(sink.at("/limited")) == 2
            rows = r.rows("SELECT state, attempts, next_attempt_at, last_error FROM deliveries")
            assert [(x["state"], x["attempts"]) for x in rows] == [("retrying", 1)] * 2
            assert all("error=429" in x["last_error"] for x in rows)
            assert all(x["next_attempt_at"] - r.clock.now > 5 for x in rows)  # a 30-s rest

    run(main)


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
