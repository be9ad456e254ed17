"""The relay in this process on a clock moved by hand: the real Daemon (its Pipeline, its
store on a real SQLite file, its reload), its real HTTP app driven through httpx's ASGI
transport, and its real senders (to a loopback sink). Nothing of ours is replaced; only
the time is the test's.

Time-driven logic (groups, throttles, quiet hours, circuits, silences, retries) is then
tested in milliseconds: the test moves the clock, wakes the stages (as a timer would) and
waits for the relay to settle. The stages still run their own loops; a short real sleep
in a loop that the wake does not reach is the most any step waits.

    async with relay(config) as r:
        await r.post(event)
        await r.advance(3)      # the clock moves 3 s; the stages run what fell due
        assert ...
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from relayhook.config.load import load_config
from relayhook.daemon import Daemon
from relayhook.pipeline import Pipeline
from relayhook.web.app import create_app

TOKEN = "test-token"  # test_daemon.make_config's source token

__all__ = ["TOKEN", "FakeClock", "Relay", "relay", "run"]


class FakeClock:
    """The Unix time and a monotonic time, both moved only by advance()."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.mono = 500.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "this clock only goes forward"
        self.now += seconds
        self.mono += seconds


def run(test: Callable[[], Awaitable[Any]], timeout: float = 60) -> None:
    """Run an async test body with a bound, so a hang fails instead of stalling the run."""

    async def bounded() -> None:
        await asyncio.wait_for(test(), timeout)

    asyncio.run(bounded())


@dataclass
class Relay:
    daemon: Daemon
    clock: FakeClock
    client: httpx.AsyncClient
    database: Path

    @property
    def pipeline(self) -> Pipeline:
        return self.daemon.pipeline

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        content = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        answer = await self.client.request(method, path, content=content, headers=headers or {})
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, answer.text

    async def post(
        self, event: Any, source: str = "openvolt", token: str = TOKEN
    ) -> tuple[int, Any]:
        return await self.request(
            "POST",
            f"/hooks/{source}?token={token}",
            event,
            {"Content-Type": "application/json"},
        )

    def wake(self) -> None:
        """What a timer firing would do: every stage looks at what is due now."""
        self.pipeline.router.wake()
        self.pipeline.groups.wake()
        self.pipeline.scheduler.wake()

    async def advance(self, seconds: float) -> None:
        """Let the relay finish what it has at this time, move the clock, then let the
        stages run what fell due, to the end."""
        await self.settle()
        self.clock.advance(seconds)
        await self.settle()

    async def settle(self, quiet_rounds: int = 3, within: float = 10.0) -> None:
        """Until the relay has nothing left to do at this time: no attempt in flight, no
        event waiting to be routed, no group due, and the log unchanged over a few
        wake-ups in a row (a render in a thread, a write under way, show as changes)."""
        deadline = time.monotonic() + within
        last: Any = None
        same = 0
        while same < quiet_rounds:
            if time.monotonic() > deadline:
                raise AssertionError(f"the relay did not settle in {within}s: {last}")
            self.wake()
            await asyncio.sleep(0.02)
            seen = (self.pipeline.in_flight, self._snapshot())
            idle = seen[0] == 0 and not self._due_work()
            same = same + 1 if seen == last and idle else 0
            last = seen

    def _due_work(self) -> int:
        """Events not routed yet and groups due now: work the stages have still to do."""
        with contextlib.closing(sqlite3.connect(self.database)) as conn:
            sql = (
                "SELECT (SELECT COUNT(*) FROM events WHERE state = 'received')"
                " + (SELECT COUNT(*) FROM groups WHERE state != 'sent' AND due_at <= ?)"
            )
            return int(conn.execute(sql, (self.clock.now,)).fetchone()[0])

    def _snapshot(self) -> tuple[Any, ...]:
        with contextlib.closing(sqlite3.connect(self.database)) as conn:
            return (
                conn.execute("SELECT COUNT(*), MAX(id) FROM events").fetchone(),
                tuple(
                    conn.execute(
                        "SELECT id, state, attempts FROM deliveries ORDER BY id"
                    ).fetchall()
                ),
                conn.execute("SELECT COUNT(*) FROM attempts").fetchone(),
                tuple(conn.execute("SELECT id, digest_id FROM groups ORDER BY id").fetchall()),
            )

    async def until(
        self,
        predicate: Callable[[], bool | Awaitable[bool]],
        what: str = "condition",
        within: float = 10.0,
    ) -> None:
        """Until predicate holds, in real time (the clock does not move)."""
        deadline = time.monotonic() + within
        while True:
            got = predicate()
            if inspect.isawaitable(got):
                got = await got
            if got:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within}s waiting for {what}")
            self.wake()
            await asyncio.sleep(0.01)

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with contextlib.closing(sqlite3.connect(self.database)) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, args).fetchall()

    def count(self, table: str, where: str = "1") -> int:
        sql = f"SELECT COUNT(*) FROM {table} WHERE {where}"  # noqa: S608
        return int(self.rows(sql)[0][0])

    async def metrics(self) -> str:
        status, text = await self.request("GET", "/metrics")
        assert status == 200
        return str(text)


@contextlib.asynccontextmanager
async def relay(
    config_path: Path, *sinks: Any, clock: FakeClock | None = None
) -> AsyncIterator[Relay]:
    """The daemon of config_path, started in this process on clock (a new FakeClock if
    none); stopped, drained and closed after, as `relayhook serve` stops. The sinks given
    (support.HTTPSink) stamp what they receive with the same clock."""
    clock = clock or FakeClock()
    for sink in sinks:
        sink.clock = clock.time
    config = load_config(str(config_path))
    daemon = Daemon(config, clock=clock.time, monotonic=clock.monotonic)
    await daemon.pipeline.start()
    app = create_app(daemon.pipeline, daemon.store, control=daemon)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
            yield Relay(daemon, clock, client, Path(config.database))
    finally:
        await daemon.pipeline.stop(1.0)
        await daemon.pipeline.runtime.close()
        await daemon.store.close()
