"""Apprise destinations with `processes: N`: sends from worker processes of a real daemon."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from support import Daemon, HTTPSink, db_count, db_rows, running, wait_for
from test_daemon import echo_rule, event, make_config


def chat(
    tmp_path: Path,
    sink: HTTPSink,
    script: list[object],
    hang: float,
    extra: str = "",
    **dest: object,
) -> tuple[Path, Path]:
    """A config with one apprise destination, chat, whose sink answers by script."""
    sink.responses["/w"] = script
    sink.hang_seconds = hang
    destination = {"url": sink.url("/w"), **dest}
    rules = {"all.yaml": echo_rule(["chat"])}
    return make_config(
        tmp_path, {"chat": destination}, rules, extra=extra
    ), tmp_path / "relayhook.db"


def workers_of(pid: int) -> list[int]:
    """Pids of the worker processes whose parent is pid."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"relayhook.deliver.senders.apprise_worker" in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_every_event_arrives_once_through_two_workers(tmp_path: Path, sink: HTTPSink) -> None:
    url = sink.url("/w").replace("json://", "json://user:hunter2-secret@")
    config = make_config(
        tmp_path,
        {"chat": {"url": url, "processes": 2, "concurrency": 6}},
        {"all.yaml": echo_rule(["chat"])},
    )
    with running(config) as daemon:
        for n in range(300):
            assert daemon.post(event(n))[0] == 202
        wait_for(lambda: len(sink.at("/w")) >= 300, 30, "300 deliveries")
        assert daemon.proc is not None
        pids = workers_of(daemon.proc.pid)
        assert len(pids) == 2
        for pid in pids:  # the URL's password reaches the worker by pipe, not by argv
            assert b"hunter2" not in (Path("/proc") / str(pid) / "cmdline").read_bytes()
        time.sleep(0.3)
    titles = sorted(r.json()["title"] for r in sink.at("/w"))
    assert titles == sorted(f"customer.created d-{n}" for n in range(300))
    db = tmp_path / "relayhook.db"
    assert db_count(db, "deliveries", "state = 'delivered'") == 300
    assert db_count(db, "attempts") == 300


def test_a_hung_send_times_out_and_its_worker_is_replaced(tmp_path: Path, sink: HTTPSink) -> None:
    config, db = chat(tmp_path, sink, ["hang", 200], 20, processes=1, concurrency=2, timeout="1s")
    with running(config) as daemon:
        assert daemon.proc is not None
        assert daemon.post(event(0))[0] == 202
        wait_for(lambda: len(sink.at("/w")) == 1, 10, "the first send to hang")
        (first,) = workers_of(daemon.proc.pid)
        start = time.monotonic()
        for n in range(1, 6):
            assert daemon.post(event(n))[0] == 202
        # The worker is stuck for 20 s; a new one sends the rest, and the timed-out
        # delivery is retried and arrives too.
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 6, 15, "all six")
        assert time.monotonic() - start < 10
        assert not alive(first)
        assert len(workers_of(daemon.proc.pid)) == 1
    (timeout,) = db_rows(db, "SELECT * FROM attempts WHERE outcome = 'timeout'")
    assert timeout["error"] == "timeout (may have been delivered)"
    assert 900 <= timeout["duration_ms"] < 3000
    assert db_count(db, "attempts") == 7  # one timeout, six delivered


def test_a_worker_that_dies_is_replaced(tmp_path: Path, sink: HTTPSink) -> None:
    config, db = chat(tmp_path, sink, ["hang", 200], 3, processes=1, timeout="10s")
    with running(config) as daemon:
        assert daemon.proc is not None
        assert daemon.post(event(0))[0] == 202
        wait_for(lambda: len(sink.at("/w")) == 1, 10, "the first send")
        (worker,) = workers_of(daemon.proc.pid)
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: db_count(db, "attempts") == 1, 10, "the attempt to be recorded")
        (attempt,) = db_rows(db, "SELECT * FROM attempts")
        assert attempt["outcome"] == "failed"
        assert attempt["error"] == (
            "the worker process exited (code -9) during the send (may have been delivered)"
        )
        for n in range(1, 4):
            assert daemon.post(event(n))[0] == 202
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 4, 15, "the rest")
        assert len(workers_of(daemon.proc.pid)) == 1
    assert "worker process exited (code -9); starting another" in daemon.log()


