"""One daemon per database file: an exclusive lock held for the daemon's life.

Event ids are handed out in process and in-flight work is known in memory only, so a
second daemon on the same file would answer every event 503 and send the first one's
deliveries again. The kernel drops the lock when the process dies, SIGKILL included, so
a crash never leaves a stale lock. The CLI reads and replays without taking it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from relayhook.store.base import StoreBusy

__all__ = ["DaemonLock"]


class DaemonLock:
    """`<database>.lock`, locked with flock and holding the owner's pid."""

    def __init__(self, database: str) -> None:
        self.path = database + ".lock"
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise StoreBusy(
                f"{database} is in use by another relayhook daemon ({who}); one daemon"
                " serves a database file: stop that one, or give this one another database"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None
