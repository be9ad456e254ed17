"""The HTTP face: /hooks/ straight to the ingest handler; health, readiness, metrics and
/api/ through Litestar."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException
from litestar.plugins.htmx import HTMXPlugin

from relayhook.config.settings import Config
from relayhook.pipeline import Pipeline
from relayhook.receive.http import PREFIX, ASGIApp, hooks_endpoint
from relayhook.store.base import Store
from relayhook.web.api import Control, admin_router
from relayhook.web.ui import UI, ui_routers

__all__ = ["create_app"]

logger = logging.getLogger("relayhook.http")


def _error(status: int, message: str) -> Response[dict[str, str]]:
    return Response({"error": message}, status_code=status)


def create_app(
    pipeline: Pipeline,
    store: Store,
    control: Control | None = None,
    clock: Callable[[], float] | None = None,
) -> ASGIApp:
    """The ASGI app over the given resources; it reads the time from the pipeline's clock
    unless given one."""
    clock = clock or pipeline.clock

    def config() -> Config:
        return pipeline.config

    metrics = pipeline.metrics

    ingest = hooks_endpoint(pipeline, metrics, clock)

    @get("/metrics", media_type="text/plain; version=0.0.4; charset=utf-8")
    async def metrics_endpoint() -> bytes:
        stats = await store.queue_stats(clock())
        depth = {**stats.depth, "sending": pipeline.in_flight}  # in flight: known in memory
        return metrics.render(depth, stats.oldest_age, stats.awaiting_routing, stats.groups_waiting)

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz() -> Response[dict[str, Any]]:
        checks: dict[str, Any] = {"config": config().path, "workers": pipeline.running}
        try:
            await asyncio.wait_for(store.ping(), 5)
            checks["database"] = "writable"
        except Exception as e:  # noqa: BLE001 - readiness reports, never raises
            checks["database"] = f"not writable: {e}"
        ready = checks["workers"] and checks["database"] == "writable"
        return Response({"ready": bool(ready), **checks}, status_code=200 if ready else 503)

    def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, str]]:
        return _error(exc.status_code, str(exc.detail))

    def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, str]]:
        logger.error(
            "%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc
        )
        return _error(500, "internal error; see the relayhook log")

    litestar = Litestar(
        route_handlers=[
            healthz,
            readyz,
            metrics_endpoint,
            admin_router(config, store, control, clock),
            *ui_routers(UI(config, store, control, clock=clock)),
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        plugins=[HTMXPlugin()],  # request.htmx: whether htmx asked (the pages' live lists)
        openapi_config=None,
        logging_config=None,
        request_max_body_size=None,
    )

    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
            await ingest(scope, receive, send)
        else:
            await litestar(scope, receive, send)

    return app
