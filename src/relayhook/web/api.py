"""The admin API under /api/: read the log and replay deliveries, behind an admin token.

Served only when `admin_token` is configured; never unauthenticated. The token travels
only as `Authorization: Bearer ...`, never in a URL where access logs would keep it.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from litestar import Request, Response, Router, delete, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, ValidationException
from litestar.handlers import BaseRouteHandler
from litestar.params import Parameter

from relayhook.config.settings import Config
from relayhook.deliver.probe import TEST_BODY, TEST_TITLE, destination_report, send_test
from relayhook.deliver.senders.base import Sender
from relayhook.policy.signatures import bearer_token
from relayhook.policy.silence import Matcher, parse_matcher
from relayhook.store.base import Store
from relayhook.text import units

__all__ = ["Control", "admin_router"]

_LIMIT_MAX = 1000


class Control(Protocol):
    """What the running daemon offers the API beyond the log: reload and status."""

    async def reload(self) -> tuple[bool, list[str]]: ...

    def status(self) -> dict[str, Any]: ...

    def sender(self, name: str) -> Sender | None: ...


def admin_router(
    config: Callable[[], Config],
    store: Store,
    control: Control | None,
    clock: Callable[[], float] = time.time,
) -> Router:
    """Routes for /api/, guarded by the admin token of the config in force; every time it
    reads (a replay's, a silence's, `since`) is the injected clock's."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        token = config().admin_token
        offered = bearer_token(connection.headers.get("authorization", ""))
        if not token:
            raise NotAuthorizedException("the admin API is off: set admin_token in the config")
        if not offered:
            raise NotAuthorizedException("missing admin token: send Authorization: Bearer ...")
        if not hmac.compare_digest(offered.encode(), token.encode()):
            raise NotAuthorizedException("invalid admin token")

    def reply(data: Any, status: int = 200) -> Response[bytes]:
        text = config().redactor(json.dumps(data, ensure_ascii=False))
        return Response(text.encode(), status_code=status, media_type="application/json")

    def not_found(what: str, ident: int) -> Response[bytes]:
        return reply({"error": f"no {what} {ident}"}, 404)

    def since_of(value: str | None) -> float | None:
        if value is None:
            return None
        try:
            return units.since(value, clock())
        except ValueError as e:
            raise ValidationException(f"since: {e}") from None

    @get("/events")
    async def events(
        state_filter: Annotated[str | None, Parameter(query="state")] = None,
        since: str | None = None,
        limit: int = 100,
    ) -> Response[bytes]:
        cutoff = since_of(since)
        rows = await store.list_events(
            state=state_filter, since=cutoff, limit=min(limit, _LIMIT_MAX)
        )
        return reply(rows)

    @get("/events/{event_id:int}")
    async def event(event_id: int) -> Response[bytes]:
        found = await store.get_event(event_id)
        return reply(found) if found else not_found("event", event_id)

    @get("/deliveries")
    async def deliveries(
        status: str | None = None,
        rule: str | None = None,
        destination: str | None = None,
        since: str | None = None,
        limit: int = 100,
    ) -> Response[bytes]:
        cutoff = since_of(since)
        rows = await store.list_deliveries(
            state=status,
            rule=rule,
            destination=destination,
            since=cutoff,
            limit=min(limit, _LIMIT_MAX),
        )
        return reply(rows)

    @get("/deliveries/{delivery_id:int}")
    async def delivery(delivery_id: int) -> Response[bytes]:
        found = await store.get_delivery(delivery_id)
        return reply(found) if found else not_found("delivery", delivery_id)

    @post("/deliveries/{delivery_id:int}/replay")
    async def replay_one(delivery_id: int) -> Response[bytes]:
        made = await store.replay([delivery_id], clock())
        if not made:
            return reply(
                {"error": f"delivery {delivery_id} is unknown, or not delivered/dead/silenced"},
                409,
            )
        return reply({"replayed": [{"original": o, "new": n} for o, n in made]}, 201)

    @post("/replay")
    async def replay_many(request: Request[Any, Any, Any]) -> Response[bytes]:
        try:
            body = await request.json()
        except Exception:  # noqa: BLE001 - any unreadable body is the client's error
            body = None
        ids, dead_since = (
            (body.get("ids"), body.get("dead_since")) if isinstance(body, dict) else (None, None)
        )
        if (ids is None) == (dead_since is None):
            return reply({"error": 'send {"ids": [1, 2]} or {"dead_since": "24h"}'}, 400)
        if ids is not None and not (isinstance(ids, list) and all(type(i) is int for i in ids)):
            return reply({"error": "ids must be a list of delivery ids"}, 400)
        if dead_since is not None and not isinstance(dead_since, str):
            return reply({"error": "dead_since must be a duration such as 24h"}, 400)
        try:
            cutoff = since_of(dead_since)
        except ValidationException as e:
            return reply({"error": f"dead_{e.detail}"}, 400)
        if ids is not None:
            made = await store.replay(ids, clock())
        else:
            made = await store.replay_dead(cutoff or 0.0, clock())
        return reply({"replayed": [{"original": o, "new": n} for o, n in made]})

    @get("/silences")
    async def silences(all_: Annotated[bool, Parameter(query="all")] = False) -> Response[bytes]:
        return reply(await store.list_silences(clock(), all_))

    @post("/silences")
    async def add_silence(request: Request[Any, Any, Any]) -> Response[bytes]:
        try:
            body = await request.json()
        except Exception:  # noqa: BLE001 - any unreadable body is the client's error
            body = None
        if not isinstance(body, dict):
            return reply({"error": 'send {"matchers": ["field=value"], "for": "2h"}'}, 400)
        now = clock()
        try:
            spec = _silence_spec(body, now)
        except ValueError as e:
            return reply({"error": str(e)}, 400)
        silence_id = await store.add_silence(*spec, now)
        return reply({"id": silence_id}, 201)

    @delete("/silences/{silence_id:int}", status_code=200)
    async def expire_silence(silence_id: int) -> Response[bytes]:
        if await store.expire_silence(silence_id, clock()):
            return reply({"expired": silence_id})
        return reply({"error": f"no silence {silence_id} in force"}, 404)

    @post("/reload")
    async def reload() -> Response[bytes]:
        if control is None:
            return reply({"error": "reload is not available here"}, 501)
        ok, problems = await control.reload()
        if ok:
            return reply({"reloaded": True, "config": config().summary()})
        return reply(
            {
                "reloaded": False,
                "error": "the config has problems; the old one stays in force",
                "problems": problems,
            },
            422,
        )

    @get("/status")
    async def status() -> Response[bytes]:
        found = control.status() if control else {"config": config().summary()}
        stored = await store.destination_status()
        return reply({**found, "destinations": destination_report(config(), stored)})

    @post("/destinations/{name:str}/test")
    async def test_destination(name: str, request: Request[Any, Any, Any]) -> Response[bytes]:
        cfg = config()
        dest = cfg.destinations.get(name)
        if dest is None:
            return reply({"error": f"no destination named '{name}'"}, 404)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            body = None
        parts = {k: body.get(k) for k in ("title", "body")} if isinstance(body, dict) else None
        if parts is None or not all(v is None or isinstance(v, str) for v in parts.values()):
            return reply({"error": 'send nothing, or {"title": "...", "body": "..."}'}, 400)
        outcome, took = await send_test(
            cfg,
            dest,
            parts["title"] or TEST_TITLE,
            parts["body"] or TEST_BODY,
            sender=control.sender(name) if control is not None else None,
        )
        result = {
            "destination": name,
            "delivered": outcome.ok,
            "ms": round(took * 1000, 1),
            "error": outcome.error,
        }
        return reply(result, 200 if outcome.ok else 502)

    return Router(
        path="/api",
        route_handlers=[
            events,
            event,
            deliveries,
            delivery,
            replay_one,
            replay_many,
            reload,
            status,
            silences,
            add_silence,
            expire_silence,
            test_destination,
        ],
        guards=[guard],
    )


def _silence_spec(body: dict[str, Any], now: float) -> tuple[list[Matcher], float, float, str, str]:
    """(matchers, starts_at, ends_at, comment, author) from a POST body; ValueError why not."""
    texts = body.get("matchers")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError('matchers must be a non-empty list of strings such as "rule=meter-data"')
    matchers = [parse_matcher(text) for text in texts]
    duration, until = body.get("for"), body.get("until")
    if (duration is None) == (until is None):
        raise ValueError(
            'give "for" (a duration such as 2h) or "until" (a Unix time): a silence must end'
        )
    if duration is not None:
        ends_at = now + units.parse_duration(duration)
    elif isinstance(until, int | float) and not isinstance(until, bool):
        ends_at = float(until)
    else:
        raise ValueError('"until" must be a Unix time in seconds')
    if ends_at <= now:
        raise ValueError("the silence would end before it starts")
    comment, author = body.get("comment", ""), body.get("author", "api")
    if not isinstance(comment, str) or not isinstance(author, str):
        raise ValueError("comment and author must be strings")
    return matchers, now, ends_at, comment, author
