"""Quiet hours: the calendars, whether one is quiet at an instant and when quiet ends.

Windows are read in wall-clock time of each calendar's timezone and turned into instants
only at their ends, so "18:00 to 08:00" in Europe/London ends at 08:00 London time on the
days clocks change too. A window's start is inclusive, its end exclusive. One that ends
at or before its start crosses midnight: on each of its days it covers the morning up
to its end and the evening from its start, so `mon-fri 18:00-08:00` with `sat-sun` all
day is every night and the whole weekend.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo

__all__ = [
    "WEEKDAYS",
    "QuietHours",
    "QuietWindow",
    "always_quiet",
    "quiet_at",
    "quiet_until",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY = 86400
_HORIZON = 9  # days of window ends looked at; a calendar quiet longer is refused by check


@dataclass(frozen=True, slots=True)
class QuietWindow:
    """One line of a calendar: on these weekdays (0 is Monday), from start to end, in
    seconds after local midnight; with the end at or before the start, the morning up to
    the end and the evening from the start."""

    days: frozenset[int]
    start: int
    end: int

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A named `quiet_hours` calendar, read in wall-clock time of its timezone."""

    name: str
    timezone: str
    zone: tzinfo
    windows: tuple[QuietWindow, ...]


def quiet_at(cal: QuietHours, t: float) -> bool:
    """Whether cal is quiet at the instant t."""
    local = datetime.fromtimestamp(t, cal.zone)
    secs = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    day = local.weekday()
    for w in cal.windows:
        if day not in w.days:
            continue
        if w.crosses_midnight:
            if secs >= w.start or secs < w.end:
                return True
        elif w.start <= secs < w.end:
            return True
    return False


def _ends(cal: QuietHours, t: float) -> Iterator[float]:
    """The instants after t at which one of cal's windows ends, over the next days."""
    first = datetime.fromtimestamp(t, cal.zone).date() - timedelta(days=1)
    for offset in range(_HORIZON + 1):
        day = first + timedelta(days=offset)
        for w in cal.windows:
            if day.weekday() not in w.days:
                continue
            midnight = datetime.combine(day, time(), tzinfo=cal.zone)
            # Aware datetime arithmetic is wall-clock: these are local times of that day.
            ends = [midnight + timedelta(seconds=w.end)]
            if w.crosses_midnight:
                ends.append(midnight + timedelta(days=1))  # its evening part
            for end in ends:
                if end.timestamp() > t:
                    yield end.timestamp()


def quiet_until(calendars: Sequence[QuietHours], t: float) -> float | None:
    """When none of the calendars is quiet any more, or None when none is quiet at t.

    A set of calendars that is never free within the horizon holds until the last end
    seen: messages wait at most that long, never for ever.
    """
    if not any(quiet_at(c, t) for c in calendars):
        return None
    ends = sorted({e for c in calendars for e in _ends(c, t)})
    for end in ends:
        if not any(quiet_at(c, end) for c in calendars):
            return end
    return ends[-1] if ends else t + _HORIZON * _DAY


def always_quiet(cal: QuietHours) -> bool:
    """Whether cal leaves no moment of the week free (it would hold messages for ever)."""
    # Quiet at one moment and at every window end of the next days after it: had it a
    # free moment, the end of the window just before it would be free.
    monday = datetime(2024, 1, 1, tzinfo=cal.zone).timestamp()
    return quiet_at(cal, monday) and all(quiet_at(cal, end) for end in _ends(cal, monday))
