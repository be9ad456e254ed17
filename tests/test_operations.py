"""Operations against real processes: reload, drain, sd_notify, watchdog, metrics, logs, prune."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, run_relayhook
from support import Daemon, HTTPSink, db_count, running, wait_for
from test_daemon import echo_rule, event, make_config

ADMIN = "admin-token-for-ops-tests"


def metric(daemon: Daemon, name: str) -> float | None:
    status, text = daemon.request("GET", "/metrics")
    assert status == 200
    for line in str(text).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def ops_config(tmp_path: Path, sink: HTTPSink, extra: str = "") -> Path:
    return make_config(
        tmp_path,
        {"hook": {"url": sink.url("/a")}},
        {"a.yaml": echo_rule(["hook"], event="first.*")},
        extra=f"admin_token: {ADMIN}\n" + extra,
    )


def test_sighup_with_broken_rules_keeps_the_old_config(tmp_path: Path, sink: HTTPSink) -> None:
    config = ops_config(tmp_path, sink)
    rules = tmp_path / "rules"
    with running(config) as d:
        assert metric(d, "relayhook_config_last_reload_successful") == 1
        (rules / "b.yaml").write_text(
            "event: second.*\nrules:\n  - name: b\n    to: [hook]\n    body: '{{ payload.n '\n"
        )
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: metric(d, "relayhook_config_last_reload_successful") == 0, what="failure")
        assert d.proc.poll() is None
        status, info = d.request("GET", "/api/status", headers={"Authorization": f"Bearer {ADMIN}"})
        assert status == 200 and info["last_reload"]["ok"] is False
        assert info["last_reload"]["problems"] == [
            f"{rules}/b.yaml:5: rule 'b': body: template syntax error: unexpected end of template,"
            " expected 'end of print statement'."
        ]
        assert "reload failed, keeping the running config" in d.log()
        # The old rules still route; the broken file's rule does not exist yet.
        d.post(event(1, "first.x"))
        d.post(event(2, "second.x"))
        wait_for(lambda: len(sink.at("/a")) == 1, what="old rule delivery")
        # Fixed, and reloaded through the API this time.
        (rules / "b.yaml").write_text(
            yaml.safe_dump(
                echo_rule(["hook"], event="second.*")
                | {"rules": [{"name": "b", "to": ["hook"], "body": "b {{ payload.n }}"}]}
            )
        )
        status, answer = d.request(
            "POST", "/api/reload", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert (status, answer["reloaded"]) == (200, True)
        assert metric(d, "relayhook_config_last_reload_successful") == 1
        d.post(event(3, "second.x"))
        wait_for(lambda: len(sink.at("/a")) == 2, what="new rule delivery")
        assert sink.at("/a")[-1].json()["message"] == "b 3"


def test_steady_load_during_ten_reloads(tmp_path: Path, sink: HTTPSink) -> None:
    config = ops_config(tmp_path, sink)
    failures: list[Any] = []
    sent = 0
    stop = threading.Event()
    with running(config) as d:

        def load() -> None:
            nonlocal sent
            while not stop.is_set():
                try:
                    status, body = d.post(event(sent, "first.load"))
                except OSError as e:
                    failures.append(repr(e))
                    continue
                if status != 202:
                    failures.append((status, body))
                sent += 1

        worker = threading.Thread(target=load)
        worker.start()
        assert d.proc is not None
        for n in range(10):
            before = d.request("GET", "/api/status", headers={"Authorization": f"Bearer {ADMIN}"})[
                1
            ]
            d.proc.send_signal(signal.SIGHUP)
            wait_for(
                lambda b=before: (
                    d.request("GET", "/api/status", headers={"Authorization": f"Bearer {ADMIN}"})[
                        1
                    ]["last_reload"]["at"]
                    > b["last_reload"]["at"]
                ),
                what=f"reload {n}",
            )
            # Requests keep flowing between reloads, not only around them.
            mark = sent
            wait_for(lambda m=mark: sent >= m + 5, what="requests after the reload")
        stop.set()
        worker.join()
        assert failures == []
        assert sent > 50
        db = tmp_path / "relayhook.db"
        wait_for(
            lambda: db_count(db, "deliveries", "state = 'delivered'") == sent, 60, "deliveries"
        )


def test_sigterm_during_a_burst_drains_and_loses_nothing(tmp_path: Path) -> None:
    slow = HTTPSink()
    slow.responses["/s"] = ["hang"]
    slow.hang_seconds = 0.5
    slow.start()
    config = make_config(
        tmp_path,
        {"hook": {"url": slow.url("/s"), "concurrency": 4}},
        {"a.yaml": echo_rule(["hook"])},
        extra="shutdown_timeout: 3s\n",
    )
    acked: set[str] = set()
    try:
        d = Daemon(config).start()
        for n in range(200):
            status, _ = d.post(event(n))
            assert status == 202
            acked.add(f"d-{n}")
        started = time.monotonic()
        assert d.stop() == 0
        assert time.monotonic() - started < 3 + 2
        assert "SIGTERM received: shutting down" in d.log()
        slow.responses["/s"] = [200]
        with running(config):
            wait_for(
                lambda: {r.json()["title"].split()[-1] for r in slow.at("/s")} >= acked,
                60,
                "every acknowledged event",
            )
    finally:
        slow.stop()


def test_notify_protocol_and_watchdog(tmp_path: Path, sink: HTTPSink) -> None:
    # A rule whose template burns CPU renders off the event loop: the watchdog keeps
    # pinging. A process that is stopped (as a stuck loop would be) stops pinging.
    rules = {
        "a.yaml": echo_rule(["hook"], event="first.*"),
        "b.yaml": {
            "event": "stall",
            "rules": [
                {
                    "name": "stall",
                    "to": ["hook"],
                    "body": "{% set ns = namespace(n=0) %}{% for i in range(100000) %}"
                    "{% for j in range(8) %}{% set ns.n = ns.n + j %}{% endfor %}{% endfor %}{{ ns.n }}",
                }
            ],
        },
    }
    config = make_config(tmp_path, {"hook": {"url": sink.url("/a")}}, rules)
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(0.05)
    messages: list[tuple[float, str]] = []

    def drain(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                messages.append((time.monotonic(), server.recv(4096).decode()))

    d = Daemon(config, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}).start()
    try:
        drain(1.0)
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        drain(1.0)
        pings_before = [t for t, m in messages if m == "WATCHDOG=1"]
        assert len(pings_before) >= 5
        d.post(event(1, "stall"))
        render_start = time.monotonic()
        drain(3.0)
        d.proc.send_signal(signal.SIGSTOP)
        stall_start = time.monotonic()
        time.sleep(1.5)
        d.proc.send_signal(signal.SIGCONT)
        drain(1.0)
        d.stop()
        drain(0.5)
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
        server.close()
    states = [m.splitlines()[0] for _, m in messages if m != "WATCHDOG=1"]
    assert states == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], states
    reloading = next(m for _, m in messages if m.startswith("RELOADING=1"))
    assert re.search(r"^MONOTONIC_USEC=\d+$", reloading, re.M)
    rendering = [t for t, m in messages if m == "WATCHDOG=1" and render_start < t < stall_start]
    gaps = [b - a for a, b in zip([render_start, *rendering], rendering, strict=False)]
    assert len(rendering) >= 10 and max(gaps) < 1.0, gaps  # the template holds no loop
    # The datagrams sent before the stop may be read during it: judge by what came after.
    pings = [t for t, m in messages if m == "WATCHDOG=1" and t > stall_start + 0.2]
    assert pings and pings[0] > stall_start + 1.4, pings  # silent while stopped
    assert pings[-1] > pings[0] + 0.3  # and pinging again after


def test_metrics_and_json_logs(tmp_path: Path, sink: HTTPSink) -> None:
    sink.responses["/a"] = [500, 200]
    config = ops_config(tmp_path, sink)
    with running(config) as d:
        d.post(event(1, "first.a"))
        d.post(event(1, "first.a"))
        d.post(event(2, "nothing.here"))
        d.post(event(3, "first.a"), token="nope")
        db = tmp_path / "relayhook.db"
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 1, what="delivery")
        wait_for(lambda: db_count(db, "events", "state = 'unrouted'") == 1, what="unrouted")
        status, text = d.request("GET", "/metrics")
    assert status == 200
    lines = str(text).splitlines()
    for expected in [
        'relayhook_events_received_total{event_type="first.a",outcome="accepted",source="openvolt"} 1.0',
        'relayhook_events_received_total{event_type="first.a",outcome="duplicate",source="openvolt"} 1.0',
        'relayhook_events_received_total{event_type="",outcome="unauthorized",source="openvolt"} 1.0',
        'relayhook_events_routed_total{outcome="unrouted"} 1.0',
        'relayhook_notification_attempts_total{destination="hook",outcome="failed"} 1.0',
        'relayhook_notification_attempts_total{destination="hook",outcome="delivered"} 1.0',
        'relayhook_notifications_total{destination="hook",outcome="delivered"} 1.0',
        'relayhook_notification_latency_seconds_count{destination="hook"} 1.0',
        'relayhook_deliveries{state="pending"} 0.0',
        "relayhook_oldest_pending_delivery_age_seconds 0.0",
        "relayhook_config_last_reload_successful 1.0",
    ]:
        assert expected in lines, expected
    records = [json.loads(line) for line in d.log().splitlines() if line.startswith("{")]
    assert records and len(records) == len([x for x in d.log().splitlines() if x.strip()])
    retry = next(r for r in records if "attempt 1 retrying" in r["msg"])
    assert retry["delivery_id"] == 1 and retry["event_id"] == 1 and retry["level"] == "warning"


def delivered_and_stuck(tmp_path: Path, sink: HTTPSink, extra: str = "") -> Path:
    """first.* events are delivered; second.* go to a port that never listens, and wait."""
    down = HTTPSink()  # never started: its deliveries stay retrying
    return make_config(
        tmp_path,
        {"hook": {"url": sink.url("/a")}, "down": {"url": down.url("/x")}},
        {
            "a.yaml": echo_rule(["hook"], event="first.*"),
            "b.yaml": {
                "event": "second.*",
                "rules": [{"name": "down", "to": ["down"], "body": "{{ payload.n }}"}],
            },
        },
        retry="{attempts: 100, first_delay: 1h, max_delay: 1h}",
        extra=extra,
    )


def test_prune_keeps_pending_and_shrinks_the_file(tmp_path: Path, sink: HTTPSink) -> None:
    config = delivered_and_stuck(tmp_path, sink)
    db = tmp_path / "relayhook.db"
    pad = "x" * 20_000
    with running(config) as d:
        for n in range(200):  # 4 MB of delivered events (was 600: as much proof, 3x the wait)
            d.post({"event_id": "first.a", "delivery_id": f"f{n}", "payload": {"n": n, "pad": pad}})
        for n in range(5):
            d.post({"event_id": "second.a", "delivery_id": f"s{n}", "payload": {"n": n}})
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 200, 60, "deliveries")
        wait_for(lambda: db_count(db, "deliveries", "state = 'retrying'") == 5, 30, "retrying")
    before = db.stat().st_size
    recent = run_relayhook("prune", "--older-than", "1h", "--config", str(config))
    assert recent.returncode == 0 and recent.stdout.startswith("pruned 0 events")
    result = run_relayhook("prune", "--older-than", "0s", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pruned 200 events, 200 deliveries, 200 attempts;")
    assert db_count(db, "events") == 5
    assert db_count(db, "deliveries", "state = 'retrying'") == 5
    assert db.stat().st_size < before / 4, (before, db.stat().st_size)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    unit = (REPO / "systemd" / "relayhook.service").read_text()
    exe = shutil.which("relayhook") or str(Path(os.sys.executable).parent / "relayhook")
    path = tmp_path / "relayhook.service"
    path.write_text(unit.replace("/usr/local/bin/relayhook", exe))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True
    )
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(path)], capture_output=True, text=True
    )
    score = re.search(r"Overall exposure level for relayhook.service: ([\d.]+)", security.stdout)
    assert score, security.stdout + security.stderr
    assert float(score.group(1)) <= 2.0


def test_retention_prunes_periodically(tmp_path: Path, sink: HTTPSink) -> None:
    config = delivered_and_stuck(tmp_path, sink, extra="retention: 2s\n")
    db = tmp_path / "relayhook.db"
    with running(config) as d:
        for n in range(10):
            d.post(event(n, "first.a"))
        d.post(event(99, "second.a"))
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 10, what="delivered")
        wait_for(lambda: db_count(db, "events") == 1, 15, "the periodic prune")
        assert db_count(db, "deliveries", "state = 'retrying'") == 1
        # Under load the ten may age past the cutoff in different rounds: add them up. The
        # line is logged once the file has shrunk too, a moment after the rows are gone.

        def pruned() -> list[int]:
            rounds = re.findall(r"pruned (\d+) events, (\d+) deliveries, (\d+) attempts", d.log())
            return [sum(int(r[i]) for r in rounds) for i in range(3)]

        wait_for(lambda: pruned() == [10, 10, 10], 10, "the prune's log line")


def test_deliveries_for_a_removed_destination_wait_for_it(tmp_path: Path, sink: HTTPSink) -> None:
    pager = HTTPSink()  # not listening yet: its deliveries retry
    destinations = {"hook": {"url": sink.url("/a")}, "pager": {"url": pager.url("/p")}}
    config = make_config(
        tmp_path,
        destinations,
        {"a.yaml": echo_rule(["hook", "pager"])},
        retry="{attempts: 100, first_delay: 200ms, max_delay: 500ms}",
    )
    db = tmp_path / "relayhook.db"
    with running(config) as d:
        assert d.proc is not None
        for n in range(3):
            assert d.post(event(n))[0] == 202
        wait_for(lambda: db_count(db, "deliveries", "state = 'retrying'") == 3, what="retrying")
        # Renamed, as far as relayhook can tell: pager is gone from the config.
        renamed = {"hook": destinations["hook"], "pager2": destinations["pager"]}
        make_config(tmp_path, renamed, {"a.yaml": echo_rule(["hook", "pager2"])})
        d.proc.send_signal(signal.SIGHUP)
        warning = (
            "3 deliveries wait for destination 'pager', which the config no longer has;"
            " they are kept until it is configured again"
        )
        wait_for(lambda: warning in d.log(), what="the warning")
        assert db_count(db, "deliveries", "state = 'retrying'") == 3
        pager.start()
        try:
            make_config(tmp_path, destinations, {"a.yaml": echo_rule(["hook", "pager"])})
            d.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: len(pager.at("/p")) == 3, what="the kept deliveries")
        finally:
            pager.stop()
    assert len(sink.at("/a")) == 3
