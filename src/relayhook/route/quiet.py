"""Quiet hours in the route: the calendars that hold a message, and the messages they hold."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from relayhook.config.settings import Config, Rule
from relayhook.model import Event, Message, Routing
from relayhook.policy.quiet import QuietHours, quiet_until

__all__ = ["calendars_for", "held", "hold_quiet", "mark_quiet"]


def calendars_for(config: Config, rule: Rule | None, destination: str) -> list[QuietHours]:
    """The calendars that hold a message of rule (None: a rule no longer in the config)
    to destination: the rule's and the destination's, none for an urgent rule."""
    if rule is not None and rule.urgent:
        return []
    names = [rule.quiet if rule is not None else None]
    dest = config.destinations.get(destination)
    names.append(dest.quiet if dest is not None else None)
    return [config.quiet_hours[n] for n in dict.fromkeys(names) if n is not None]


def hold_quiet(config: Config, routings: list[Routing], now: float) -> list[Routing]:
    """The routings with each message that quiet hours hold now marked with when they end
    (the store then holds it for one digest per rule and destination)."""
    if not config.quiet_hours:
        return routings
    rules = {r.name: r for r in config.rules}
    return [
        Routing(r.event_id, tuple(held(config, rules, m, now) for m in r.messages))
        for r in routings
    ]


def held(config: Config, rules: Mapping[str, Rule], m: Message, now: float) -> Message:
    """m, marked with when quiet hours end if they hold it now (a message that failed or a
    silence muted waits for nothing)."""
    if m.error is not None or m.silence_id is not None or not config.quiet_hours:
        return m
    until = quiet_until(calendars_for(config, rules.get(m.rule), m.destination), now)
    return m if until is None else dataclasses.replace(m, quiet_until=until)


async def mark_quiet(
    config: Config, events: Mapping[int, Event], routings: Sequence[Routing], now: float
) -> list[Routing]:
    """hold_quiet as a mark of the route stage (the events are not needed)."""
    return hold_quiet(config, list(routings), now)
