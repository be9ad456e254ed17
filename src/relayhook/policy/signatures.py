"""Who may send events: shared tokens and HMAC signatures (generic, GitHub, Stripe,
Standard Webhooks).

Every comparison is constant-time and runs over every configured secret, so neither
timing nor the answer tells which secret was close. A refusal names what was wrong
with the request, never the expected value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "AUTH_SCHEMES",
    "GithubAuth",
    "HmacAuth",
    "StandardWebhooksAuth",
    "StripeAuth",
    "TokenAuth",
    "Verifier",
    "bearer_token",
    "check_standard_secret",
    "standard_key",
]

_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


class Verifier(Protocol):
    """Checks one request; returns None when it may pass, else the reason it may not."""

    @property
    def secrets(self) -> tuple[str, ...]: ...

    def verify(
        self, raw: bytes, headers: Mapping[str, str], query: Mapping[str, str], now: float
    ) -> str | None: ...


def _any_equal(offered: Iterable[bytes], expected: Iterable[bytes]) -> bool:
    # No early exit: every pair is compared whatever matched before.
    ok = False
    wanted = list(expected)
    for candidate in offered:
        for value in wanted:
            ok |= hmac.compare_digest(candidate, value)
    return ok


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer ...` header value; empty when there is none."""
    return authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """A shared secret sent as ?token= or Authorization: Bearer; several allow rotation."""

    secrets: tuple[str, ...]

    def verify(
        self, raw: bytes, headers: Mapping[str, str], query: Mapping[str, str], now: float
    ) -> str | None:
        offered = query.get("token")
        if offered is None:
            offered = bearer_token(headers.get("authorization", ""))
        if not offered:
            return "missing token: send ?token=... or Authorization: Bearer ..."
        if _any_equal([offered.encode()], (s.encode() for s in self.secrets)):
            return None
        return "invalid token"


@dataclass(frozen=True, slots=True)
class HmacAuth:
    """An HMAC of the raw body in a header, optionally prefixed (sha256=...)."""

    secrets: tuple[str, ...]
    header: str
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""

    def _digests(self, message: bytes) -> list[bytes]:
        digests = []
        for secret in self.secrets:
            mac = hmac.new(secret.encode(), message, _ALGORITHMS[self.algorithm]).digest()
            text = mac.hex() if self.encoding == "hex" else base64.b64encode(mac).decode()
            digests.append((self.prefix + text).encode())
        return digests

    def verify(
        self, raw: bytes, headers: Mapping[str, str], query: Mapping[str, str], now: float
    ) -> str | None:
        offered = headers.get(self.header.lower())
        if not offered:
            return f"missing {self.header} header"
        candidate = offered.strip()
        if self.encoding == "hex":
            # Hex digests are case-insensitive; the prefix is compared as configured.
            head, body = candidate[: len(self.prefix)], candidate[len(self.prefix) :]
            candidate = head + body.lower()
        if _any_equal([candidate.encode()], self._digests(raw)):
            return None
        return f"{self.header} signature does not match"


def GithubAuth(secrets: tuple[str, ...]) -> HmacAuth:  # noqa: N802 - reads as a scheme
    """GitHub's X-Hub-Signature-256: sha256=<hex HMAC of the body>."""
    return HmacAuth(
        secrets, header="X-Hub-Signature-256", algorithm="sha256", encoding="hex", prefix="sha256="
    )


@dataclass(frozen=True, slots=True)
class StripeAuth:
    """Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">[,v1=...]."""

    secrets: tuple[str, ...]
    tolerance: float = 300.0

    def verify(
        self, raw: bytes, headers: Mapping[str, str], query: Mapping[str, str], now: float
    ) -> str | None:
        header = headers.get("stripe-signature")
        if not header:
            return "missing Stripe-Signature header"
        timestamp, signatures = None, []
        for part in header.split(","):
            key, _, value = part.strip().partition("=")
            if key == "t":
                timestamp = value
            elif key == "v1":
                signatures.append(value.strip().lower().encode())
        if timestamp is None or not timestamp.isdigit() or not signatures:
            return "malformed Stripe-Signature header: expected t=... and v1=..."
        age = now - int(timestamp)
        if age > self.tolerance:
            return f"Stripe-Signature timestamp is older than {self.tolerance:g} s"
        if age < -self.tolerance:
            return "Stripe-Signature timestamp is in the future"
        message = timestamp.encode() + b"." + raw
        expected = [
            hmac.new(s.encode(), message, hashlib.sha256).hexdigest().encode() for s in self.secrets
        ]
        if _any_equal(signatures, expected):
            return None
        return "Stripe-Signature does not match"


def standard_key(secret: str) -> bytes:
    """The key of a Standard Webhooks secret (base64, optionally prefixed whsec_)."""
    text = secret.removeprefix("whsec_")
    return base64.b64decode(text, validate=True)


@dataclass(frozen=True, slots=True)
class StandardWebhooksAuth:
    """Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature (v1,<base64>)."""

    secrets: tuple[str, ...]
    tolerance: float = 300.0

    def verify(
        self, raw: bytes, headers: Mapping[str, str], query: Mapping[str, str], now: float
    ) -> str | None:
        missing = [
            h
            for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
            if not headers.get(h)
        ]
        if missing:
            return f"missing {', '.join(missing)} header{'s' if len(missing) > 1 else ''}"
        msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"].strip()
        if not timestamp.isdigit():
            return "webhook-timestamp is not a number of seconds"
        age = now - int(timestamp)
        if age > self.tolerance:
            return f"webhook-timestamp is older than {self.tolerance:g} s"
        if age < -self.tolerance:
            return "webhook-timestamp is too far in the future"
        offered = []
        for entry in headers["webhook-signature"].split():
            version, _, signature = entry.partition(",")
            if version == "v1" and signature:
                offered.append(signature.encode())
        if not offered:
            return "webhook-signature has no v1 signature"
        message = f"{msg_id}.{timestamp}.".encode() + raw
        expected = [
            base64.b64encode(hmac.new(standard_key(s), message, hashlib.sha256).digest())
            for s in self.secrets
        ]
        if _any_equal(offered, expected):
            return None
        return "webhook-signature does not match"


AUTH_SCHEMES = ("token", "hmac", "github", "stripe", "standard_webhooks")


def check_standard_secret(secret: str) -> str | None:
    """Why a Standard Webhooks secret is unusable, or None."""
    try:
        key = standard_key(secret)
    except (binascii.Error, ValueError):
        return "standard_webhooks secret must be base64 (optionally prefixed whsec_)"
    return None if key else "standard_webhooks secret is empty"
