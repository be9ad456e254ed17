"""The native webhook destination: a plain HTTP request whose status decides what happens."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from relayhook.config.settings import WebhookDestination
from relayhook.model import TIMEOUT, Delivery, Outcome
from relayhook.policy.signatures import standard_key

__all__ = ["WebhookSender", "sign_standard_webhook"]

_ERROR_BYTES = 500


class WebhookSender:
    """A plain HTTP request with the rendered body; the status decides what happens next."""

    def __init__(self, dest: WebhookDestination) -> None:
        self.dest = dest
        self.min_interval = dest.min_interval or 0.0
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        pass  # the session starts with the first send

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.dest.timeout),
                connector=aiohttp.TCPConnector(limit=self.dest.concurrency),
            )
        return self._session

    async def send(self, delivery: Delivery) -> Outcome:
        # The delivery's id, the same on every retry and from every instance: a receiver
        # can drop a repeat (at least once means a send in flight at a crash may repeat).
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "relayhook",
            "X-Relayhook-Delivery": str(delivery.id),
        }
        headers.update(self.dest.headers)
        data = delivery.body.encode()
        if self.dest.sign is not None:
            message_id = f"relayhook-{delivery.id}"
            headers.update(sign_standard_webhook(self.dest.sign, message_id, data))
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
                    limited=response.status == 429,
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
    key = standard_key(secret)
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
