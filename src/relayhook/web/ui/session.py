"""Sessions of the web pages: a signed cookie naming a session kept in memory, and a CSRF
token bound to it.

The signature's key is derived from the admin token, so rotating `admin_token` ends every
session at once; logging out ends one; a restart ends all (they live in memory, which is
what an admin page for one daemon needs). A session lasts 12 hours.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable

from relayhook.policy.networks import Network, address_allowed

__all__ = ["COOKIE", "LIFETIME", "Sessions", "came_over_https"]

COOKIE = "relayhook_session"
LIFETIME = 12 * 3600.0


def _key(admin_token: str, purpose: str) -> bytes:
    return hmac.new(admin_token.encode(), f"relayhook-ui:{purpose}".encode(), "sha256").digest()


def _sign(admin_token: str, purpose: str, value: str) -> str:
    return hmac.new(_key(admin_token, purpose), value.encode(), hashlib.sha256).hexdigest()


class Sessions:
    """The sessions in force: id → when it ends."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._ends: dict[str, float] = {}

    def start(self, admin_token: str) -> str:
        """A new session; the cookie value that names it."""
        now = self.clock()
        self._ends = {sid: end for sid, end in self._ends.items() if end > now}
        sid = secrets.token_urlsafe(24)
        self._ends[sid] = now + LIFETIME
        return f"{sid}.{_sign(admin_token, 'session', sid)}"

    def find(self, admin_token: str | None, cookie: str | None) -> str | None:
        """The session a cookie names, if it is signed with this admin token and in force."""
        if not admin_token or not cookie:
            return None
        sid, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature, _sign(admin_token, "session", sid)):
            return None
        end = self._ends.get(sid)
        if end is None or end <= self.clock():
            return None
        return sid

    def end(self, sid: str) -> None:
        self._ends.pop(sid, None)

    @staticmethod
    def csrf(admin_token: str, sid: str) -> str:
        """The CSRF token of a session: every form of its pages carries it."""
        return _sign(admin_token, "csrf", sid)[:40]

    @classmethod
    def csrf_ok(cls, admin_token: str, sid: str, offered: str | None) -> bool:
        return bool(offered) and hmac.compare_digest(str(offered), cls.csrf(admin_token, sid))


def came_over_https(
    scheme: str, peer: str | None, forwarded_proto: str | None, trusted: Iterable[Network]
) -> bool:
    """Whether the browser spoke https: directly, or to a trusted proxy that says so."""
    if scheme == "https":
        return True
    return forwarded_proto == "https" and address_allowed(peer, trusted)
