"""`relayhook test --stored`: the rules on disk against events in the delivery log, beside
what the rules in force made of them (route/compare.py); reads the log, writes nothing."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from relayhook.cli.base import fail, load, when, with_log
from relayhook.route.compare import (
    ERRORS,
    SEND,
    SILENCED,
    Change,
    Comparison,
    RuleReport,
    Tally,
    short,
)
from relayhook.route.match import iso_time
from relayhook.store.base import Store, StoredEvent
from relayhook.text import units

__all__ = ["DEFAULT_SINCE", "test_stored"]

DEFAULT_SINCE = "24h"
_PAGE = 500  # events read, routed and compared at a time
_LISTED = 20  # changed events the text lists per rule (--json lists them all)
_KEYS = 5  # group keys the text names per rule


def test_stored(
    config_path: str, since: str | None, event_ids: tuple[int, ...], as_json: bool
) -> None:
    """Compare and print; exit 1 when an id is unknown or a rule fails to render."""
    try:
        window = units.parse_duration(since or DEFAULT_SINCE)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    config = load(config_path)
    now = time.time()
    start = now - window

    async def compare(store: Store) -> tuple[Comparison, list[int]]:
        comparison = Comparison(config, await store.active_silences(now), now)
        if event_ids:
            found = await store.events_by_id(event_ids)
            missing = sorted(set(event_ids) - {s.event.id for s in found})
            if missing:
                return comparison, missing
            for at in range(0, len(found), _PAGE):
                await _add(store, comparison, found[at : at + _PAGE])
        else:
            async for page in store.events_since(start, _PAGE):
                await _add(store, comparison, page)
        return comparison, []

    (comparison, missing), redact = with_log(config_path, compare)
    if missing:
        fail(f"no stored event with id {', '.join(map(str, missing))}")
    reports = comparison.reports()
    scope = (
        f"asked for by id ({len(event_ids)})"
        if event_ids
        else f"received since {when(start)} (the last {since or DEFAULT_SINCE})"
    )
    if as_json:
        report = as_dict(comparison, reports, None if event_ids else start)
        click.echo(redact(json.dumps(report, indent=2, ensure_ascii=False)))
    else:
        click.echo(redact(as_text(comparison, reports, scope)))
    if any(r.errors for r in reports):
        sys.exit(1)


async def _add(store: Store, comparison: Comparison, page: Sequence[StoredEvent]) -> None:
    routed = [s.event.id for s in page if s.state != "received"]
    comparison.add(page, await store.made_for(routed) if routed else [])


def _changed(reports: Sequence[RuleReport]) -> list[int]:
    return sorted({c.event_id for r in reports for c in r.changes})


def as_dict(
    comparison: Comparison, reports: Sequence[RuleReport], since: float | None
) -> dict[str, Any]:
    """The --json object: DESIGN.md's keys, and more beside them."""
    return {
        "events": comparison.events,
        "not_routed_yet": comparison.waiting,
        "since": None if since is None else iso_time(since),
        "rules": [_rule_dict(r) for r in reports],
        "changed": _changed(reports),
        "difference": bool(_changed(reports)),
    }


def _tallies(side: Mapping[str, Tally]) -> dict[str, dict[str, int]]:
    return {
        d: {"send": t[SEND], "silenced": t[SILENCED], "errors": t[ERRORS]}
        for d, t in sorted(side.items())
    }


def _rule_dict(r: RuleReport) -> dict[str, Any]:
    return {
        "rule": r.rule,
        "where": r.where,
        "matched": r.matched,
        "would_send": r.would_send,
        "sent": r.sent,
        "errors": r.errors,
        "silenced": r.silenced,
        "was_silenced": r.was_silenced,
        "failed": r.failed,
        "folded": r.folded,
        "first_error": None
        if r.first_error is None
        else {"event": r.first_error[0], "error": r.first_error[1]},
        "changed": [c.event_id for c in r.changes],
        "changes": [
            {
                "event": c.event_id,
                "event_type": c.event_type,
                "about": c.subject,
                "would": _tallies(c.would),
                "made": _tallies(c.made),
            }
            for c in r.changes
        ],
        "folds": [
            {
                "destination": f.destination,
                "key": f.key,
                "reason": f.reason,
                "messages": sum(f.sizes),
                "groups": len(f.sizes),
                "digests": f.digests,
            }
            for f in r.folds
        ],
    }


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def as_text(comparison: Comparison, reports: Sequence[RuleReport], scope: str) -> str:
    n = comparison.events
    head = f"{n} stored event{_s(n)} {scope}"
    if comparison.waiting:
        head += f"; {comparison.waiting} not routed yet, left out"
    lines = [head]
    for r in reports:
        summary = _summary(r.changes)
        lines.append(
            f"rule {r.rule}{'' if r.where else ' (not in the rules on disk)'}:"
            f" would send {r.would_send}, sent {r.sent}" + (f"; {summary}" if summary else "")
        )
        lines += _details(r, n)
    changed = _changed(reports)
    if not changed:
        lines.append("no difference")
    else:
        listed = ", ".join(map(str, changed[:_LISTED])) + (", …" if len(changed) > _LISTED else "")
        lines.append(f"{len(changed)} event{_s(len(changed))} changed: {listed}")
    return "\n".join(lines)