def test_workers_outlive_sigterm_for_the_drain_and_not_the_daemon(
    tmp_path: Path, sink: HTTPSink
) -> None:
    config, db = chat(
        tmp_path,
        sink,
        ["hang", 200],
        2,
        processes=2,
        timeout="10s",
        extra="shutdown_timeout: 10s\n",
    )
    daemon = Daemon(config).start()
    assert daemon.proc is not None
    assert daemon.post(event(0))[0] == 202
    wait_for(lambda: len(sink.at("/w")) == 1, 10, "a send in flight")
    pids = workers_of(daemon.proc.pid)
    # systemd signals the whole unit: the workers ignore it and finish the send in flight.
    for pid in [daemon.proc.pid, *pids]:
        os.kill(pid, signal.SIGTERM)
    assert daemon.proc.wait(15) == 0
    (attempt,) = db_rows(db, "SELECT * FROM attempts")  # the one send, not a retry
    assert attempt["outcome"] == "delivered"
    assert attempt["duration_ms"] >= 1900
    wait_for(lambda: not any(alive(p) for p in pids), 10, "the workers to leave")

    # SIGKILL of the daemon closes the workers' stdin: they leave on their own.
    with running(config) as daemon:
        assert daemon.proc is not None
        assert daemon.post(event(1))[0] == 202
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 2, 10, "delivery")
        pids = workers_of(daemon.proc.pid)
        assert pids
        daemon.kill()
    wait_for(lambda: not any(alive(p) for p in pids), 10, "orphaned workers to leave")


def test_reload_keeps_the_workers_of_an_unchanged_destination(
    tmp_path: Path, sink: HTTPSink
) -> None:
    destinations = {
        "chat": {"url": sink.url("/chat"), "processes": 1},
        "ops": {"url": sink.url("/ops"), "processes": 1},
    }
    config = make_config(tmp_path, destinations, {"all.yaml": echo_rule(["chat", "ops"])})
    db = tmp_path / "relayhook.db"
    with running(config) as daemon:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        wait_for(lambda: len(workers_of(pid)) == 2, 10, "workers started ahead of any send")
        before = set(workers_of(pid))
        destinations["ops"]["timeout"] = "5s"  # only ops changes
        make_config(tmp_path, destinations, {"all.yaml": echo_rule(["chat", "ops"])})
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: len(before & set(workers_of(pid))) == 1, 10, "ops's worker to go")
        wait_for(lambda: len(workers_of(pid)) == 2, 10, "a worker for the new ops")
        assert daemon.post(event(1))[0] == 202
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 2, 10, "both")
        assert len(before & set(workers_of(pid))) == 1
    assert len(sink.at("/chat")) == len(sink.at("/ops")) == 1


def test_two_idle_workers_take_one_send_each(tmp_path: Path, sink: HTTPSink) -> None:
    config, db = chat(tmp_path, sink, ["hang", "hang", 200], 2, processes=2, concurrency=4)
    with running(config) as daemon:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        wait_for(lambda: len(workers_of(pid)) == 2, 10, "both workers")
        time.sleep(2)  # both have imported apprise and said ready (~0.3 s each, idle)
        for n in range(2):
            assert daemon.post(event(n))[0] == 202
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 2, 10, "both")
    first, second = sink.at("/w")
    # Side by side, not one queued behind the other's 2 s.
    assert second.at - first.at < 1.0
    durations = [r["duration_ms"] for r in db_rows(db, "SELECT duration_ms FROM attempts")]
    assert all(1900 <= d < 3000 for d in durations), durations


def test_reloads_under_load_replace_workers_without_losing_sends(
    tmp_path: Path, sink: HTTPSink
) -> None:
    config, db = chat(tmp_path, sink, [200], 0, processes=2, concurrency=8)
    with running(config) as daemon:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        sent = 0
        seen: set[int] = set()
        for n in range(6):
            for _ in range(50):
                assert daemon.post(event(sent))[0] == 202
                sent += 1
            seen.update(workers_of(pid))
            # A changed timeout is a changed destination: new workers, the old ones retire.
            chat(tmp_path, sink, [200], 0, processes=2, concurrency=8, timeout=f"{5 + n % 2}s")
            os.kill(pid, signal.SIGHUP)
            time.sleep(0.3)
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == sent, 30, "all")
        wait_for(lambda: len(workers_of(pid)) == 2, 10, "two workers in the end")
        seen.update(workers_of(pid))
        assert len(seen) > 4  # workers were replaced along the way...
        retired = seen - set(workers_of(pid))
        wait_for(lambda: not any(alive(p) for p in retired), 10, "retired workers to leave")
    assert len(sink.at("/w")) == sent == 300
    assert db_count(db, "attempts") == 300
