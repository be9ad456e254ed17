"""The rules on disk against stored events, beside what the rules in force made of them
(`relayhook test --stored`). Pure: pages of events and the log's counts in, a report out.

Both sides count the same unit, per event, rule and destination, so that rules unchanged
since the events were routed give equal numbers:

- send: messages that rendered and no silence muted. On the log's side, the messages
  routing stored in any other state (pending, retrying, delivered, dead, or folded into
  a group: an original message counts once, in its rule; a digest, a replay and a
  fallback are not messages a rule made, store/reads.py _MADE_SQL);
- silenced: muted by a silence (the dry run applies the silences in force now);
- errors: failed to render (the log's `failed` deliveries).

An event's outcome changed for a rule when the messages it makes (to send or silenced)
or its errors differ for any destination; silenced apart from sent alone is a silence
added or ended since, shown in the counts, not as a change of the rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relayhook.config.settings import Config
from relayhook.model import Event
from relayhook.policy.silence import Silence, facts_of, silencing
from relayhook.route.fold import Fold, Folds
from relayhook.route.match import RuleOutcome, route
from relayhook.store.base import Made, StoredEvent

__all__ = [
    "ERRORS",
    "SEND",
    "SILENCED",
    "Change",
    "Comparison",
    "RuleReport",
    "Tally",
    "outcomes_of",
    "short",
    "subject_of",
]

SEND, SILENCED, ERRORS = 0, 1, 2  # a tally's places
Tally = tuple[int, int, int]  # send, silenced, errors
_PLACE = {"silenced": SILENCED, "failed": ERRORS}  # any other state is a message to send


@dataclass(frozen=True, slots=True)
class Change:
    """One event whose outcome under one rule differs: each side's tally per destination."""

    event_id: int
    event_type: str
    subject: str  # what the event is about, e.g. "meter 65a7f544…"
    would: Mapping[str, Tally]
    made: Mapping[str, Tally]

    def total(self, side: Mapping[str, Tally], place: int) -> int:
        return sum(t[place] for t in side.values())


@dataclass(slots=True)
class RuleReport:
    """One rule: what it would make of the events, and what the log holds of it."""

    rule: str
    where: str | None  # file:line of the rule on disk; None: a rule only in the log
    matched: int = 0
    would_send: int = 0
    silenced: int = 0
    errors: int = 0
    sent: int = 0
    was_silenced: int = 0
    failed: int = 0
    folded: int = 0  # of sent: messages the log holds in groups (state grouped)
    first_error: tuple[int, str] | None = None  # event id, error
    changes: list[Change] = field(default_factory=list)
    folds: list[Fold] = field(default_factory=list)


def outcomes_of(config: Config, event: Event) -> list[RuleOutcome]:
    """Each rule's outcome for a stored event, as the daemon routes it (route.stage
    route_event): an event whose body cannot be read, or that routing raises on, makes
    nothing."""
    if event.error is not None:
        return []
    try:
        return route(config.rules, config.destinations, event, config.render_timeout)
    except Exception:  # noqa: BLE001 - the daemon keeps such an event as unrouted
        return []


