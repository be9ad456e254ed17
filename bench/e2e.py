"""End to end, receive -> delivered at a local sink.

1. Through the native webhook destination, against Alertmanager relaying alerts to a
   webhook receiver: wrk posts unique events for --seconds, and the rate is what was
   accepted over the time from the first post to the last delivery.
2. Through an apprise json:// destination, from worker processes and from threads,
   against a bare loop of apprise notify() calls to the same sink (sequential, the way a
   script would use apprise).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

import apprise
from common import (
    alertmanager,
    free_port,
    relayhook,
    relayhook_config,
    report,
    sink,
    tempdir,
    wait_count,
    wrk,
)


def relay_run(
    root: Path, destination: dict[str, object], seconds: float, sink_port: int, connections: int
) -> tuple[float, int]:
    config = relayhook_config(
        root,
        {"out": destination},
        [
            {
                "name": "out",
                "to": ["out"],
                "title": "{{ event_type }}",
                "body": "meter {{ payload[0].meter_id }}",
            }
        ],
        extra={"concurrency": {"total": 128, "per_destination": 64}},
    )
    port = free_port()
    with relayhook(config, port):
        start = time.time()
        run = wrk(
            f"http://127.0.0.1:{port}/hooks/bench?token=bench-token",
            "relayhook.lua",
            seconds,
            connections=connections,
        )
        assert not run["non2xx"] and not run["socket_errors"], run
        time.sleep(0.5)  # requests wrk gave up on at the end may still have been accepted
        with sqlite3.connect(root / "relayhook.db") as db:
            accepted = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        stats = wait_count(sink_port, accepted, timeout=600)
        with sqlite3.connect(root / "relayhook.db") as db:
            delivered = db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'"
            ).fetchone()[0]
    for path in root.glob("relayhook.db*"):
        path.unlink()
    elapsed = stats["last"] - start
    assert stats["count"] == accepted == delivered, (stats, accepted, delivered)
    return accepted / elapsed, accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--apprise-seconds", type=float, default=10)
    args = parser.parse_args()
    rows = []
    with tempdir() as tmp:
        root = Path(tmp)
        # 1. native webhook vs Alertmanager
        with sink() as sink_port:
            ours, n_ours = relay_run(
                root,
                {"webhook": f"http://127.0.0.1:{sink_port}/in", "concurrency": 64},
                args.seconds,
                sink_port,
                32,
            )
        with sink() as sink_port, alertmanager(root, f"http://127.0.0.1:{sink_port}/am") as am_port:
            start = time.time()
            run = wrk(f"http://127.0.0.1:{am_port}", "alertmanager.lua", args.seconds)
            accepted = int(run["requests"] - run["non2xx"])
            stats = wait_count(sink_port, accepted, timeout=600)
            am_rate = stats["count"] / (stats["last"] - start)
        rows.append(
            (
                f"webhook destination, {n_ours} events over {args.seconds:g}s load, vs Alertmanager",
                ours,
                am_rate,
                "ev/s",
            )
        )
        # 2. apprise json:// vs a bare apprise loop
        with sink() as sink_port:
            notifier = apprise.Apprise()
            notifier.add(f"json://127.0.0.1:{sink_port}/bare")
            n, start = 0, time.time()
            while time.time() - start < args.apprise_seconds:
                notifier.notify(body="meter x", title="bench")
                n += 1
            bare = n / (time.time() - start)
        # Worker processes (`processes: 2`, the setting for throughput), then threads.
        for label, extra, post_seconds in (
            ("processes: 2", {"processes": 2}, args.apprise_seconds / 2),
            ("threads", {}, args.apprise_seconds / 5),
        ):
            with sink() as sink_port:
                ours_apprise, n_apprise = relay_run(
                    root,
                    {
                        "url": f"json://127.0.0.1:{sink_port}/apprise",
                        "concurrency": 8,
                        **extra,
                    },
                    post_seconds,
                    sink_port,
                    8,
                )
            rows.append(
                (
                    f"apprise json://, {label} ({n_apprise} events) vs bare apprise loop",
                    ours_apprise,
                    bare,
                    "ev/s",
                )
            )
    report("end to end, receive -> delivered", rows)


if __name__ == "__main__":
    main()
