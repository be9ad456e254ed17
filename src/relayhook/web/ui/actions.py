"""What the pages' buttons do: log in and out, replay (one, or every match of a filter,
counted first), add, preview and expire silences, send a group now, send-test. Every
POST but login passes the session and CSRF check (UI.guard) first."""

from __future__ import annotations

import getpass
import hmac
from typing import Any

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.response import Redirect

from relayhook.deliver.probe import send_test
from relayhook.policy.silence import Silence, parse_matcher, silencing
from relayhook.store.base import DeliveryFilter
from relayhook.text import units
from relayhook.web.ui.base import UI, parse_since
from relayhook.web.ui.pages import STATES
from relayhook.web.ui.session import COOKIE, LIFETIME, came_over_https

__all__ = ["action_handlers", "login_handlers"]

_PREVIEW_SPAN = 86400.0  # a new silence is tried on the last day's messages
_PREVIEW_MAX = 10_000


def login_handlers(ui: UI) -> list[HTTPRouteHandler]:
    @get("/login")
    async def login_form(request: Request[Any, Any, Any]) -> Response[str]:
        return ui.render(request, "login.html", error=None)

    @post("/login")
    async def login(request: Request[Any, Any, Any]) -> Response[Any]:
        form = await request.form()
        offered = str(form.get("token") or "")
        token = ui.config().admin_token
        if not token or not hmac.compare_digest(offered.encode(), token.encode()):
            return ui.render(request, "login.html", 401, error="That is not the admin token.")
        secure = came_over_https(
            request.url.scheme,
            request.client.host if request.client else None,
            request.headers.get("x-forwarded-proto"),
            ui.config().trusted_proxies,
        )
        response = Redirect("/ui/", status_code=303)
        response.set_cookie(
            COOKIE,
            ui.sessions.start(token),
            max_age=int(LIFETIME),
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=secure,
        )
        return response

    return [login_form, login]


def _filter(form: Any) -> tuple[DeliveryFilter, dict[str, Any]]:
    states = tuple(s for s in form.getall("status", []) if s in STATES)
    text = {k: str(form.get(k) or "") or None for k in ("destination", "rule", "since", "until")}
    f = DeliveryFilter(
        states,
        text["destination"],
        text["rule"],
        parse_since(text["since"]),
        parse_since(text["until"]),
    )
    return f, {"status": states, **text}


def action_handlers(ui: UI) -> list[HTTPRouteHandler]:
    @post("/logout")
    async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
        ui.sessions.end(request.state.sid)
        response = Redirect("/ui/login", status_code=303)
        response.delete_cookie(COOKIE, path="/ui")
        return response

    @post("/deliveries/{delivery_id:int}/replay")
    async def replay_one(request: Request[Any, Any, Any], delivery_id: int) -> Response[Any]:
        form = await request.form()
        row = await ui.store.get_delivery(delivery_id)
        if row is not None and row["state"] == "delivered" and form.get("again") != "yes":
            return ui.back(
                f"/ui/deliveries/{delivery_id}", "Tick 'send it again' to resend a delivered one."
            )
        made = await ui.store.replay([delivery_id], ui.clock())
        if not made:
            return ui.back(
                f"/ui/deliveries/{delivery_id}",
                "Only a delivered, dead or silenced one can be replayed.",
            )
        _, new = made[0]
        return ui.back(
            f"/ui/deliveries/{new}", f"Replay of {delivery_id}: this is the new delivery."
        )

    @post("/deliveries/replay")
    async def replay_matching(request: Request[Any, Any, Any]) -> Response[Any]:
        form = await request.form()
        try:
            f, q = _filter(form)
        except ValueError as e:
            return ui.back("/ui/deliveries", f"Not replayed: {e}")
        ids = await ui.store.matching_deliveries(f)
        confirmed = form.get("confirm")
        if confirmed != str(len(ids)):
            # First the count; a second press, with that count, replays them.
            return ui.render(request, "replay_confirm.html", count=len(ids), q=q)
        made = await ui.store.replay(ids, ui.clock())
        return ui.back(
            "/ui/deliveries",
            f"Replayed {len(made)} deliveries.",
            **{k: v for k, v in q.items() if k != "status"},
        )

    @post("/silences")
    async def add_silence(request: Request[Any, Any, Any]) -> Response[Any]:
        form = await request.form()
        fields = {k: str(form.get(k) or "") for k in ("matchers", "for", "comment", "author")}
        now = ui.clock()
        try:
            matchers = [
                parse_matcher(t.strip()) for t in fields["matchers"].splitlines() if t.strip()
            ]
            if not matchers:
                raise ValueError("give at least one matcher, such as rule=meter-data")
            duration = units.parse_duration(fields["for"] or "")
            if duration <= 0:
                raise ValueError("for: give how long, such as 2h")
        except ValueError as e:
            rows = await ui.store.list_silences(now, False)
            return ui.render(
                request, "silences.html", 400, rows=rows, all=False, preview=None, form=fields,
                error=str(e),
            )  # fmt: skip
        if form.get("preview"):
            count, total = await _preview(ui, matchers, now)
            rows = await ui.store.list_silences(now, False)
            return ui.render(
                request, "silences.html", rows=rows, all=False, form=fields,
                preview={"count": count, "total": total}, error=None,
            )  # fmt: skip
        author = fields["author"] or "web"
        silence_id = await ui.store.add_silence(
            matchers, now, now + duration, fields["comment"], author, now
        )
        return ui.back("/ui/silences", f"Silence {silence_id} added.")

    @post("/silences/{silence_id:int}/expire")
    async def expire_silence(request: Request[Any, Any, Any], silence_id: int) -> Response[Any]:
        ended = await ui.store.expire_silence(silence_id, ui.clock())
        return ui.back(
            "/ui/silences", f"Silence {silence_id} {'expired' if ended else 'was not in force'}."
        )

    @post("/groups/{group_id:int}/send")
    async def send_group(request: Request[Any, Any, Any], group_id: int) -> Response[Any]:
        done = await ui.store.send_group_now(group_id, ui.clock())
        return ui.back(
            "/ui/groups", f"Group {group_id} {'goes now' if done else 'was sent already'}."
        )

    @post("/destinations/{name:str}/test")
    async def test_destination(request: Request[Any, Any, Any], name: str) -> Response[Any]:
        config = ui.config()
        dest = config.destinations.get(name)
        if dest is None:
            return ui.back("/ui/destinations", f"No destination named {name}.")
        sender = ui.control.sender(name) if ui.control is not None else None
        outcome, took = await send_test(config, dest, sender=sender)
        if outcome.ok:
            return ui.back(
                "/ui/destinations", f"send-test {name}: delivered in {took * 1000:.0f} ms."
            )
        return ui.back("/ui/destinations", f"send-test {name}: not delivered: {outcome.error}")

    return [
        logout, replay_one, replay_matching, add_silence, expire_silence, send_group,
        test_destination,
    ]  # fmt: skip


async def _preview(ui: UI, matchers: list[Any], now: float) -> tuple[int, int]:
    """How many of the last day's messages (at most _PREVIEW_MAX) a silence would mute."""
    rows = await ui.store.page_deliveries(
        DeliveryFilter(since=now - _PREVIEW_SPAN), None, _PREVIEW_MAX
    )
    facts = await ui.store.silence_facts([r["id"] for r in rows])
    trial = Silence(0, tuple(matchers), now - _PREVIEW_SPAN, now + 1, "", getpass.getuser(), now)
    count = sum(silencing([trial], fact, now) is not None for fact in facts.values())
    return count, len(rows)
