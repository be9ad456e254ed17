"""Routing: which rules an event matches, and the messages each one renders.

Pure and synchronous, shared by `relayhook test` and the daemon, so a dry run
shows exactly what serving would send. The daemon calls it off the event loop
(route.stage), and both give each rule the same time budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jinja2

from relayhook.config.settings import SEVERITIES, AppriseDestination, Destination, Rule
from relayhook.errors import kind_of
from relayhook.model import Event, Grouping, Message, Throttling
from relayhook.ops.redact import CREDENTIAL_HEADERS
from relayhook.route.budget import RenderTimeout, budget
from relayhook.text.escape import Escaper, Family, escaper_for
from relayhook.text.templating import ESCAPE, describe_error

__all__ = ["RuleOutcome", "context_of", "escapers", "iso_time", "route"]


def context_of(event: Event) -> dict[str, Any]:
    """The names every template of the event sees."""
    body = event.body
    return {
        "event": body,
        "payload": body.get("payload") if isinstance(body, Mapping) else None,
        "event_type": event.event_type,
        "source": event.source,
        "received_at": iso_time(event.received_at),
        "headers": {k: v for k, v in event.headers.items() if k.lower() not in CREDENTIAL_HEADERS},
    }


@dataclass(slots=True)
class RuleOutcome:
    """What one rule made of an event: matched or why not, and its messages."""

    rule: Rule
    matched: bool
    reason: str
    messages: list[Message] = field(default_factory=list)
    items: int | None = None
    error: str | None = None


def _severity(rule: Rule, ctx: dict[str, Any]) -> str:
    value = rule.severity.render(ctx).strip()
    if value not in SEVERITIES:
        raise ValueError(f"severity gave '{value}', not one of {', '.join(SEVERITIES)}")
    return value


def _render_for(
    rule: Rule,
    dest: Destination | None,
    dest_name: str,
    ctx: dict[str, Any],
    index: int | None,
) -> Message:
    """One message: data escaped for this destination and format, then shaped by it."""
    fmt = rule.format
    title_escape, body_escape = escapers(dest, fmt)
    try:
        severity = _severity(rule, ctx)
        title = (
            rule.title.render({**ctx, ESCAPE: title_escape}).strip()
            if rule.title is not None
            else ""
        )
        body = rule.body.render({**ctx, ESCAPE: body_escape}).strip()
        if dest is not None:
            context = {**ctx, "rule": rule.name, "severity": severity}
            body, fmt = dest.shape(title, body, fmt, context)
        grouping = _grouping(rule, ctx)
        throttle = _throttling(rule, ctx)
    except Exception as e:  # noqa: BLE001 - any template failure is the rule's, never the relay's
        return Message(rule.name, dest_name, index, "", "", rule.format, error=describe_error(e))
    return Message(
        rule.name,
        dest_name,
        index,
        title,
        body,
        fmt,
        severity=severity,
        item=ctx.get("item"),
        grouping=grouping,
        throttle=throttle,
    )


def escapers(dest: Destination | None, fmt: str) -> tuple[Escaper | None, Escaper | None]:
    """How data is escaped in the title and in the body of a message of format fmt to
    dest (a rule's message or a group's digest alike)."""
    family = dest.escaping() if dest is not None else Family.OTHER
    sent_as = dest.format if isinstance(dest, AppriseDestination) else None
    return (
        escaper_for(family, fmt, sent_as=sent_as, title=True),
        escaper_for(family, fmt, sent_as=sent_as),
    )


def _key(template: jinja2.Template | None, ctx: dict[str, Any]) -> str:
    return template.render(ctx).strip() if template is not None else ""


def _throttling(rule: Rule, ctx: dict[str, Any]) -> Throttling | None:
    throttle = rule.throttle
    if throttle is None:
        return None
    return Throttling(_key(throttle.key, ctx), throttle.limit, throttle.per)


def _grouping(rule: Rule, ctx: dict[str, Any]) -> Grouping | None:
    group = rule.group
    if group is None:
        return None
    return Grouping(_key(group.key, ctx), group.wait, group.interval, group.max)


def _failed(rule: Rule, error: str) -> list[Message]:
    return [Message(rule.name, d, None, "", "", rule.format, error=error) for d in rule.to]


def route(
    rules: Iterable[Rule],
    destinations: Mapping[str, Destination],
    event: Event,
    render_timeout: float | None = None,
) -> list[RuleOutcome]:
    """Every rule's outcome for the event, in order, stopping after a matched `stop` rule.

    With render_timeout, each rule that gets as far as its `when` has that many seconds
    for it, its `for_each` and its templates; past them it fails alone.
    """
    outcomes: list[RuleOutcome] = []
    base: dict[str, Any] | None = None  # built for the first rule that gets this far
    stopped_by: str | None = None
    for rule in rules:
        if stopped_by is not None:
            outcomes.append(
                RuleOutcome(rule, False, f"not evaluated: rule '{stopped_by}' has stop: true")
            )
            continue
        if not rule.matches_type(event.event_type):
            outcomes.append(
                RuleOutcome(
                    rule, False, f"event type '{event.event_type}' does not match '{rule.event}'"
                )
            )
            continue
        if rule.source is not None and rule.source != event.source:
            outcomes.append(
                RuleOutcome(rule, False, f"source '{event.source}' is not '{rule.source}'")
            )
            continue
        if base is None:
            base = context_of(event)
        if render_timeout is None:
            outcome = _evaluate(rule, destinations, base)
        else:
            outcome = _within(render_timeout, rule, destinations, base)
        outcomes.append(outcome)
        if outcome.matched and rule.stop:
            stopped_by = rule.name
    return outcomes


def _within(
    seconds: float, rule: Rule, destinations: Mapping[str, Destination], base: dict[str, Any]
) -> RuleOutcome:
    try:
        with budget(seconds):
            return _evaluate(rule, destinations, base)
    except RenderTimeout:
        error = f"rule '{rule.name}' took longer than render_timeout ({seconds:g}s) to render"
        return RuleOutcome(rule, True, error, _failed(rule, error), error=error)


def _evaluate(
    rule: Rule, destinations: Mapping[str, Destination], base: dict[str, Any]
) -> RuleOutcome:
    for check in rule.when:
        try:
            ok = check.fn(**base)
        except Exception as e:  # noqa: BLE001 - a broken condition fails its rule only
            error = f"when `{check.text}` failed: {describe_error(e)}"
            return RuleOutcome(rule, True, error, _failed(rule, error), error=error)
        if not ok:
            return RuleOutcome(rule, False, f"when `{check.text}` was false")
    if rule.for_each is None:
        contexts: list[tuple[int | None, dict[str, Any]]] = [(None, base)]
    else:
        try:
            items = rule.for_each.fn(**base)
        except Exception as e:  # noqa: BLE001
            error = f"for_each `{rule.for_each.text}` failed: {describe_error(e)}"
            return RuleOutcome(rule, True, error, _failed(rule, error), error=error)
        if not isinstance(items, list | tuple):
            error = f"for_each `{rule.for_each.text}` gave {kind_of(items)}, not a list"
            return RuleOutcome(rule, True, error, _failed(rule, error), error=error)
        contexts = [
            (i, {**base, "item": item, "item_number": i + 1, "item_count": len(items)})
            for i, item in enumerate(items)
        ]
    messages = [
        _render_for(rule, destinations.get(name), name, ctx, index)
        for index, ctx in contexts
        for name in rule.to
    ]
    errors = [m.error for m in messages if m.error]
    outcome = RuleOutcome(
        rule, True, "matched", messages, items=None if rule.for_each is None else len(contexts)
    )
    if errors:
        outcome.error = errors[0]
        outcome.reason = f"render error: {errors[0]}"
    return outcome


def iso_time(ts: float) -> str:
    """A Unix time as templates see it: ISO 8601 UTC with milliseconds and Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
