"""Receive -> delivered latency at a steady 100 events/s (target: p99 <= 50 ms).

A paced asyncio client posts events carrying their send time; the sink measures when
the webhook arrives. Baseline: the same client posting straight to the sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp
from common import (
    free_port,
    relayhook,
    relayhook_config,
    report,
    sink,
    sink_reset,
    sink_stats,
    tempdir,
)


async def paced(url: str, rate: float, seconds: float, make: object) -> int:
    async with aiohttp.ClientSession() as session:
        sent = 0
        start = time.monotonic()
        pending = set()
        while time.monotonic() - start < seconds:
            body = make(sent)  # type: ignore[operator]
            pending.add(asyncio.create_task(session.post(url, data=json.dumps(body)).__aenter__()))
            sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        for response in await asyncio.gather(*pending):
            response.release()
        return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    with tempdir() as tmp, sink() as sink_port:
        root = Path(tmp)
        asyncio.run(
            paced(
                f"http://127.0.0.1:{sink_port}/direct",
                args.rate,
                args.seconds / 2,
                lambda n: {"sent_at": time.time(), "n": n},
            )
        )
        direct = sink_stats(sink_port)
        sink_reset(sink_port)
        config = relayhook_config(
            root,
            {
                "out": {
                    "webhook": f"http://127.0.0.1:{sink_port}/relayed",
                    "body": '{"sent_at": {{ payload.sent_at }}}',
                }
            },
            [{"name": "out", "to": ["out"], "body": "x"}],
        )
        port = free_port()
        with relayhook(config, port):
            sent = asyncio.run(
                paced(
                    f"http://127.0.0.1:{port}/hooks/bench?token=bench-token",
                    args.rate,
                    args.seconds,
                    lambda n: {
                        "event_id": "bench.latency",
                        "delivery_id": f"l{n}",
                        "payload": {"sent_at": time.time()},
                    },
                )
            )
            time.sleep(2)
            ours = sink_stats(sink_port)
    assert ours["samples"] == sent, (ours, sent)
    report(
        f"receive -> delivered at {args.rate:g} events/s ({sent} events)",
        [
            (
                "p99 latency through relayhook vs posting straight to the sink",
                ours["p99"] * 1000,
                direct["p99"] * 1000,
                "ms",
            ),
            ("p99 latency through relayhook vs the 50 ms goal", ours["p99"] * 1000, 50.0, "ms"),
            (
                "p50 latency through relayhook vs posting straight to the sink",
                ours["p50"] * 1000,
                direct["p50"] * 1000,
                "ms",
            ),
        ],
    )


if __name__ == "__main__":
    main()
