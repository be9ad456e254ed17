"""The web pages over a big log: 1,000,000 deliveries (100,000 events of 10 each; 2 % dead,
the rest delivered), written straight into the daemon's database file before it starts.

1. Time to answer (loopback, so server time plus a fraction of a millisecond) for the first
   page of /ui/deliveries, the same with a status filter (dead; and silenced, which no row
   has), and an event page; median and worst of 20 each, against the 100 ms goal.
2. wrk -c32 ingest while a client reloads /ui/deliveries every --every seconds, against the
   same without it, interleaved, median of --rounds; and the time to answer each of those
   reloads while ingest runs flat out (p50 and p99: reads beside the writer's commits).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sqlite3
import statistics
import threading
import time
from pathlib import Path

from common import free_port, median, relayhook, relayhook_config, report, tempdir, wrk

TOKEN = "bench-admin-token-0123456789"
EVENTS = 100_000
PER_EVENT = 10


def fill(db: Path) -> None:
    conn = sqlite3.connect(db)
    now = time.time() - 86400
    with conn:
        conn.executemany(
            "INSERT INTO events (id, source, event_key, event_type, received_at, headers, body,"
            " state) VALUES (?, 'bench', ?, 'customer.created', ?, '{}', ?, 'routed')",
            (
                (i, f"k{i}", now + i * 0.5, json.dumps({"event_id": "customer.created", "n": i}))
                for i in range(1, EVENTS + 1)
            ),
        )
        conn.executemany(
            "INSERT INTO deliveries (event_id, rule, destination, title, body, format, state,"
            " attempts, created_at, updated_at, severity) VALUES (?, 'bench', 'sink', ?, 'x',"
            " 'text', ?, 1, ?, ?, 'info')",
            (
                (
                    1 + j // PER_EVENT,
                    f"delivery {j}",
                    "dead" if j % 50 == 0 else "delivered",
                    now + j * 0.05,
                    now + j * 0.05,
                )
                for j in range(EVENTS * PER_EVENT)
            ),
        )
    conn.close()


def session(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        "/ui/login",
        body=f"token={TOKEN}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    cookie = conn.getresponse().getheader("set-cookie") or ""
    conn.close()
    return cookie.split(";")[0]


def timed(port: int, cookie: str, path: str, n: int = 20, rows: int = 0) -> list[float]:
    """Milliseconds for each of n GETs of path; each page must list at least `rows` rows."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    took = []
    for _ in range(n):
        started = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": cookie})
        response = conn.getresponse()
        body = response.read()
        took.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, (path, response.status)
        assert body.count(b"<tr>") >= rows, (path, body.count(b"<tr>"))
    conn.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=float, default=0.25, help="seconds between reloads")
    parser.add_argument("--load-only", action="store_true", help="skip the idle page times")
    args = parser.parse_args()
    with tempdir() as tmp:
        root = Path(tmp)
        config = relayhook_config(
            root,
            {"sink": {"webhook": "http://127.0.0.1:9/never"}},
            [{"name": "bench", "to": ["sink"], "body": "x"}],
            extra={"admin_token": TOKEN},
        )
        (root / "rules" / "bench.yaml").write_text(
            '{"event": "never.*", "rules": [{"name": "bench", "to": ["sink"], "body": "x"}]}'
        )
        port = free_port()
        with relayhook(config, port):
            pass  # makes the schema
        started = time.monotonic()
        fill(root / "relayhook.db")
        print(f"  filled {EVENTS * PER_EVENT:,} deliveries in {time.monotonic() - started:.0f} s")
        pages = {  # path: (what, rows it must list)
            "/ui/deliveries": ("first page of /ui/deliveries", 50),
            "/ui/deliveries?status=dead": ("the same, status dead (2 %)", 50),
            "/ui/deliveries?status=silenced": ("the same, status silenced (none)", 0),
            "/ui/deliveries?status=dead&status=retrying&destination=sink": (
                "several statuses and a destination",
                50,
            ),
            f"/ui/events/{EVENTS // 2}": ("an event page", 10),
        }
        rows = []
        port = free_port()
        with relayhook(config, port):
            cookie = session(port)
            for path, (what, listed) in pages.items() if not args.load_only else ():
                took = timed(port, cookie, path, rows=listed)
                rows.append((f"{what}: median", statistics.median(took), 100.0, "ms"))
                rows.append((f"{what}: worst of 20", max(took), 100.0, "ms"))
        if rows:
            report("web pages over 1,000,000 deliveries (goal: 100 ms)", rows)

        rates: dict[str, list[float]] = {"alone": [], "reloading": []}
        under_load: list[float] = []  # ms for each reload while ingest ran
        url_of = "http://127.0.0.1:{}/hooks/bench?token=bench-token"
        for _ in range(args.rounds):
            for name in ("alone", "reloading"):
                port = free_port()
                with relayhook(config, port):
                    stop = threading.Event()
                    reloader = None
                    if name == "reloading":
                        cookie = session(port)

                        def reload(
                            port: int = port, cookie: str = cookie, stop: threading.Event = stop
                        ) -> None:
                            while not stop.wait(args.every):
                                under_load.extend(timed(port, cookie, "/ui/deliveries", 1))

                        reloader = threading.Thread(target=reload)
                        reloader.start()
                    rates[name].append(
                        wrk(url_of.format(port), "relayhook.lua", args.seconds)["rate"]
                    )
                    stop.set()
                    if reloader is not None:
                        reloader.join()
        cuts = statistics.quantiles(under_load, n=100)
        report(
            f"ingest while someone reloads /ui/deliveries every {args.every:g} s"
            f" (median of {args.rounds})",
            [
                (
                    "ingest, reloading vs alone",
                    median(rates["reloading"]),
                    median(rates["alone"]),
                    "req/s",
                ),
                ("first page while ingest runs flat out: p50", cuts[49], 100.0, "ms"),
                ("first page while ingest runs flat out: p99", cuts[98], 100.0, "ms"),
            ],
        )
        print(f"  page loads under ingest: {len(under_load)}")
        print(f"  runs: {rates}")


if __name__ == "__main__":
    main()