def _details(r: RuleReport, events: int) -> list[str]:
    facts = []
    if r.matched or r.errors:
        facts.append(f"matched {r.matched} of {events} events")
    if r.errors and r.first_error is not None:
        event_id, error = r.first_error
        facts.append(f"{r.errors} render error{_s(r.errors)}, first: event {event_id}: {error}")
    if r.silenced or r.was_silenced:
        facts.append(f"{r.silenced} silenced now, {r.was_silenced} in the log")
    if r.failed and not r.errors:
        facts.append(f"{r.failed} failed to render in the log")
    lines = [f"    {'; '.join(facts)}"] if facts else []
    for c in r.changes[:_LISTED]:
        lines.append(f"    event {c.event_id} ({c.event_type}, {c.subject}): {_versus(c)}")
    if len(r.changes) > _LISTED:
        lines.append(f"    … and {len(r.changes) - _LISTED} more (--json lists them all)")
    fold = _folding(r)
    if fold:
        lines.append(f"    {fold}")
    return lines


def _versus(c: Change) -> str:
    # Destinations named only when both sides have some and they differ (`to` changed).
    moved = bool(c.would) and bool(c.made) and set(c.would) != set(c.made)
    return f"{_side(c, c.would, 'would send', moved)}, {_side(c, c.made, 'sent', moved)}"


def _side(c: Change, side: Mapping[str, Tally], verb: str, moved: bool) -> str:
    text = f"{verb} {c.total(side, SEND)}"
    extra = []
    if c.total(c.would, SILENCED) or c.total(c.made, SILENCED):
        extra.append(f"{c.total(side, SILENCED)} silenced")
    if c.total(c.would, ERRORS) or c.total(c.made, ERRORS):
        extra.append(f"{c.total(side, ERRORS)} failing to render")
    if moved and side:
        extra.append("to " + ", ".join(sorted(side)))
    return text + (f" ({', '.join(extra)})" if extra else "")


def _made(c: Change, side: Mapping[str, Tally]) -> int:
    return c.total(side, SEND) + c.total(side, SILENCED) + c.total(side, ERRORS)


def _muted(c: Change, side: Mapping[str, Tally]) -> int:
    return c.total(side, SILENCED)


def _failing(c: Change, side: Mapping[str, Tally]) -> int:
    return c.total(side, ERRORS)


# How a change reads: (more on the dry run's side, fewer, what is counted).
_WHAT = (
    ("new", "gone", _made),
    ("silenced now", "no longer silenced", _muted),
    ("failing now", "no longer failing", _failing),
)


def _summary(changes: Sequence[Change]) -> str:
    """What changed, in a few words: '2 new for meter 65a7f544…'."""
    found: dict[str, dict[str, int]] = {}  # what: {subject: messages}
    for c in changes:
        moved = True
        for more, fewer, count in _WHAT:
            delta = count(c, c.would) - count(c, c.made)
            if delta:
                moved = False
                what = more if delta > 0 else fewer
                subjects = found.setdefault(what, {})
                subjects[c.subject] = subjects.get(c.subject, 0) + abs(delta)
        if moved:
            subjects = found.setdefault("to other destinations", {})
            subjects[c.subject] = subjects.get(c.subject, 0) + c.total(c.would, SEND)
    phrases = []
    for what, subjects in found.items():
        total = sum(subjects.values())
        if len(subjects) == 1:
            phrases.append(f"{total} {what} for {next(iter(subjects))}")
            continue
        named = [f"{s} ({k})" for s, k in list(subjects.items())[:3]]
        phrases.append(f"{total} {what}: {', '.join(named)}{', …' if len(subjects) > 3 else ''}")
    return "; ".join(phrases)


def _folding(r: RuleReport) -> str:
    """'would fold into 3 digests: key 65a7f544… (5), …', and how many messages the log
    holds in groups (folded into digests, or waiting)."""
    folds = sorted((f for f in r.folds if f.digests), key=lambda f: -f.folded)
    digests = sum(f.digests for f in folds)
    if not digests and not r.folded:
        return ""
    several = len({f.destination for f in folds}) > 1
    named = []
    for f in folds[:_KEYS]:
        label = {"throttle": f"throttle key {short(f.key)}", "quiet": "quiet hours"}.get(
            f.reason, f"key {short(f.key)}"
        )
        size = f"{f.folded}" if f.digests == 1 else f"{f.folded} in {f.digests}"
        named.append(f"{label}{f' to {f.destination}' if several else ''} ({size})")
    more = ", …" if len(folds) > _KEYS else ""
    text = (
        f"would fold into {digests} digest{_s(digests)}: {', '.join(named)}{more}"
        if digests
        else "would fold nothing into digests"
    )
    return text + f"; the log has {r.folded} in groups"
