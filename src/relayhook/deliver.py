"""Sending one attempt to one destination, and judging the outcome.

Each destination gets its own thread pool, sized to its concurrency, for apprise's
blocking send: apprise 2.x's async_notify runs every plugin in one shared pool of
min(32, cores + 4) threads, where a hanging destination would hold the threads that
every other destination needs. With a pool each, a destination that hangs only
delays itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import apprise

from relayhook.config import Destination

__all__ = ["Outcome", "Sender", "make_sender"]

# How much longer than our timeout apprise's socket may wait before its thread gives up.
_GRACE = 1.0
_ERROR_BYTES = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt went: delivered, or why not and whether to try again."""

    ok: bool
    error: str | None = None
    retry: bool = True
    timeout: bool = False
    retry_after: float | None = None

    @property
    def label(self) -> str:
        return "delivered" if self.ok else "timeout" if self.timeout else "failed"


TIMEOUT = Outcome(False, "timeout (may have been delivered)", retry=True, timeout=True)


class Sender(Protocol):
    min_interval: float  # seconds between the starts of two sends; 0 for none

    async def send(self, title: str, body: str, fmt: str, delivery_id: int) -> Outcome: ...

    async def close(self) -> None: ...


def _with_params(url: str, **params: str) -> str:
    """The URL with params added where the operator did not set them."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in params.items():
        query.setdefault(key, value)
    return urlunsplit(parts._replace(query=urlencode(query, safe="@,:/")))


class AppriseSender:
    """One Apprise object per destination, its own retries off: every try is ours."""

    def __init__(self, dest: Destination) -> None:
        self.dest = dest
        # Apprise reports its own read timeout as a plain connection error; letting ours
        # fire first keeps "timeout (may have been delivered)" honest. Its read timeout
        # still frees the thread soon after.
        params = {"retry": "0", "cto": f"{dest.timeout:g}", "rto": f"{dest.timeout + _GRACE:g}"}
        if dest.format:
            params["format"] = dest.format
        asset = apprise.AppriseAsset(async_mode=False)
        plugin = apprise.Apprise.instantiate(_with_params(dest.url, **params), asset=asset)
        if plugin is None:
            raise ValueError(f"apprise cannot use the URL of destination '{dest.name}'")
        # Apprise paces each service (Slack 1.2 s, email 5.5 s) by sleeping inside the send,
        # where it would count against our timeout; the scheduler paces instead.
        self.min_interval = (
            dest.min_interval
            if dest.min_interval is not None
            else float(plugin.request_rate_per_sec)
        )
        plugin.request_rate_per_sec = 0
        self._apprise = apprise.Apprise(asset=asset)
        self._apprise.add(plugin)
        self._pool = ThreadPoolExecutor(
            max_workers=dest.concurrency, thread_name_prefix=f"send-{dest.name}"
        )

    async def send(self, title: str, body: str, fmt: str, delivery_id: int) -> Outcome:
        body_format = fmt if fmt in ("text", "markdown", "html") else "text"
        call = partial(self._apprise.notify, body=body or " ", title=title, body_format=body_format)
        future = asyncio.get_running_loop().run_in_executor(self._pool, call)
        try:
            result = await asyncio.wait_for(asyncio.shield(future), self.dest.timeout)
        except TimeoutError:
            # The thread may still finish; its result no longer matters to this attempt.
            future.add_done_callback(lambda f: f.exception())
            return TIMEOUT
        if result:
            return Outcome(True)
        if result.timeout_count:
            return TIMEOUT
        messages = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
        return Outcome(False, "; ".join(messages) or f"apprise reported {result.status.name}")

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class WebhookSender:
    """A plain HTTP request with the rendered body; the status decides what happens next."""

    def __init__(self, dest: Destination) -> None:
        self.dest = dest
        self.min_interval = dest.min_interval or 0.0
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.dest.timeout),
                connector=aiohttp.TCPConnector(limit=self.dest.concurrency),
            )
        return self._session

    async def send(self, title: str, body: str, fmt: str, delivery_id: int) -> Outcome:
        headers = {"Content-Type": "application/json", "User-Agent": "relayhook"}
        headers.update(self.dest.headers)
        data = body.encode()
        if self.dest.sign is not None:
            headers.update(sign_standard_webhook(self.dest.sign, f"relayhook-{delivery_id}", data))
        try:
            async with self._client().request(
                self.dest.method,
                self.dest.url,
                data=data,
                headers=headers,
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return Outcome(True)
                text = (await response.content.read(_ERROR_BYTES)).decode(errors="replace")
                if 300 <= response.status < 400:
                    where = response.headers.get("Location", "?")
                    return Outcome(
                        False,
                        f"HTTP {response.status}: redirect to {where} not"
                        " followed; fix the destination URL",
                        retry=False,
                    )
                retry = response.status in (408, 425, 429) or response.status >= 500
                return Outcome(
                    False,
                    f"HTTP {response.status}: {text}".strip(),
                    retry=retry,
                    retry_after=_retry_after(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            return TIMEOUT
        except aiohttp.ClientError as e:
            return Outcome(False, f"{type(e).__name__}: {e}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def sign_standard_webhook(secret: str, message_id: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers for an outbound request, so receivers can verify us."""
    timestamp = str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    return None


def make_sender(dest: Destination) -> Sender:
    return WebhookSender(dest) if dest.kind == "webhook" else AppriseSender(dest)


# Apprise's findings reach us through AppriseResult and land in the delivery log; they
# must not also reach the root logger unredacted.
logging.getLogger("apprise").propagate = False
logging.getLogger("apprise").addHandler(logging.NullHandler())
