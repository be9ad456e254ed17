"""Durable ingest: relayhook against a trivial Litestar handler and Alertmanager.

relayhook answers 202 only after the commit holding the event (WAL, synchronous=FULL);
its events here match no rule, so what is measured is accept + store + route-to-nothing.
Runs are interleaved, and the median of each is reported.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from common import (
    BENCH,
    BIN,
    alertmanager,
    free_port,
    median,
    need,
    process,
    relayhook,
    relayhook_config,
    report,
    tempdir,
    wait_http,
    wrk,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    need("wrk", "wrk")
    results: dict[str, list[float]] = {
        "trivial": [],
        "front": [],
        "relayhook": [],
        "alertmanager": [],
    }
    with tempdir() as tmp:
        root = Path(tmp)
        config = relayhook_config(
            root,
            {"sink": {"webhook": "http://127.0.0.1:9/never"}},
            [{"name": "never", "to": ["sink"], "body": "x"}],
        )
        # The rule file matches "*": give it a type that no event has instead.
        (root / "rules" / "bench.yaml").write_text(
            '{"event": "never.*", "rules": [{"name": "never", "to": ["sink"], "body": "x"}]}'
        )
        for _ in range(args.rounds):
            for name, flags in (("trivial", []), ("front", ["--front"])):
                port = free_port()
                with process(
                    [str(BIN / "python"), str(BENCH / "trivial_app.py"), str(port), *flags]
                ):
                    wait_http(f"http://127.0.0.1:{port}/hooks/x", 30)
                    url = f"http://127.0.0.1:{port}/hooks/bench"
                    results[name].append(wrk(url, "relayhook.lua", args.seconds)["rate"])
            port = free_port()
            with relayhook(config, port):
                run = wrk(
                    f"http://127.0.0.1:{port}/hooks/bench?token=bench-token",
                    "relayhook.lua",
                    args.seconds,
                )
                if run["non2xx"] or run["socket_errors"]:
                    sys.exit(
                        f"relayhook answered {run['non2xx']:.0f} non-2xx, "
                        f"{run['socket_errors']:.0f} socket errors"
                    )
                results["relayhook"].append(run["rate"])
            with alertmanager(root) as am_port:
                results["alertmanager"].append(
                    wrk(f"http://127.0.0.1:{am_port}", "alertmanager.lua", args.seconds)["rate"]
                )
        stored = (
            sqlite3.connect(root / "relayhook.db")
            .execute("SELECT COUNT(*) FROM events")
            .fetchone()[0]
        )
    trivial, front, ours, am = (
        median(results[k]) for k in ("trivial", "front", "relayhook", "alertmanager")
    )
    report(
        f"durable ingest (wrk -c32, req/s, median of {args.rounds})",
        [
            (
                "relayhook POST /hooks (202 after commit) vs trivial Litestar",
                ours,
                trivial,
                "req/s",
            ),
            ("relayhook vs Alertmanager POST /api/v2/alerts", ours, am, "req/s"),
            (
                "relayhook vs the trivial work as ASGI in front of Litestar",
                ours,
                front,
                "req/s",
            ),
        ],
    )
    print(f"  runs: {results}; events on disk: {stored}")


if __name__ == "__main__":
    main()
