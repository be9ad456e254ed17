"""A destination that takes 200 ms to answer still gets >= 100 deliveries/s.

Concurrency, not a queue of one: the baseline is a client sending to the same sink one
request at a time.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
import urllib.request
from pathlib import Path

from common import (
    free_port,
    relayhook,
    relayhook_config,
    report,
    sink,
    sink_reset,
    tempdir,
    wait_count,
    wrk,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.2)
    args = parser.parse_args()
    with tempdir() as tmp, sink(args.delay) as sink_port:
        root = Path(tmp)
        start = time.time()
        for _ in range(10):
            request = urllib.request.Request(
                f"http://127.0.0.1:{sink_port}/one", data=b"{}", method="POST"
            )
            urllib.request.urlopen(request, timeout=10).read()  # noqa: S310 - loopback
        sequential = 10 / (time.time() - start)
        sink_reset(sink_port)
        config = relayhook_config(
            root,
            {
                "slow": {
                    "webhook": f"http://127.0.0.1:{sink_port}/slow",
                    "concurrency": 32,
                    "timeout": "5s",
                }
            },
            [{"name": "slow", "to": ["slow"], "body": "{{ event.delivery_id }}"}],
        )
        port = free_port()
        with relayhook(config, port):
            # A short burst of events; the rate is measured at the sink.
            run = wrk(
                f"http://127.0.0.1:{port}/hooks/bench?token=bench-token",
                "relayhook.lua",
                1,
                connections=2,
            )
            time.sleep(0.5)
            with sqlite3.connect(root / "relayhook.db") as db:
                accepted = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            stats = wait_count(sink_port, accepted, timeout=600)
        rate = stats["count"] / (stats["last"] - stats["first"])
        assert stats["count"] == accepted, (stats, accepted, run)
    report(
        f"a destination answering in {args.delay * 1000:.0f} ms ({accepted} deliveries)",
        [
            (
                "deliveries/s through relayhook (concurrency 32) vs one at a time",
                rate,
                sequential,
                "dl/s",
            ),
        ],
    )


if __name__ == "__main__":
    main()
