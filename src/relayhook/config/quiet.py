"""Reading `quiet_hours:` (named calendars) and the `quiet:` names that use them."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Collection
from typing import Any

from relayhook.config.keys import CALENDAR, WINDOW
from relayhook.config.reader import Reader, check_keys, did_you_mean, expect_map
from relayhook.config.yamlnodes import Problems, YMap
from relayhook.errors import kind_of
from relayhook.policy.quiet import WEEKDAYS, QuietHours, QuietWindow, always_quiet

__all__ = ["read_quiet_hours", "read_quiet_name"]

_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_DAY = 86400


def read_quiet_hours(top: YMap, problems: Problems) -> dict[str, QuietHours]:
    """Every calendar under the config's `quiet_hours`, checked."""
    if "quiet_hours" not in top:
        return {}
    node = expect_map(
        top["quiet_hours"], top.file, top.line_of("quiet_hours"), "quiet_hours", problems
    )
    calendars: dict[str, QuietHours] = {}
    for name, cnode in (node or {}).items():
        assert node is not None
        cal = _calendar(str(name), cnode, node.file, node.line_of(name), problems)
        if cal is not None:
            calendars[str(name)] = cal
    return calendars


def _calendar(name: str, node: Any, file: str, line: int, problems: Problems) -> QuietHours | None:
    where = f"quiet_hours '{name}'"
    cnode = expect_map(node, file, line, where, problems)
    if cnode is None:
        return None
    check_keys(cnode, CALENDAR.names, where, problems)
    r = Reader(cnode, where, problems)
    zone_name = r.string("timezone", required=True)
    zone = None
    if zone_name is not None:
        try:
            zone = zoneinfo.ZoneInfo(zone_name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            r.fail(
                "timezone",
                f"unknown timezone '{zone_name}', expected an IANA name such as Europe/London"
                + did_you_mean(zone_name, zoneinfo.available_timezones()),
            )
    times = cnode.get("times")
    if not isinstance(times, list) or not times:
        problems.add(
            cnode.file,
            cnode.line_of("times") if "times" in cnode else cnode.line,
            f"{where}: times must be a list of windows such as"
            ' {days: mon-fri, from: "18:00", to: "08:00"}'
            + (f", got {kind_of(times)}" if times is not None else ""),
        )
        return None
    windows = []
    for i, wnode in enumerate(times):
        label = f"{where}: times[{i}]"
        window = _window(wnode, cnode.file, cnode.line_of("times"), label, problems)
        if window is not None:
            windows.append(window)
    if zone is None or len(windows) != len(times):
        return None
    cal = QuietHours(name, zone_name or "", zone, tuple(windows))
    if always_quiet(cal):
        problems.add(
            cnode.file, cnode.line, f"{where}: is quiet all week, so nothing would ever be sent"
        )
        return None
    return cal


def _window(node: Any, file: str, line: int, where: str, problems: Problems) -> QuietWindow | None:
    wnode = expect_map(node, file, line, where, problems)
    if wnode is None:
        return None
    check_keys(wnode, WINDOW.names, where, problems)
    days = _days(wnode, where, problems)
    if ("from" in wnode) != ("to" in wnode):
        problems.add(
            wnode.file, wnode.line, f"{where}: give both from and to, or neither for whole days"
        )
        return None
    start, end = 0, _DAY
    if "from" in wnode:
        found_start = _clock(wnode, "from", where, problems)
        found_end = _clock(wnode, "to", where, problems)
        if found_start is None or found_end is None:
            return None
        start, end = found_start, found_end
        if start == _DAY:
            problems.add(wnode.file, wnode.line_of("from"), f"{where}: from: 24:00 is for to")
            return None
        if start == end % _DAY:
            problems.add(
                wnode.file,
                wnode.line,
                f"{where}: from and to are the same time; leave both out for whole days",
            )
            return None
    if days is None:
        return None
    return QuietWindow(days, start, end)


def _days(wnode: YMap, where: str, problems: Problems) -> frozenset[int] | None:
    """The weekdays of a window: 'mon-fri', 'sat', a list of names; all when absent."""
    if "days" not in wnode:
        return frozenset(range(7))
    value = wnode["days"]
    parts = value if isinstance(value, list) else [value]
    days: set[int] = set()
    for part in parts:
        text = str(part).strip().lower()
        ends = text.split("-", 1)
        bad = [e for e in ends if e not in WEEKDAYS]
        if bad or not isinstance(part, str):
            problems.add(
                wnode.file,
                wnode.line_of("days"),
                f"{where}: days: '{part}' is not a day or range of days; expected names"
                f" from {', '.join(WEEKDAYS)}, such as mon-fri or [sat, sun]"
                + (did_you_mean(bad[0], WEEKDAYS) if bad else ""),
            )
            return None
        first, last = WEEKDAYS.index(ends[0]), WEEKDAYS.index(ends[-1])
        # A range may wrap round the week: fri-mon is fri, sat, sun, mon.
        days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return frozenset(days)


def _clock(wnode: YMap, key: str, where: str, problems: Problems) -> int | None:
    """Seconds after midnight of "HH:MM" or "HH:MM:SS"; 24:00 ends a day."""
    value = wnode[key]
    line = wnode.line_of(key)
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 18:00 as the number 1080.
        problems.add(wnode.file, line, f'{where}: {key}: write the time in quotes, such as "18:00"')
        return None
    m = _CLOCK.fullmatch(str(value).strip())
    if m is None or isinstance(value, bool):
        problems.add(
            wnode.file, line, f'{where}: {key}: expected a time such as "18:00", got {value!r}'
        )
        return None
    hours, minutes, seconds = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    secs = hours * 3600 + minutes * 60 + seconds
    if minutes > 59 or seconds > 59 or secs > _DAY:
        problems.add(wnode.file, line, f"{where}: {key}: '{value}' is not a time of day")
        return None
    return secs


def read_quiet_name(
    node: YMap, where: str, calendars: Collection[str], problems: Problems
) -> str | None:
    """A `quiet:` naming a calendar of quiet_hours, checked to exist."""
    name = Reader(node, where, problems).string("quiet")
    if name is None:
        return None
    if name not in calendars:
        known = f"; quiet_hours has {', '.join(sorted(calendars))}" if calendars else ""
        problems.add(
            node.file,
            node.line_of("quiet"),
            f"{where}: quiet: no quiet_hours named '{name}'{did_you_mean(name, calendars)}"
            + (known if not did_you_mean(name, calendars) else ""),
        )
        return None
    return name
