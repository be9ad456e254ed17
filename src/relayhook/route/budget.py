"""A time budget for one rule's templates: past it, the rule's rendering is stopped.

Templates are Python running inside our process, and the sandbox bounds sizes
(`range()` to 100,000 items, repeated strings), not time: two nested `range(100000)`
loops run for hours. A thread cannot be killed, but CPython can raise an exception in
one (`PyThreadState_SetAsyncExc`), and pure-Python code such as a Jinja template sees
it within a few bytecodes. A single watch thread does that for every thread inside a
budget whose deadline has passed, once per budget.

A render thread that burns CPU also holds the interpreter lock for CPython's whole switch
interval (5 ms) each time it gets it, and an ack needs the lock a dozen times: measured,
acks went from a 6-11 ms p99 to 84-150 ms while one template rendered. So while any
budget has run past _SLOW, the watch shortens the switch interval, and puts it back when
none has: the event loop then gets the lock within a fraction of a millisecond.

The exception can only land between entering a budget and leaving it: the watch raises
it while holding the lock and only for a budget still open, and leaving takes the lock,
closes the budget and clears an exception raised but not yet seen.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from dataclasses import dataclass

__all__ = ["RenderTimeout", "budget"]

_TICK = 0.05  # how often the watch looks at the open budgets
_SLOW = 0.05  # a render running this long gets the short switch interval
_SHORT_SWITCH = 0.0002  # seconds


class RenderTimeout(BaseException):
    """A rule ran past its render budget.

    A BaseException, like KeyboardInterrupt: it arrives from outside, and the `except
    Exception` that turns a template error into a message must not swallow it.
    """


@dataclass(slots=True)
class _Open:
    deadline: float
    started: float = 0.0
    fired: bool = False


_lock = threading.Lock()
_open: dict[int, _Open] = {}  # thread id -> its open budget
_watch: threading.Thread | None = None


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


def _watch_loop() -> None:
    normal = sys.getswitchinterval()
    short = False
    while True:
        time.sleep(_TICK)
        now = time.monotonic()
        with _lock:
            slow = False
            for thread_id, entry in _open.items():
                slow = slow or (not entry.fired and now - entry.started > _SLOW)
                if not entry.fired and entry.deadline <= now:
                    entry.fired = True
                    _raise_in(thread_id, RenderTimeout)
        if slow != short:
            sys.setswitchinterval(_SHORT_SWITCH if slow else normal)
            short = slow


def _ensure_watch() -> None:
    global _watch
    if _watch is None or not _watch.is_alive():
        _watch = threading.Thread(target=_watch_loop, name="relayhook-render-watch", daemon=True)
        _watch.start()


class budget:  # noqa: N801 - used as `with budget(2.0):`
    """Raise RenderTimeout in this thread once the block has run for `seconds`.

    Budgets do not nest; one thread has at most one open at a time.
    """

    __slots__ = ("_entry", "_seconds", "_thread_id")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._thread_id = threading.get_ident()
        self._entry = _Open(0.0)

    def __enter__(self) -> None:
        self._entry.started = time.monotonic()
        self._entry.deadline = self._entry.started + self._seconds
        with _lock:
            _ensure_watch()
            _open[self._thread_id] = self._entry

    def __exit__(self, *exc: object) -> None:
        with _lock:
            if _open.get(self._thread_id) is self._entry:
                del _open[self._thread_id]
            if self._entry.fired:
                _raise_in(self._thread_id, None)  # raised, perhaps not seen yet: never later
