"""The systemd notify protocol: READY, RELOADING, STOPPING and watchdog pings.

Twenty lines over an AF_UNIX datagram socket need no dependency. Without
$NOTIFY_SOCKET (not under systemd, or Type=simple) every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier"]


class Notifier:
    """Sends sd_notify messages to $NOTIFY_SOCKET, if there is one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_interval: float | None = None
        self._stopping = False
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # systemd's advice: ping at half the timeout.
            self.watchdog_interval = int(usec) / 2_000_000

    def send(self, *fields: str) -> bool:
        if not self._address:
            return False
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(self._address)
            sock.sendall("\n".join(fields).encode())
            return True
        return False

    def ready(self, status: str = "serving") -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=reloading")

    def stopping(self) -> bool:
        """Once per process: a signal and the way out both announce it."""
        if self._stopping:
            return False
        self._stopping = True
        return self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")
