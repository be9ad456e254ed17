"""The HTTP face: POST /hooks/{source}, health and readiness.

An event is answered 202 only once it is committed to disk; everything after that
(routing, sending) happens behind the ack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException

from relayhook import deliverylog as log
from relayhook.api import Control, admin_router
from relayhook.auth import TokenAuth, address_allowed, client_address
from relayhook.dispatch import Dispatcher, Runtime
from relayhook.errors import EventError
from relayhook.ingest import dedupe_key, event_type_of, parse_body
from relayhook.store import Store

__all__ = ["create_app"]

logger = logging.getLogger("relayhook.http")

_FORM_TYPES = frozenset({"application/x-www-form-urlencoded"})
# Headers kept with a stored event: never credentials.
_DROP_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-api-key",
        "x-hub-signature",
        "x-hub-signature-256",
        "stripe-signature",
        "webhook-signature",
    }
)


def _error(status: int, message: str) -> Response[dict[str, str]]:
    return Response({"error": message}, status_code=status)


async def _read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise EventError(413, f"request body is larger than the {limit}-byte limit for this source")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise EventError(
                413, f"request body is larger than the {limit}-byte limit for this source"
            )
        chunks.append(chunk)
    return b"".join(chunks)


# The reason label of refused requests in relayhook_events_received_total.
_REJECTED = {
    400: "bad_body",
    401: "unauthorized",
    403: "address",
    404: "unknown_source",
    408: "slow_body",
    413: "too_large",
    415: "content_type",
    422: "no_type",
}


def create_app(
    dispatcher: Dispatcher,
    store: Store,
    control: Control | None = None,
    clock: Callable[[], float] = time.time,
) -> Litestar:
    """The Litestar app over the given resources (tests build it with theirs)."""

    def runtime() -> Runtime:
        return dispatcher.runtime

    metrics = dispatcher.metrics

    @post("/hooks/{source:str}", status_code=202)
    async def receive(request: Request[Any, Any, Any], source: str) -> Response[dict[str, Any]]:
        response, event_type = await _accept(request, source)
        status = response.status_code or 0
        outcome = {202: "accepted", 200: "duplicate"}.get(status) or _REJECTED.get(status, "other")
        known = source in runtime().config.sources
        metrics.events.labels(source if known else "", event_type or "", outcome).inc()
        return response

    async def _accept(
        request: Request[Any, Any, Any], source: str
    ) -> tuple[Response[dict[str, Any]], str | None]:
        config = runtime().config
        src = config.sources.get(source)
        if src is None:
            return _error(404, f"unknown source '{source}'"), None
        if src.allow_ips:
            peer = request.client.host if request.client else None
            address = client_address(
                peer, request.headers.get("x-forwarded-for"), config.trusted_proxies
            )
            if not address_allowed(address, src.allow_ips):
                return _error(403, f"client address {address} is not allowed for this source"), None
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type in _FORM_TYPES or media_type.startswith("multipart/"):
            return _error(
                415,
                f"content type {media_type} is not accepted: send the event as JSON"
                " (application/json)",
            ), None
        now = clock()
        # A token is checked before the body is read; signatures need the body first.
        if isinstance(src.auth, TokenAuth):
            reason = src.auth.verify(b"", request.headers, request.query_params, now)
            if reason is not None:
                return _error(401, reason), None
        try:
            async with asyncio.timeout(config.read_timeout):
                raw = await _read_body(request, src.max_body)
        except TimeoutError:
            return _error(408, f"request body not received within {config.read_timeout:g} s"), None
        except EventError as e:
            return _error(e.status, e.message), None
        if src.auth is not None and not isinstance(src.auth, TokenAuth):
            reason = src.auth.verify(raw, request.headers, request.query_params, now)
            if reason is not None:
                return _error(401, reason), None
        try:
            body = parse_body(raw, src.max_depth)
            event_type = event_type_of(src, body, request.headers)
        except EventError as e:
            return _error(e.status, e.message), None
        key = dedupe_key(src, body, request.headers, raw)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_HEADERS}
        text = raw.decode()
        event_id, duplicate = await store.run(
            lambda c: log.insert_event(c, source, key, event_type, now, headers, text)
        )
        if duplicate:
            return Response({"duplicate": True, "event_id": event_id}, status_code=200), event_type
        dispatcher.wake()
        return Response({"event_id": event_id}, status_code=202), event_type

    @get("/metrics", media_type="text/plain; version=0.0.4; charset=utf-8")
    async def metrics_endpoint() -> bytes:
        depth, oldest, awaiting = await store.run(lambda c: log.queue_stats(c, clock()))
        return metrics.render(depth, oldest, awaiting)

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz() -> Response[dict[str, Any]]:
        checks: dict[str, Any] = {"config": runtime().config.path, "workers": dispatcher.running}
        try:
            await asyncio.wait_for(store.run(lambda c: c.execute("SELECT 1").fetchone()), 5)
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

    return Litestar(
        route_handlers=[
            receive,
            healthz,
            readyz,
            metrics_endpoint,
            admin_router(runtime, store, control),
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        openapi_config=None,
        logging_config=None,
        request_max_body_size=None,
    )
