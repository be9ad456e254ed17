"""What every page and form shares: the session check in front of them, rendering with
the security headers, reading filters from a query."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response
from litestar.response import Redirect

from relayhook.config.settings import Config
from relayhook.store.base import Store
from relayhook.text import units
from relayhook.web.api import Control
from relayhook.web.ui.render import CSP, page
from relayhook.web.ui.session import COOKIE, Sessions

__all__ = ["PAGE", "UI", "parse_since"]

PAGE = 50  # rows per page of a list
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def parse_since(value: str | None) -> float | None:
    """'1h' (ago) or an ISO time; None when empty; ValueError saying why."""
    if not value:
        return None
    return units.since(value)


@dataclass
class UI:
    """The daemon's resources as the pages see them."""

    config: Callable[[], Config]
    store: Store
    control: Control | None
    sessions: Sessions = field(default_factory=Sessions)
    clock: Callable[[], float] = time.time

    def session(self, request: Request[Any, Any, Any]) -> str | None:
        return self.sessions.find(self.config().admin_token, request.cookies.get(COOKIE))

    def csrf(self, sid: str) -> str:
        token = self.config().admin_token
        assert token is not None
        return self.sessions.csrf(token, sid)

    async def guard(self, request: Request[Any, Any, Any]) -> Response[Any] | None:
        """Before every /ui/ page but login: a session, and on a POST its CSRF token."""
        sid = self.session(request)
        if sid is None:
            if request.method == "GET":
                return Redirect("/ui/login", status_code=303)
            return self.text("no session: log in at /ui/login", 403)
        if request.method != "GET":
            form = await request.form()
            offered = form.get("csrf") or request.headers.get("x-csrf-token")
            token = self.config().admin_token
            assert token is not None
            if not self.sessions.csrf_ok(token, sid, offered):
                return self.text("refused: this form has no valid CSRF token", 403)
        request.state.sid = sid
        return None

    def render(
        self, request: Request[Any, Any, Any], name: str, status: int = 200, **context: Any
    ) -> Response[str]:
        """A page, its secrets masked, with the security headers."""
        sid = getattr(request.state, "sid", None)
        html = page(
            name,
            csrf=self.csrf(sid) if sid else "",
            signed_in=sid is not None,
            path=request.url.path,
            url=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            flash=request.query_params.get("msg"),
            **context,
        )
        return Response(
            self.config().redactor(html),
            status_code=status,
            media_type="text/html; charset=utf-8",
            headers=_HEADERS,
        )

    def text(self, message: str, status: int) -> Response[str]:
        return Response(message, status_code=status, media_type="text/plain", headers=_HEADERS)

    @staticmethod
    def back(to: str, message: str | None = None, **query: Any) -> Redirect:
        """303 to a page, with a one-line message for it to show."""
        params = {k: v for k, v in query.items() if v not in (None, "")}
        if message:
            params["msg"] = message
        return Redirect(f"{to}?{urlencode(params)}" if params else to, status_code=303)
