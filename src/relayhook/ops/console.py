"""`console://`: an apprise destination that prints each message to the daemon's output.

For trying relayhook out (the example config falls back to it when no chat or email URL
is set, so `make run` shows what it would send) and for watching a rule's output while
editing it. Registered with apprise's documented custom-notification decorator, which
also converts HTML and Markdown bodies to text for it.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from apprise.decorators import notify

__all__ = ["SCHEMA"]

SCHEMA = "console"
_lock = threading.Lock()  # one message at a time, never two interleaved


def _print(body: str, title: str, notify_type: str, *args: Any, **kwargs: Any) -> bool:
    rule = "─" * 60
    lines = [f"── relayhook: {notify_type} {rule}"[:64]]
    if title:
        lines.append(title)
    lines.extend([body, rule[:64]])
    with _lock:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    return True


# apprise's decorator is untyped; registering by calling it keeps _print typed.
notify(on=SCHEMA, name="relayhook console", body_format="text")(_print)  # type: ignore[no-untyped-call]
