"""Apprise destinations: the Apprise object for one, judging its result, and the sender
that runs it in threads.

Each apprise destination gets its own thread pool, sized to its concurrency, for apprise's
blocking send: apprise 2.x's async_notify runs every plugin in one shared pool of
min(32, cores + 4) threads, where a hanging destination would hold the threads that
every other destination needs. With a pool each, a destination that hangs only
delays itself. `processes: N` sends from worker processes instead (apprise_procs).
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import apprise
from apprise.decorators.base import CustomNotifyPlugin

from relayhook.config.settings import AppriseDestination
from relayhook.model import TIMEOUT, Delivery, Outcome
from relayhook.ops import console

__all__ = ["RATE_LIMIT_WAIT", "AppriseSender", "apprise_for", "body_format", "judge", "notify_type"]

# How much longer than our timeout apprise's socket may wait before its thread gives up.
_GRACE = 1.0
_RATE_LIMITED = re.compile(r"\berror=429\b")
RATE_LIMIT_WAIT = 30.0  # seconds an apprise destination rests after a 429


def _with_params(url: str, **params: str) -> str:
    """The URL with params added where the operator did not set them."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in params.items():
        query.setdefault(key, value)
    # For apprise a '#' is part of the path (slack://T/B/C/#channel), not a fragment: it
    # stays before the query, or the channel would be lost and read into the last param.
    path = parts.path + (f"#{parts.fragment}" if parts.fragment else "")
    rebuilt = urlunsplit(parts._replace(path="", query="", fragment=""))
    if not parts.netloc and "://" in url:
        rebuilt = rebuilt.replace(":", "://", 1)  # urlunsplit writes console:// as console:
    return f"{rebuilt}{path}?{urlencode(query, safe='@,:/')}"


def apprise_for(dest: AppriseDestination) -> tuple[apprise.Apprise, float]:
    """An Apprise object for dest with its own retries and pacing off, and dest's pacing.

    Apprise reports its own read timeout as a plain connection error; letting ours fire
    first keeps "timeout (may have been delivered)" honest. Its read timeout still frees
    the thread soon after.
    """
    params = {"retry": "0", "cto": f"{dest.timeout:g}", "rto": f"{dest.timeout + _GRACE:g}"}
    if dest.format and not dest.url.lower().startswith(f"{console.SCHEMA}:"):
        params["format"] = dest.format  # the console converts everything to text
    asset = apprise.AppriseAsset(async_mode=False)
    plugin = apprise.Apprise.instantiate(_with_params(dest.url, **params), asset=asset)
    if plugin is None:
        raise ValueError(f"apprise cannot use the URL of destination '{dest.name}'")
    # Apprise paces each service (Slack 1.2 s, email 5.5 s) by sleeping inside the send,
    # where it would count against our timeout; the scheduler paces instead.
    # A plugin registered in this process (console://) talks to no service: no pacing.
    own = isinstance(plugin, CustomNotifyPlugin)
    pacing = 0.0 if own else float(plugin.request_rate_per_sec)
    min_interval = dest.min_interval if dest.min_interval is not None else pacing
    plugin.request_rate_per_sec = 0
    notifier = apprise.Apprise(asset=asset)
    notifier.add(plugin)
    return notifier, min_interval


def notify_type(severity: str) -> apprise.NotifyType:
    """apprise's notify type for a severity (a stored one from an older version: info)."""
    try:
        return apprise.NotifyType(severity)
    except ValueError:
        return apprise.NotifyType.INFO


def body_format(fmt: str) -> str:
    return fmt if fmt in ("text", "markdown", "html") else "text"


def judge(result: Any) -> Outcome:
    """The Outcome of one apprise notify() from its AppriseResult."""
    if result:
        return Outcome(True)
    if result.timeout_count:
        return TIMEOUT
    messages = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
    error = "; ".join(messages) or f"apprise reported {result.status.name}"
    if _RATE_LIMITED.search(error):
        # Apprise's plugins log the HTTP status ("... error=429.") but not Retry-After:
        # wait a while rather than spend the attempts at the usual pace.
        return Outcome(False, error, retry_after=RATE_LIMIT_WAIT, limited=True)
    return Outcome(False, error)


class AppriseSender:
    """One Apprise object per destination, its own retries off: every try is ours."""

    def __init__(self, dest: AppriseDestination) -> None:
        self.dest = dest
        self._apprise, self.min_interval = apprise_for(dest)
        self._pool = ThreadPoolExecutor(
            max_workers=dest.concurrency, thread_name_prefix=f"send-{dest.name}"
        )

    def open(self) -> None:
        pass  # threads start on demand

    async def send(self, delivery: Delivery) -> Outcome:
        call = partial(
            self._apprise.notify,
            body=delivery.body or " ",
            title=delivery.title,
            body_format=body_format(delivery.format),
            notify_type=notify_type(delivery.severity),
        )
        future = asyncio.get_running_loop().run_in_executor(self._pool, call)
        try:
            result = await asyncio.wait_for(asyncio.shield(future), self.dest.timeout)
        except TimeoutError:
            # The thread may still finish; its result no longer matters to this attempt.
            future.add_done_callback(lambda f: f.exception())
            return TIMEOUT
        return judge(result)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# Apprise's findings reach us through AppriseResult and land in the delivery log; they
# must not also reach the root logger unredacted.
logging.getLogger("apprise").propagate = False
logging.getLogger("apprise").addHandler(logging.NullHandler())
