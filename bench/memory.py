"""RSS stays flat while a destination is down: the backlog lives in SQLite, not in RAM.

100,000 deliveries are queued for a destination whose port does not listen; RSS is
sampled while they arrive and for a while after. Baseline: the same daemon's RSS at
rest, before the load.
"""

from __future__ import annotations

import argparse
import sqlite3
import threading
import time
from pathlib import Path

from common import free_port, relayhook, relayhook_config, report, rss_mb, tempdir, wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--settle", type=float, default=30)
    args = parser.parse_args()
    with tempdir() as tmp:
        root = Path(tmp)
        config = relayhook_config(
            root,
            {"down": {"webhook": f"http://127.0.0.1:{free_port()}/down"}},
            [{"name": "down", "to": ["down"], "body": "{{ payload | tojson }}"}],
            extra={"retry": {"attempts": 1000, "first_delay": "1h", "max_delay": "1h"}},
        )
        port = free_port()
        with relayhook(config, port) as proc:
            time.sleep(1)
            idle = rss_mb(proc.pid)
            samples: list[tuple[float, float, int]] = []
            stop = threading.Event()
            db = root / "relayhook.db"

            def sample() -> None:
                while not stop.is_set():
                    with sqlite3.connect(db) as conn:
                        queued = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
                    samples.append((time.time(), rss_mb(proc.pid), queued))
                    time.sleep(1)

            sampler = threading.Thread(target=sample)
            sampler.start()
            start = time.time()
            while True:
                with sqlite3.connect(db) as conn:
                    events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
                if events >= args.deliveries:
                    break
                wrk(f"http://127.0.0.1:{port}/hooks/bench?token=bench-token", "relayhook.lua", 3)
            loaded = time.time()
            while time.time() - loaded < args.settle:
                time.sleep(1)
            stop.set()
            sampler.join()
            with sqlite3.connect(db) as conn:
                queued = conn.execute(
                    "SELECT COUNT(*) FROM deliveries WHERE state IN ('pending', 'retrying')"
                ).fetchone()[0]
    peak = max(r for _, r, _ in samples)
    during = [r for t, r, _ in samples if start <= t <= loaded]
    after = [r for t, r, _ in samples if t > loaded]
    report(
        f"memory with {queued} deliveries queued for a dead destination",
        [
            ("peak RSS vs RSS at rest", peak, idle, "MB"),
            (
                "RSS at the end vs RSS when the queue was full",
                after[-1],
                during[-1] if during else idle,
                "MB",
            ),
        ],
    )
    print(
        "  RSS over time (s, MB, deliveries):",
        ", ".join(
            f"{t - start:.0f}:{r:.0f}:{q}" for t, r, q in samples[:: max(1, len(samples) // 12)]
        ),
    )


if __name__ == "__main__":
    main()
