"""`relayhook serve`: wire config, store, pipeline and HTTP together; own the signals.

Signals are handled here and nowhere else, so everything below can run inside tests.
SIGTERM/SIGINT drain and exit 0; SIGHUP reloads. systemd hears READY once the socket
listens, RELOADING/READY around a reload, STOPPING on the way out, and watchdog pings
sent from the event loop, so a stalled loop stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from relayhook.config.load import load_config
from relayhook.config.settings import Config
from relayhook.deliver.runtime import Runtime
from relayhook.deliver.senders.base import Sender
from relayhook.errors import ConfigError
from relayhook.ops.logs import setup_logging
from relayhook.ops.metrics import Metrics
from relayhook.ops.systemd import Notifier
from relayhook.pipeline import Pipeline
from relayhook.store.base import Store, StoreBusy, StoreError
from relayhook.store.open import open_store
from relayhook.web.app import create_app

__all__ = ["Daemon", "serve"]

logger = logging.getLogger("relayhook")
PRUNE_EVERY = 3600.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (it re-raises SIGTERM after shutdown, which
    would kill us before the drain), telling systemd once the socket listens."""

    notifier: Notifier | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.notifier is not None:
            self.notifier.ready()


class Daemon:
    """The running relay: reload, status, periodic pruning, watchdog."""

    def __init__(
        self,
        config: Config,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config_path = config.path
        self.listen = (config.listen_host, config.listen_port)
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.clock = clock
        self.store: Store = open_store(config.database, daemon=True, lease=config.lease)
        self.pipeline = Pipeline(self.store, Runtime(config), self.metrics, clock, monotonic)
        self.started_at = clock()
        self.last_reload: dict[str, Any] = {"ok": True, "at": self.started_at, "problems": []}
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def config(self) -> Config:
        return self.pipeline.runtime.config

    async def reload(self) -> tuple[bool, list[str]]:
        """Load, check and compile the whole new config, then swap it in one step.

        On any problem the running config stays in force, and the problems are logged
        (file:line), kept for /api/status and shown in /metrics.
        """
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                config = await asyncio.to_thread(load_config, self.config_path)
                # The socket and the database cannot move under a running process.
                config = dataclasses.replace(
                    config,
                    listen_host=self.listen[0],
                    listen_port=self.listen[1],
                    database=self.config.database,
                )
                runtime = Runtime(config, previous=self.pipeline.runtime)
            except ConfigError as e:
                problems = [str(p) for p in e.problems]
            except Exception as e:  # noqa: BLE001 - whatever breaks, the old config stays
                problems = [f"{self.config_path}: {type(e).__name__}: {e}"]
            else:
                self.pipeline.swap(runtime)
                _log_warnings(config)
                self.metrics.reloaded(True)
                self.last_reload = {"ok": True, "at": self.clock(), "problems": []}
                logger.info("config reloaded: %s", config.summary())
                self.notifier.ready("serving")
                return True, []
            self.metrics.reloaded(False)
            self.last_reload = {"ok": False, "at": self.clock(), "problems": problems}
            for problem in problems:
                logger.error("reload failed, keeping the running config: %s", problem)
            self.notifier.ready("serving (last reload failed)")
            return False, problems

    def sender(self, name: str) -> Sender | None:
        """The sender the daemon uses for destination name now."""
        return self.pipeline.runtime.senders.get(name)

    def status(self) -> dict[str, Any]:
        return {
            "config": self.config_path,
            "summary": self.config.summary(),
            "started_at": self.started_at,
            "last_reload": self.last_reload,
            "deliveries_in_flight": self.pipeline.in_flight,
        }

    async def _watchdog(self, interval: float) -> None:
        # From the event loop on purpose: if the loop stalls, the pings stop.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _prune_loop(self) -> None:
        while True:
            retention = self.config.retention
            if retention:
                done = await self.store.prune(self.clock() - retention)
                if done.events:
                    logger.info(
                        "pruned %d events, %d deliveries, %d attempts",
                        done.events,
                        done.deliveries,
                        done.attempts,
                    )
            # Hourly, or more often for a short retention, so the bound holds.
            await asyncio.sleep(min(PRUNE_EVERY, max(1.0, (retention or PRUNE_EVERY) / 4)))

    async def run(self) -> None:
        config = self.config
        app = create_app(self.pipeline, self.store, control=self)
        server = _Server(
            uvicorn.Config(
                app,
                host=config.listen_host,
                port=config.listen_port,
                loop="none",
                http="httptools",
                lifespan="off",
                log_config=None,
                access_log=False,
                # X-Forwarded-For is ours to judge (trusted_proxies), not uvicorn's.
                proxy_headers=False,
                server_header=False,
                timeout_graceful_shutdown=max(1, int(config.shutdown_timeout)),
            )
        )
        server.notifier = self.notifier
        loop = asyncio.get_running_loop()

        def stop(signame: str) -> None:
            logger.info("%s received: shutting down", signame)
            self.notifier.stopping()
            server.should_exit = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        try:
            await self.pipeline.start()
        except StoreError as e:
            # The database is not there (a server not up yet): say so and let systemd
            # start us again, rather than serve /hooks/ with nowhere to keep events.
            logger.error("cannot use the database %s: %s", self.store.where, e)
            await self.store.close()
            raise SystemExit(1) from None
        if self.notifier.watchdog_interval:
            self._spawn(self._watchdog(self.notifier.watchdog_interval))
        self._spawn(self._prune_loop())
        logger.info("relayhook serving on %s:%d (%s)", *self.listen, config.summary())
        _log_warnings(config)
        try:
            await server.serve()
        finally:
            self.notifier.stopping()
            for task in self._tasks:
                task.cancel()
            await self.pipeline.stop(self.config.shutdown_timeout)
            await self.pipeline.runtime.close()
            await self.store.close()
            logger.info("relayhook stopped")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)


def _log_warnings(config: Config) -> None:
    for warning in config.warnings:
        logger.warning("%s", warning)


def serve(config: Config, log_level: str = "info", log_json: bool | None = None) -> None:
    """Run until SIGTERM or SIGINT; exit cleanly after draining."""
    running: list[Daemon] = []
    setup_logging(
        log_level, lambda: (running[0].config if running else config).redactor, as_json=log_json
    )

    async def main() -> None:
        try:
            running.append(Daemon(config))
        except StoreBusy as e:
            logger.error("%s", e)
            raise SystemExit(1) from None
        await running[0].run()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(main())
    else:
        uvloop.run(main())
