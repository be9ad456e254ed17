"""What the noise stages would fold, replayed over stored events without a database.

The store folds messages as it saves them (throttle, then group, then quiet hours; see
store/sqlite/groups.py) and the group stage sends each group when it falls due. Here
the same rules run in memory over messages in the order their events came, each at its
event's received time, so `relayhook test --stored` can say how many digests a rule
would make of them and for which keys. Groups close when a later message finds them
due, or at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relayhook.config.settings import Config
from relayhook.model import Grouping, Message
from relayhook.policy.quiet import QuietHours, quiet_until
from relayhook.route.quiet import calendars_for
from relayhook.store.rows import QUIET_KEY, shown_key, throttle_key

__all__ = ["Fold", "Folds"]


@dataclass(slots=True)
class Fold:
    """The groups of one key of one rule to one destination: each group's size."""

    rule: str
    destination: str
    key: str  # as the user wrote it (a throttle's or quiet hours' prefix taken off)
    reason: str  # wait (a rule's group), throttle or quiet
    sizes: list[int] = field(default_factory=list)

    @property
    def digests(self) -> int:
        """Groups of more than one message: a group of one goes as that message."""
        return sum(size > 1 for size in self.sizes)

    @property
    def folded(self) -> int:
        return sum(size for size in self.sizes if size > 1)


@dataclass(slots=True)
class _Open:
    count: int
    due: float
    reason: str


_Key = tuple[str, str, str]  # rule, destination, stored key


class Folds:
    """Messages in, the groups they would make out (`by_rule`, after `finish`)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._rules = {r.name: r for r in config.rules}
        self._open: dict[_Key, _Open] = {}
        self._last: dict[_Key, float] = {}  # when each key's last group went
        self._windows: dict[_Key, tuple[float, int]] = {}  # throttle: start, count
        self._folds: dict[_Key, Fold] = {}

    def add(self, m: Message, at: float) -> None:
        """A message that rendered and no silence mutes, routed at `at`."""
        if m.error is not None or m.silence_id is not None:
            return
        if m.throttle is not None:
            t = m.throttle
            k = (m.rule, m.destination, t.key)
            start, count = self._windows.get(k, (at, 0))
            if at >= start + t.per:
                start, count = at, 0
            self._windows[k] = (start, count + 1)
            if count + 1 > t.limit:
                hold = Grouping(throttle_key(t.key), start + t.per - at, None, None)
                self._join(m, hold, at, "throttle")
                return
        if m.grouping is not None:
            self._join(m, m.grouping, at, "wait")
            return
        until = quiet_until(self._calendars(m.rule, m.destination), at)
        if until is not None:
            self._join(m, Grouping(QUIET_KEY, until - at, None, None), at, "quiet")

    def finish(self) -> dict[str, list[Fold]]:
        """Every group closed (as if each had fallen due): the folds of each rule."""
        while self._open:  # soonest due first: one may go on into the quiet group
            self._close(min(self._open, key=lambda k: self._open[k].due))
        by_rule: dict[str, list[Fold]] = {}
        for fold in self._folds.values():
            by_rule.setdefault(fold.rule, []).append(fold)
        return by_rule

    def _calendars(self, rule: str, destination: str) -> list[QuietHours]:
        return calendars_for(self._config, self._rules.get(rule), destination)

    def _join(self, m: Message, g: Grouping, at: float, reason: str) -> None:
        k = (m.rule, m.destination, g.key)
        group = self._open.get(k)
        if group is not None and group.due <= at:
            self._close(k)
            group = None
        if group is None:
            group = self._open[k] = _Open(0, self._not_before(k, g, at + g.wait), reason)
        group.count += 1
        if g.max is not None and group.count >= g.max:
            # Full: it goes as soon as the interval lets it, and the next one starts.
            group.due = self._not_before(k, g, at)
            self._close(k)

    def _not_before(self, k: _Key, g: Grouping, due: float) -> float:
        last = self._last.get(k)
        return due if g.interval is None or last is None else max(due, last + g.interval)

    def _close(self, k: _Key) -> None:
        group = self._open.pop(k)
        rule, destination, key = k
        if group.reason != "quiet":
            # Due in quiet hours, it waits for them to end in the quiet group instead.
            until = quiet_until(self._calendars(rule, destination), group.due)
            if until is not None:
                quiet = (rule, destination, QUIET_KEY)
                held = self._open.get(quiet)
                if held is not None and held.due <= group.due:
                    self._close(quiet)
                    held = None
                if held is None:
                    held = self._open[quiet] = _Open(0, until, "quiet")
                held.count += group.count
                return
        self._last[k] = group.due
        fold = self._folds.get(k)
        if fold is None:
            reason = "wait" if group.reason == "max" else group.reason  # max: a full group
            fold = self._folds[k] = Fold(rule, destination, shown_key(key, reason), reason)
        fold.sizes.append(group.count)
