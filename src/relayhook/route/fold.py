"""What the noise stages would fold, replayed over stored events without a database.

The rules are policy/noise.py's, the same the stores apply; here they run over state
kept in memory: messages in the order their events came, each at its event's received
time, and the group stage sending each group the moment it falls due (as a running
daemon's does), so `relayhook test --stored` can say how many digests a rule would make
of them and for which keys.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from relayhook.config.settings import Config
from relayhook.model import DeliveryState, Message
from relayhook.policy import noise
from relayhook.policy.noise import QUIET_KEY, Hold, Window
from relayhook.policy.quiet import QuietHours, quiet_until
from relayhook.route.quiet import calendars_for, held

__all__ = ["Fold", "Folds", "Group"]


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
class Group:
    """A group as the store would hold it: its members are the events of its messages."""

    id: int
    rule: str
    destination: str
    key: str  # as stored (throttle:K, quiet:)
    reason: str  # wait, max (full), throttle or quiet
    due: float
    interval: float | None
    state: str = "open"  # open, full, sent
    sent_at: float | None = None
    members: list[int] = field(default_factory=list)


_Key = tuple[str, str, str]  # rule, destination, stored key


class Folds:
    """Messages in (`add`), the groups they would make out (`by_rule`, after `finish`)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._rules = {r.name: r for r in config.rules}
        self.groups: list[Group] = []  # every group made, oldest first
        self._open: dict[_Key, Group] = {}
        self._waiting: dict[_Key, list[Group]] = {}  # per key, the groups not sent
        self._sent_last: dict[_Key, float] = {}  # per key, when its last group went
        self._due_at: list[tuple[float, int]] = []  # heap of (due, group id); stale ones skipped
        self._windows: dict[_Key, Window] = {}
        self._folds: dict[_Key, Fold] = {}

    def add(self, m: Message, at: float, event_id: int = 0) -> None:
        """A message that rendered and no silence mutes, routed at `at`."""
        self.advance(at)
        m = held(self._config, self._rules, m, at)  # as the route stage marks it
        window = None
        if noise.counts_throttle(m):
            assert m.throttle is not None
            window = self._windows.get((m.rule, m.destination, m.throttle.key))
        placed = noise.place(m, at, window)
        if placed.window is not None:
            assert m.throttle is not None
            self._windows[(m.rule, m.destination, m.throttle.key)] = placed.window
        if placed.state is DeliveryState.GROUPED:
            assert placed.hold is not None
            self._join(m, placed.hold, at, event_id)

    def advance(self, now: float) -> None:
        """The group stage up to now: each group due by then goes (or is held for quiet
        hours) at the time it falls due, soonest first (then the oldest)."""
        while self._due_at and self._due_at[0][0] <= now:
            due, group_id = heapq.heappop(self._due_at)
            group = self.groups[group_id - 1]
            if group.state != "sent" and group.due == due:  # else moved on since pushed
                self._due(group)

    def finish(self) -> dict[str, list[Fold]]:
        """Every group sent (as each falls due): the folds of each rule."""
        self.advance(math.inf)
        by_rule: dict[str, list[Fold]] = {}
        for fold in self._folds.values():
            by_rule.setdefault(fold.rule, []).append(fold)
        return by_rule

    def _calendars(self, rule: str, destination: str) -> list[QuietHours]:
        return calendars_for(self._config, self._rules.get(rule), destination)

    def _join(self, m: Message, hold: Hold, at: float, event_id: int) -> None:
        k = (m.rule, m.destination, hold.key)
        group = self._open.get(k)
        count = None if group is None else len(group.members)
        last = self._last(k) if noise.needs_last(hold, count) else None
        joined = noise.join(hold, count, last, at)
        if group is None:
            assert joined.due is not None
            group = self._make(k, hold.reason, joined.due, hold.interval)
        group.members.append(event_id)
        if joined.full:
            assert joined.due is not None
            group.state, group.reason = "full", "max"
            self._time(group, joined.due)
            del self._open[k]

    def _make(self, k: _Key, reason: str, due: float, interval: float | None) -> Group:
        group = Group(len(self.groups) + 1, *k, reason, due, interval)
        self.groups.append(group)
        self._open[k] = group
        self._waiting.setdefault(k, []).append(group)
        heapq.heappush(self._due_at, (due, group.id))
        return group

    def _time(self, group: Group, due: float) -> None:
        """A waiting group's due time changed."""
        if due != group.due:
            group.due = due
            heapq.heappush(self._due_at, (due, group.id))

    def _last(self, k: _Key) -> float | None:
        """When the key's last closed group went, or is set to go (a full one)."""
        times = [g.due for g in self._waiting.get(k, ()) if g.state == "full"]
        if k in self._sent_last:
            times.append(self._sent_last[k])
        return max(times, default=None)

    def _due(self, group: Group) -> None:
        now = group.due
        k = (group.rule, group.destination, group.key)
        until = noise.when_due(group.reason, quiet_until(self._calendars(*k[:2]), now))
        group.state, group.sent_at = "sent", now
        self._waiting[k].remove(group)
        self._sent_last[k] = max(now, self._sent_last.get(k, now))
        if self._open.get(k) is group:
            del self._open[k]
        if until is not None:
            # Due in quiet hours: its messages wait for them to end in the quiet group.
            quiet = (group.rule, group.destination, QUIET_KEY)
            held = self._open.get(quiet) or self._make(quiet, "quiet", until, None)
            held.members = sorted(held.members + group.members)  # in arrival order
            group.members = []
            return
        for other in self._waiting[k]:
            if other.interval is not None:
                self._time(other, noise.after_send(other.due, other.interval, now))
        fold = self._folds.get(k)
        if fold is None:
            reason = "wait" if group.reason == "max" else group.reason  # max: a full group
            shown = noise.shown_key(group.key, reason)
            fold = self._folds[k] = Fold(group.rule, group.destination, shown, reason)
        fold.sizes.append(len(group.members))
