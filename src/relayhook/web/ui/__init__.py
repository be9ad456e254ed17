"""Web pages under /ui/ for people who would rather look than query: the delivery log,
silences, groups and destinations, behind a session that the admin token opens."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router
from litestar.static_files import create_static_files_router

from relayhook.web.ui.actions import action_handlers, login_handlers
from relayhook.web.ui.base import UI
from relayhook.web.ui.pages import page_handlers
from relayhook.web.ui.render import STATIC

__all__ = ["UI", "ui_routers"]


def ui_routers(ui: UI) -> list[Router]:
    """/ui/login on its own; every other /ui/ page behind the session and CSRF check; the
    pages' own script and style under /static/."""

    # A function, not the bound method: Litestar copies what it registers, deeply.
    async def guard(request: Request[Any, Any, Any]) -> Response[Any] | None:
        return await ui.guard(request)

    return [
        Router(path="/ui", route_handlers=login_handlers(ui)),
        Router(
            path="/ui",
            route_handlers=[*page_handlers(ui), *action_handlers(ui)],
            before_request=guard,
        ),
        create_static_files_router(path="/static", directories=[STATIC]),
    ]
