"""A fast counting HTTP sink (aiohttp) for the benchmarks.

Counts notifications (an Alertmanager webhook call counts each alert it carries), keeps
the latency from a `sent_at` field in the body when there is one, and answers after an
optional delay. GET /stats reports; run as `python sink.py PORT [DELAY_SECONDS]`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp import web

count = 0
first = last = 0.0
latencies: list[float] = []


async def receive(request: web.Request) -> web.Response:
    global count, first, last
    body = await request.read()
    delay = request.app["delay"]
    if delay:
        await asyncio.sleep(delay)
    now = time.time()
    n = 1
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("alerts"), list):
            n = len(data["alerts"])
        sent = data.get("sent_at")
        if isinstance(sent, int | float):
            latencies.append(now - sent)
        elif isinstance(data.get("message"), str) and data["message"].startswith("sent_at="):
            latencies.append(now - float(data["message"][8:]))
    first = first or now
    last = now
    count += n
    return web.Response(status=200, text="ok")


async def stats(request: web.Request) -> web.Response:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0

    return web.json_response(
        {
            "count": count,
            "first": first,
            "last": last,
            "p50": pct(0.50),
            "p99": pct(0.99),
            "samples": len(ordered),
        }
    )


async def reset(request: web.Request) -> web.Response:
    global count, first, last
    count, first, last = 0, 0.0, 0.0
    latencies.clear()
    return web.json_response({"ok": True})


def main() -> None:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app["delay"] = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
