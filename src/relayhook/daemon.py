"""`relayhook serve`: wire config, store, dispatcher and HTTP together; own the signals.

Signals are handled here and nowhere else, so everything below can run inside tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from relayhook.app import create_app
from relayhook.config import Config
from relayhook.dispatch import Dispatcher, Runtime
from relayhook.store import Store

__all__ = ["serve"]

logger = logging.getLogger("relayhook")
DRAIN_TIMEOUT = 10.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: it re-raises SIGTERM after shutdown,
    which would kill us before the drain and the final commit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RedactingFilter(logging.Filter):
    """Masks secrets in every log record before any handler formats it."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.runtime.config.redactor(record.getMessage())
        record.args = None
        return True


async def _serve(config: Config) -> None:
    runtime = Runtime(config)
    store = Store(config.database)
    dispatcher = Dispatcher(store, runtime)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter(runtime))
    app = create_app(lambda: runtime, store, dispatcher)
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
            timeout_graceful_shutdown=int(DRAIN_TIMEOUT),
        )
    )
    loop = asyncio.get_running_loop()

    def stop(signame: str) -> None:
        logger.info("%s received: shutting down", signame)
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    await dispatcher.start()
    logger.info(
        "relayhook serving on %s:%d (%s)", config.listen_host, config.listen_port, config.summary()
    )
    try:
        await server.serve()
    finally:
        await dispatcher.stop(DRAIN_TIMEOUT)
        await runtime.close()
        store.close()
        logger.info("relayhook stopped")


def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT; exit cleanly after draining."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(_serve(config))
    else:
        uvloop.run(_serve(config))
