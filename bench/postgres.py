"""PostgreSQL against SQLite, and two instances against one.

1. Durable ingest (wrk -c32, events no rule takes) through one instance on PostgreSQL
   against one on SQLite; interleaved, median of --rounds. Goal: at least 0.5x.
2. End to end through a webhook destination to the counting sink: 2 instances on one
   PostgreSQL database, wrk's two threads one on each, against 1 instance;
   rate = events delivered / (first POST to last delivery), median of --rounds,
   interleaved. Goal: at least 1x.

The PostgreSQL server is Debian's, started in a temporary folder (tests/pg.py), with
its durable defaults (fsync on, synchronous_commit on), like the SQLite side's
synchronous=FULL.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from common import (
    BENCH,
    free_port,
    median,
    relayhook,
    relayhook_config,
    report,
    sink,
    sink_reset,
    tempdir,
    wait_count,
    wrk,
)

sys.path.insert(0, str(BENCH.parent / "tests"))
import psycopg

from pg import fresh_database, postgres_server


def config_for(root: Path, db: str | None, sink_port: int | None) -> Path:
    destination = {"webhook": f"http://127.0.0.1:{sink_port or 9}/out"}
    config = relayhook_config(
        root,
        {"out": destination},
        [{"name": "out", "to": ["out"], "title": "{{ event_type }}", "body": "x"}],
        extra={
            "concurrency": {"total": 128, "per_destination": 64},
            **({"database": db} if db else {}),
        },
    )
    if sink_port is None:  # ingest only: events no rule takes
        (root / "rules" / "bench.yaml").write_text(
            '{"event": "never.*", "rules": [{"name": "out", "to": ["out"], "body": "x"}]}'
        )
    return config


def ingest(root: Path, dsn: str, seconds: float, rounds: int) -> None:
    rates: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    for i in range(rounds):
        for name in ("sqlite", "postgresql"):
            folder = root / f"ingest-{name}-{i}"
            folder.mkdir()
            with contextlib.ExitStack() as stack:
                db = (
                    stack.enter_context(fresh_database(dsn, "bench"))
                    if name == "postgresql"
                    else None
                )
                config = config_for(folder, db, None)
                port = free_port()
                stack.enter_context(relayhook(config, port))
                run = wrk(
                    f"http://127.0.0.1:{port}/hooks/bench?token=bench-token",
                    "relayhook.lua",
                    seconds,
                )
                if run["non2xx"] or run["socket_errors"]:
                    sys.exit(f"{name}: {run}")
                rates[name].append(run["rate"])
    report(
        f"durable ingest, one instance (wrk -c32, req/s, median of {rounds})",
        [("PostgreSQL vs SQLite", median(rates["postgresql"]), median(rates["sqlite"]), "req/s")],
    )
    print(f"  runs: {rates}")


def _received(port: int) -> int:
    """Events an instance stored, from its /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return round(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("relayhook_events_received_total") and 'outcome="accepted"' in line
        )
    )


def end_to_end(root: Path, dsn: str, sink_port: int, seconds: float, instances: int) -> float:
    """Events delivered per second by this many instances on one PostgreSQL database."""
    with fresh_database(dsn, "bench") as db, contextlib.ExitStack() as stack:
        folder = root / f"e2e-{instances}-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        config = config_for(folder, db, sink_port)
        ports = [free_port() for _ in range(instances)]
        for port in ports:
            stack.enter_context(relayhook(config, port))
        sink_reset(sink_port)
        start = time.time()
        # One wrk, its two threads each on one instance (or both on the one).
        wrk(
            f"http://127.0.0.1:{ports[0]}/hooks/bench?token=bench-token",
            "relayhook.lua",
            seconds,
            env={"SPREAD_PORTS": ",".join(map(str, ports))},
        )
        print(
            f"  {instances} instance(s), events received by each: {[_received(p) for p in ports]}"
        )
        time.sleep(0.5)
        with psycopg.connect(db) as conn:
            accepted = int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])  # type: ignore[index]
        stats = wait_count(sink_port, accepted, 120)
        return float(stats["count"]) / (stats["last"] - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--e2e-seconds", type=float, default=20)
    args = parser.parse_args()
    with tempdir() as tmp, postgres_server(durable=True) as dsn, sink() as sink_port:
        root = Path(tmp)
        ingest(root, dsn, args.seconds, args.rounds)
        one: list[float] = []
        two: list[float] = []
        for _ in range(args.rounds):  # interleaved: the machine's drift hits both alike
            one.append(end_to_end(root, dsn, sink_port, args.e2e_seconds, 1))
            two.append(end_to_end(root, dsn, sink_port, args.e2e_seconds, 2))
        report(
            f"end to end through a webhook, PostgreSQL, {args.e2e_seconds:g} s of wrk -c32,"
            f" median of {args.rounds}",
            [("2 instances vs 1", median(two), median(one), "ev/s")],
        )
        print(f"  runs: one {[round(r) for r in one]}, two {[round(r) for r in two]}")


if __name__ == "__main__":
    main()
