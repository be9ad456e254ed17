"""Keep secrets out of everything relayhook prints or stores."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

__all__ = ["CREDENTIAL_HEADERS", "MASK", "Redactor", "redact_url", "url_secrets"]

MASK = "***"
# Request headers that carry credentials: never stored with an event, never shown to templates.
CREDENTIAL_HEADERS = frozenset(
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
_SECRET_PARAM = re.compile(r"token|key|secret|pass|auth|sig|webhook|credential", re.I)
# A path segment that looks like a credential: long, or mixing letters and digits.
_TOKENISH = re.compile(r"^(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9_\-+=.~]{8,}$|^[A-Za-z0-9_\-+=.~]{24,}$")
_GENERIC = [
    (re.compile(r"(://[^/\s:@]*:)[^@\s/]+@"), r"\1" + MASK + "@"),
    (
        re.compile(
            r"([?&](?:token|access_token|api_key|apikey|key|secret|password)=)[^&\s\"']+", re.I
        ),
        r"\1" + MASK,
    ),
    (
        re.compile(
            r"((?:authorization|x-api-key)\s*[:=]\s*)(?:bearer\s+|basic\s+)?[^\s,\"']+", re.I
        ),
        r"\1" + MASK,
    ),
]


def url_secrets(url: str) -> set[str]:
    """The parts of a URL that are credentials: password, token-like path parts, secret params."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    if parts.password:
        found.add(parts.password)
    if (
        parts.username
        and parts.scheme not in {"mailto", "mailtos"}
        and _TOKENISH.match(parts.username)
    ):
        found.add(parts.username)
    for segment in parts.path.split("/"):
        if _TOKENISH.match(segment):
            found.add(segment)
    if parts.hostname and _TOKENISH.match(parts.hostname) and "." not in parts.hostname:
        # Schemes like slack://TOKENA/TOKENB put a credential where a host would be.
        found.add(parts.hostname)
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if _SECRET_PARAM.search(key) and value:
            found.add(value)
    return {s for s in found if len(s) >= 4}


def redact_url(url: str) -> str:
    """The URL with its credentials replaced by ***, fit to print."""
    secrets = url_secrets(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(":" + parts.password + "@", ":" + MASK + "@", 1)
    for secret in sorted(secrets, key=len, reverse=True):
        netloc = netloc.replace(secret, MASK)
    path = "/".join(MASK if seg in secrets else seg for seg in parts.path.split("/"))
    query = "&".join(
        f"{k}={MASK if v in secrets else quote(v, safe='@,:')}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


class Redactor:
    """Replaces known secret values, and anything shaped like a credential, with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first so a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, repl in _GENERIC:
            text = pattern.sub(repl, text)
        return text
