"""The pages people read: events, one event, deliveries, one delivery, silences, groups,
destinations. Lists page by id (`before`), newest first, and the first page refreshes
itself (htmx) while it is open."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.plugins.htmx import HTMXRequest

from relayhook.deliver.probe import destination_report
from relayhook.model import Event
from relayhook.ops.redact import CREDENTIAL_HEADERS
from relayhook.route.match import route
from relayhook.store.base import DeliveryFilter, EventFilter
from relayhook.web.ui.base import PAGE, UI, parse_since

__all__ = ["STATES", "page_handlers"]

STATES = ("pending", "retrying", "delivered", "dead", "failed", "silenced", "grouped")
Query = Annotated[str | None, Parameter(required=False)]


def _stored_event(row: dict[str, Any]) -> Event:
    try:
        body = json.loads(row["body"])
    except (TypeError, ValueError) as e:
        return Event(
            row["id"], row["source"], row["event_type"], row["received_at"], {}, error=str(e)
        )
    return Event(
        row["id"], row["source"], row["event_type"], row["received_at"], row["headers"], body
    )


def page_handlers(ui: UI) -> list[HTTPRouteHandler]:
    def fragment(request: Request[Any, Any, Any]) -> bool:
        """Whether htmx asked, for the rows alone (the list refreshing itself)."""
        return isinstance(request, HTMXRequest) and bool(request.htmx)

    @get("/")
    async def events(
        request: Request[Any, Any, Any],
        state_: Annotated[str | None, Parameter(query="state", required=False)] = None,
        source: Query = None,
        event_type: Annotated[str | None, Parameter(query="type", required=False)] = None,
        since: Query = None,
        before: Annotated[int | None, Parameter(required=False)] = None,
    ) -> Response[str]:
        try:
            f = EventFilter(state_ or None, source or None, event_type or None, parse_since(since))
        except ValueError as e:
            return ui.render(request, "events.html", 400, rows=[], error=f"since: {e}", q={})
        rows = await ui.store.page_events(f, before, PAGE)
        q = {"state": state_, "source": source, "type": event_type, "since": since}
        name = "_events_rows.html" if fragment(request) else "events.html"
        return ui.render(request, name, rows=rows, q=q, before=before, error=None, page=PAGE)

    @get("/events/{event_id:int}")
    async def event(request: Request[Any, Any, Any], event_id: int) -> Response[str]:
        row = await ui.store.get_event(event_id)
        if row is None:
            return ui.render(request, "missing.html", 404, what=f"event {event_id}")
        config = ui.config()
        stored = _stored_event(row)
        outcomes = await asyncio.to_thread(
            route, config.rules, config.destinations, stored, config.render_timeout
        )
        headers = {k: v for k, v in row["headers"].items() if k.lower() not in CREDENTIAL_HEADERS}
        return ui.render(
            request, "event.html", event=row, headers=headers, outcomes=outcomes, error=stored.error
        )

    @get("/deliveries")
    async def deliveries(
        request: Request[Any, Any, Any],
        destination: Query = None,
        rule: Query = None,
        since: Query = None,
        until: Query = None,
        before: Annotated[int | None, Parameter(required=False)] = None,
    ) -> Response[str]:
        states = tuple(s for s in request.query_params.getall("status", []) if s in STATES)
        q = {
            "status": states,
            "destination": destination,
            "rule": rule,
            "since": since,
            "until": until,
        }
        config = ui.config()
        choices: dict[str, Any] = {
            "states": STATES,
            "destinations": sorted(config.destinations),
            "rules": [r.name for r in config.rules],
        }
        try:
            f = DeliveryFilter(
                states, destination or None, rule or None, parse_since(since), parse_since(until)
            )
        except ValueError as e:
            return ui.render(
                request, "deliveries.html", 400, rows=[], q=q, error=str(e), before=None,
                page=PAGE, **choices,
            )  # fmt: skip
        rows = await ui.store.page_deliveries(f, before, PAGE)
        name = "_deliveries_rows.html" if fragment(request) else "deliveries.html"
        return ui.render(
            request, name, rows=rows, q=q, error=None, before=before, page=PAGE, **choices
        )

    @get("/deliveries/{delivery_id:int}")
    async def delivery(request: Request[Any, Any, Any], delivery_id: int) -> Response[str]:
        row = await ui.store.get_delivery(delivery_id)
        if row is None:
            return ui.render(request, "missing.html", 404, what=f"delivery {delivery_id}")
        return ui.render(request, "delivery.html", d=row)

    @get("/silences")
    async def silences(
        request: Request[Any, Any, Any], all_: Annotated[bool, Parameter(query="all")] = False
    ) -> Response[str]:
        rows = await ui.store.list_silences(ui.clock(), all_)
        return ui.render(request, "silences.html", rows=rows, all=all_, preview=None, form={})

    @get("/groups")
    async def groups(request: Request[Any, Any, Any]) -> Response[str]:
        rows = await ui.store.waiting_groups()
        return ui.render(request, "groups.html", rows=rows, now=ui.clock())

    @get("/destinations")
    async def destinations(request: Request[Any, Any, Any]) -> Response[str]:
        stored = await ui.store.destination_status()
        rows = destination_report(ui.config(), stored)
        return ui.render(request, "destinations.html", rows=rows)

    return [events, event, deliveries, delivery, silences, groups, destinations]
