"""Grouping under load: a backfill folds into one digest per meter, ingest keeps its pace,
and memory stays flat while groups hold many messages.

1. 10,000 meter items over 50 meters, posted at a steady rate over 10 s (1,000 events of
   10 items), into a rule grouping by meter with a wait longer than the burst: exactly 50
   digests must reach the sink, together counting every item.
2. wrk -c32 ingest into the same rule with a group (one meter, so every message joins one
   open group) against the same rule without one (every message a delivery to the sink),
   and against events no rule takes; interleaved, median of --rounds.
3. RSS of the grouping daemon at rest, at its peak and at the end, while hundreds of
   thousands of messages wait in its groups.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common import (
    free_port,
    median,
    relayhook,
    relayhook_config,
    report,
    rss_mb,
    sink,
    sink_reset,
    sink_stats,
    tempdir,
    wait_count,
    wrk,
)

METERS = 50
ITEMS = 10_000
PER_EVENT = 10


def meter_rule(sink_port: int, root: Path, group: dict[str, Any] | None) -> Path:
    rule: dict[str, Any] = {
        "name": "meters",
        "for_each": "payload",
        "to": ["sink"],
        "title": "{{ item.meter_id }} {{ item.start_interval }}",
        "body": "{{ item.start_interval }} to {{ item.end_interval }}",
    }
    if group is not None:
        rule["group"] = group
        rule["digest_title"] = "{{ count }}|{{ key }}"
    return relayhook_config(
        root, {"sink": {"webhook": f"http://127.0.0.1:{sink_port}/meters"}}, [rule]
    )


def post_backfill(port: int, seconds: float) -> float:
    """ITEMS items over METERS meters, evenly over `seconds`; how long posting took."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    events = ITEMS // PER_EVENT
    started = time.monotonic()
    for n in range(events):
        due = started + n * seconds / events
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        payload = [
            {
                "meter_id": f"meter-{(n * PER_EVENT + i) % METERS:02d}",
                "start_interval": f"2026-11-01T{n % 24:02d}:{i:02d}:00Z",
                "end_interval": f"2026-11-01T{n % 24:02d}:{i:02d}:30Z",
            }
            for i in range(PER_EVENT)
        ]
        body = json.dumps(
            {"event_id": "meter_data.received", "delivery_id": f"backfill-{n}", "payload": payload}
        )
        conn.request(
            "POST",
            "/hooks/bench?token=bench-token",
            body,
            {"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        response.read()
        if response.status != 202:
            sys.exit(f"POST {n} answered {response.status}")
    conn.close()
    return time.monotonic() - started


def backfill(root: Path, sink_port: int, seconds: float) -> None:
    config = meter_rule(sink_port, root, {"key": "{{ item.meter_id }}", "wait": "15s"})
    port = free_port()
    sink_reset(sink_port)
    with relayhook(config, port):
        took = post_backfill(port, seconds)
        stats = wait_count(sink_port, METERS, 60)
        time.sleep(3)  # anything more would arrive now
        stats = sink_stats(sink_port)
    with sqlite3.connect(root / "relayhook.db") as db:
        digests = [
            title
            for (title,) in db.execute(
                "SELECT title FROM deliveries WHERE state = 'delivered' AND group_id IS NULL"
            )
        ]
        grouped = db.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'grouped'").fetchone()
    counted = sum(int(t.split("|")[0]) for t in digests)
    meters = {t.split("|")[1] for t in digests}
    report(
        f"backfill: {ITEMS} items over {METERS} meters posted in {took:.1f} s",
        [
            ("digests at the sink vs meters", stats["count"], METERS, "msgs"),
            ("items the digests count vs items posted", counted, ITEMS, "items"),
            ("messages kept as grouped vs items posted", grouped[0], ITEMS, "items"),
        ],
    )
    if stats["count"] != METERS or len(meters) != METERS or counted != ITEMS:
        sys.exit(f"expected exactly {METERS} digests counting {ITEMS} items, got {digests}")


def ingest(root: Path, sink_port: int, seconds: float, rounds: int) -> None:
    configs = {
        "group": {"key": "{{ item.meter_id }}", "wait": "1h"},
        "no group": None,
    }
    rates: dict[str, list[float]] = {"group": [], "no group": [], "no rule": []}
    rss: dict[str, float] = {}
    for _ in range(rounds):
        for name in ("group", "no group", "no rule"):
            folder = root / f"ingest-{name.replace(' ', '-')}-{len(rates[name])}"
            folder.mkdir()
            config = meter_rule(sink_port, folder, configs.get(name))
            port = free_port()
            url = f"http://127.0.0.1:{port}/hooks/bench?token=bench-token"
            event_type = "bench.unrouted" if name == "no rule" else "meter_data.received"
            if name == "no rule":
                # The same rule, for a type these events do not have.
                rules = folder / "rules" / "bench.yaml"
                rules.write_text(json.dumps({**json.loads(rules.read_text()), "event": "x.*"}))
            with relayhook(config, port) as proc:
                if name == "group":
                    rss.setdefault("rest", rss_mb(proc.pid))
                    peak = Sampler(proc.pid)
                run = wrk(url, "relayhook.lua", seconds, env={"EVENT_TYPE": event_type})
                if run["non2xx"] or run["socket_errors"]:
                    sys.exit(f"{name}: {run['non2xx']:.0f} non-2xx, {run['socket_errors']:.0f}")
                rates[name].append(run["rate"])
                if name == "group":
                    time.sleep(5)  # routing catches up; what waits stays on disk
                    peak.stop()
                    rss["peak"] = max(rss.get("peak", 0.0), peak.peak)
                    rss["end"] = rss_mb(proc.pid)
                    with sqlite3.connect(folder / "relayhook.db") as db:
                        held = db.execute(
                            "SELECT COALESCE(SUM(count), 0) FROM groups WHERE state = 'open'"
                        ).fetchone()[0]
                    rss["held"] = max(rss.get("held", 0.0), float(held))
    group, plain, none = (median(rates[k]) for k in ("group", "no group", "no rule"))
    report(
        f"ingest with a grouping rule (wrk -c32, req/s, median of {rounds})",
        [
            ("grouping rule vs the same rule without group", group, plain, "req/s"),
            ("grouping rule vs events no rule takes", group, none, "req/s"),
        ],
    )
    print(f"  runs: {rates}")
    report(
        f"memory while {rss['held']:.0f} messages wait in open groups",
        [
            ("peak RSS vs RSS at rest", rss["peak"], rss["rest"], "MB"),
            ("RSS at the end vs RSS at rest", rss["end"], rss["rest"], "MB"),
        ],
    )


class Sampler:
    """The highest RSS of a process, sampled every 200 ms until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, rss_mb(self.pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backfill-seconds", type=float, default=10)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempdir() as tmp, sink() as sink_port:
        root = Path(tmp)
        backfill(root, sink_port, args.backfill_seconds)
        ingest(root, sink_port, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
