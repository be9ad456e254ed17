"""The HTTP face: POST /hooks/{source}, health and readiness.

An event is answered 202 only once it is committed to disk; everything after that
(routing, sending) happens behind the ack.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException

from relayhook import deliverylog as log
from relayhook.config import Source
from relayhook.dispatch import Dispatcher, Runtime
from relayhook.errors import EventError
from relayhook.ingest import dedupe_key, event_type_of, parse_body
from relayhook.store import Store

__all__ = ["create_app"]

logger = logging.getLogger("relayhook.http")

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


def _authorized(source: Source, request: Request[Any, Any, Any]) -> str | None:
    """None when the request may pass, else the reason it may not."""
    if source.auth is None:
        return None
    offered = request.query_params.get("token")
    header = request.headers.get("authorization", "")
    if offered is None and header[:7].lower() == "bearer ":
        offered = header[7:].strip()
    if not offered:
        return "missing token: send ?token=... or Authorization: Bearer ..."
    ok = False
    for token in source.auth.tokens:
        # Compare against every token so timing does not tell which one, or how close.
        ok |= hmac.compare_digest(offered.encode(), token.encode())
    return None if ok else "invalid token"


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


def create_app(
    runtime: Callable[[], Runtime],
    store: Store,
    dispatcher: Dispatcher,
    clock: Callable[[], float] = time.time,
) -> Litestar:
    """The Litestar app over the given resources (tests build it with theirs)."""

    @post("/hooks/{source:str}", status_code=202)
    async def receive(request: Request[Any, Any, Any], source: str) -> Response[dict[str, Any]]:
        config = runtime().config
        src = config.sources.get(source)
        if src is None:
            return _error(404, f"unknown source '{source}'")
        reason = _authorized(src, request)
        if reason is not None:
            return _error(401, reason)
        try:
            raw = await _read_body(request, src.max_body)
            body = parse_body(raw)
            event_type = event_type_of(src, body, request.headers)
        except EventError as e:
            return _error(e.status, e.message)
        key = dedupe_key(src, body, request.headers, raw)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_HEADERS}
        text = raw.decode()
        now = clock()
        event_id, duplicate = await store.run(
            lambda c: log.insert_event(c, source, key, event_type, now, headers, text)
        )
        if duplicate:
            return Response({"duplicate": True, "event_id": event_id}, status_code=200)
        dispatcher.wake()
        return Response({"event_id": event_id}, status_code=202)

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
        route_handlers=[receive, healthz, readyz],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        openapi_config=None,
        logging_config=None,
        request_max_body_size=None,
    )
