"""The noise rules, stated once: what becomes of a new message, and of a group that falls due.

A message goes, in this order: failed (it did not render), silenced, held by its
throttle (past the limit of its window), folded into its rule's group, held for quiet
hours, or due now. A group is made by its first message, due `wait` after it (and at
least `interval` after the key's last group went); it takes every message of its key
until it is sent, or until it is full (`max`), when it goes as soon as the interval lets
it. A due group goes as a digest (as itself when it holds one message) unless quiet
hours hold it: then its messages join the quiet group of its rule and destination.

Pure: the caller reads the state a decision needs, asks here, and writes what it is told.
Both stores apply these decisions in their transactions (store/groups.py); the dry run
(`relayhook test --stored`) applies them to state it keeps in memory (route/fold.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from relayhook.model import DeliveryState, Message

__all__ = [
    "HELD_REASONS",
    "QUIET_KEY",
    "Hold",
    "Joined",
    "Placement",
    "Window",
    "after_send",
    "counts_throttle",
    "join",
    "needs_last",
    "not_before",
    "place",
    "quiet_hold",
    "shown_key",
    "throttle_key",
    "when_due",
]

HELD_REASONS = ("throttle", "quiet")  # groups named apart from the rule's keys ("throttle:K")
QUIET_KEY = "quiet:"  # the group quiet hours hold a rule's messages to a destination in


def throttle_key(key: str) -> str:
    """The group a throttle holds the messages past its limit in, for one of its keys."""
    return f"throttle:{key}"


def shown_key(key: str, reason: str) -> str:
    """A group's key as the user wrote it (a throttle's or quiet hours' group has a prefix)."""
    return key.partition(":")[2] if reason in HELD_REASONS else key


@dataclass(frozen=True, slots=True)
class Window:
    """A throttle key's window: when it started and how many messages it counted."""

    start: float
    count: int


@dataclass(frozen=True, slots=True)
class Hold:
    """The group a message waits in (by key), why, and how a new one of its key is timed."""

    key: str
    reason: str  # wait (a rule's group), throttle or quiet
    wait: float
    interval: float | None = None
    max: int | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    """What becomes of a new message: its state, the group it waits in (grouped), and
    its throttle's window as it is to be stored (when it has a throttle)."""

    state: DeliveryState
    hold: Hold | None = None
    window: Window | None = None


def counts_throttle(m: Message) -> bool:
    """Whether placing m reads and writes its throttle's window."""
    return m.error is None and m.silence_id is None and m.throttle is not None


def place(m: Message, now: float, window: Window | None = None) -> Placement:
    """Where m goes at now; `window` is its throttle key's stored window (None: none yet)."""
    if m.error:
        return Placement(DeliveryState.FAILED)
    if m.silence_id is not None:
        return Placement(DeliveryState.SILENCED)
    counted = None
    if m.throttle is not None:
        t = m.throttle
        # count 0: the store made the key's row to lock it, and nothing counted yet.
        if window is None or window.count == 0 or now >= window.start + t.per:
            counted = Window(now, 1)
        else:
            counted = Window(window.start, window.count + 1)
        if counted.count > t.limit:
            hold = Hold(throttle_key(t.key), "throttle", counted.start + t.per - now)
            return Placement(DeliveryState.GROUPED, hold, counted)
    if m.grouping is not None:
        g = m.grouping
        return Placement(
            DeliveryState.GROUPED, Hold(g.key, "wait", g.wait, g.interval, g.max), counted
        )
    if m.quiet_until is not None:
        return Placement(DeliveryState.GROUPED, quiet_hold(m.quiet_until, now), counted)
    return Placement(DeliveryState.PENDING, None, counted)


def quiet_hold(until: float, now: float) -> Hold:
    """The quiet group of a rule and destination, due when quiet hours end."""
    return Hold(QUIET_KEY, "quiet", max(0.0, until - now))


@dataclass(frozen=True, slots=True)
class Joined:
    """A group after a message joined it: its count, and its due time when that is set
    now (a new group, or one that is full), else None (unchanged)."""

    count: int
    due: float | None
    full: bool = False


def not_before(interval: float | None, last: float | None, due: float) -> float:
    """due, or later: `interval` after the key's last group went (or was set to go)."""
    return due if interval is None or last is None else max(due, last + interval)


def needs_last(hold: Hold, count: int | None) -> bool:
    """Whether joining a group of `count` (None: none yet) reads when the key's last
    group went: only a new or full group is timed, and only by an interval."""
    if hold.interval is None:
        return False
    return count is None or (hold.max is not None and count + 1 >= hold.max)


def join(hold: Hold, count: int | None, last: float | None, now: float) -> Joined:
    """A message joins its key's open group, which holds `count` (None: there is none,
    and this message makes it); `last` is when the key's last closed group went or is
    set to go (None when none did, or when hold has no interval)."""
    new = 1 if count is None else count + 1
    due = not_before(hold.interval, last, now + hold.wait) if count is None else None
    if hold.max is not None and new >= hold.max:
        # Full: it takes no more, and goes as soon as the interval allows.
        return Joined(new, not_before(hold.interval, last, now), full=True)
    return Joined(new, due)


def when_due(reason: str, quiet_until: float | None) -> float | None:
    """A due group goes now (None), unless quiet hours hold it: until when they end.
    The quiet group itself always goes."""
    return None if reason == "quiet" else quiet_until


def after_send(due: float, interval: float, sent_at: float) -> float:
    """A waiting group of a key whose group went at sent_at: it keeps its interval from
    then (a late send pushes it back), never from when the sent one was due."""
    return max(due, sent_at + interval)