class Comparison:
    """Pages of stored events in (`add`); per rule, both sides and what changed out."""

    def __init__(self, config: Config, silences: Sequence[Silence], now: float) -> None:
        self._config = config
        self._silences = list(silences)
        self._now = now
        self._reports = {r.name: RuleReport(r.name, r.where) for r in config.rules}
        self._folds = Folds(config)
        self.events = 0  # compared
        self.waiting = 0  # not routed yet: nothing to compare with, left out

    def add(self, page: Sequence[StoredEvent], made: Sequence[Made]) -> None:
        """A page of stored events, with what the log holds of them (Store.made_for)."""
        log: dict[int, dict[tuple[str, str], list[int]]] = {}
        for m in made:
            tally = log.setdefault(m.event_id, {}).setdefault((m.rule, m.destination), [0] * 3)
            tally[_PLACE.get(m.state, SEND)] += m.count
            if m.state == "grouped":
                self._report(m.rule).folded += m.count
        for stored in page:
            if stored.state == "received":
                self.waiting += 1
                continue
            self.events += 1
            self._compare(stored, log.get(stored.event.id, {}))

    def reports(self) -> list[RuleReport]:
        """Every rule on disk in order, then those only the log names; folds closed."""
        for rule, folds in self._folds.finish().items():
            self._report(rule).folds = folds
        on_disk = [r for r in self._reports.values() if r.where is not None]
        gone = sorted((r for r in self._reports.values() if r.where is None), key=_name)
        return on_disk + gone

    def _report(self, rule: str) -> RuleReport:
        found = self._reports.get(rule)
        if found is None:
            found = self._reports[rule] = RuleReport(rule, None)
        return found

    def _compare(self, stored: StoredEvent, log: dict[tuple[str, str], list[int]]) -> None:
        event = stored.event
        would: dict[tuple[str, str], list[int]] = {}
        items: dict[str, list[tuple[int, Any]]] = {}  # per rule: each message's place, item
        for o in outcomes_of(self._config, event):
            if not o.matched:
                continue
            report = self._report(o.rule.name)
            report.matched += 1
            if o.error and report.first_error is None:
                report.first_error = (event.id, o.error)
            for m in o.messages:
                if m.error is not None:
                    place = ERRORS
                elif self._silences and silencing(self._silences, facts_of(event, m), self._now):
                    place = SILENCED
                else:
                    place = SEND
                    self._folds.add(m, event.received_at, event.id)
                would.setdefault((m.rule, m.destination), [0] * 3)[place] += 1
                items.setdefault(m.rule, []).append((place, m.item))
        for (rule, _), t in would.items():
            report = self._report(rule)
            report.would_send += t[SEND]
            report.silenced += t[SILENCED]
            report.errors += t[ERRORS]
        for (rule, _), t in log.items():
            report = self._report(rule)
            report.sent += t[SEND]
            report.was_silenced += t[SILENCED]
            report.failed += t[ERRORS]
        for rule in dict.fromkeys([r for r, _ in would] + [r for r, _ in log]):
            mine = {d: _tally(t) for (r, d), t in would.items() if r == rule}
            theirs = {d: _tally(t) for (r, d), t in log.items() if r == rule}
            if _made(mine) != _made(theirs):
                item = _changed_item(mine, theirs, items.get(rule, []))
                subject = subject_of(event, stored.key, item)
                change = Change(event.id, event.event_type, subject, mine, theirs)
                self._report(rule).changes.append(change)


def _changed_item(
    mine: Mapping[str, Tally], theirs: Mapping[str, Tally], items: list[tuple[int, Any]]
) -> Any:
    """The item of the first message in a place the dry run has more of (a new message, a
    newly silenced or failing one), else of its first message: what the change is about."""
    more = {
        place
        for place in (SEND, SILENCED, ERRORS)
        if sum(t[place] for t in mine.values()) > sum(t[place] for t in theirs.values())
    }
    found = next((item for place, item in items if place in more), None)
    return found if found is not None else next((item for _, item in items), None)


def _made(side: Mapping[str, Tally]) -> dict[str, tuple[int, int]]:
    """Per destination, the messages a rule made (to send or silenced) and its errors: a
    silence added or ended since the events were routed is not the rules' doing."""
    return {d: (t[SEND] + t[SILENCED], t[ERRORS]) for d, t in side.items()}


def _tally(t: list[int]) -> Tally:
    return t[0], t[1], t[2]


def _name(report: RuleReport) -> str:
    return report.rule


def subject_of(event: Event, key: str, item: Any = None) -> str:
    """What an event is about, for people: the first `…_id` field of its item, else of its
    (first) payload, else its dedupe key; long values cut short ("meter 65a7f544…")."""
    body = event.body
    payload = body.get("payload") if isinstance(body, Mapping) else None
    first = payload[0] if isinstance(payload, list) and payload else payload
    for node in (item, first):
        if not isinstance(node, Mapping):
            continue
        for name, value in node.items():
            named = name == "id" or name.endswith("_id")
            if named and isinstance(value, str | int) and not isinstance(value, bool):
                return f"{name.removesuffix('_id') or 'id'} {short(str(value))}"
    return f"key {short(key)}"


def short(text: str) -> str:
    """A long id cut to its first 8 characters, as people tell ids apart."""
    return text if len(text) <= 12 else text[:8] + "…"
