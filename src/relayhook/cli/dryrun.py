"""`relayhook test`: which rules an event matches and what they would send; with
`--stored`, the rules on disk against stored events (cli/stored.py)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import click

from relayhook.cli.base import cli, config_option, fail, indent, load, with_log
from relayhook.cli.stored import DEFAULT_SINCE, test_stored
from relayhook.config.settings import Config
from relayhook.errors import EventError
from relayhook.model import Event
from relayhook.policy.quiet import quiet_at, quiet_until
from relayhook.policy.silence import Silence, facts_of, silencing
from relayhook.receive.parse import event_type_of, parse_body
from relayhook.route.match import RuleOutcome, iso_time, route
from relayhook.route.quiet import calendars_for
from relayhook.store.base import Store
from relayhook.store.open import log_exists

__all__ = ["test_command"]


def _parse_headers(values: tuple[str, ...]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(
                f"expected 'Name: value', got {value!r}", param_hint="--header"
            )
        headers[name.strip().lower()] = content.strip()
    return headers


@cli.command("test")
@click.argument("event_file", type=click.File("rb"), metavar="[EVENT.json]", required=False)
@click.option(
    "--source",
    "source_name",
    metavar="NAME",
    help="Source the event comes from (may be left out when only one is configured).",
)
@click.option(
    "--header",
    "header_values",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="A request header, for sources that read the type or key from one. Repeatable.",
)
@click.option(
    "--stored",
    is_flag=True,
    help="Instead of EVENT.json: run the rules on disk against events in the delivery log,"
    " beside what the rules in force made of them.",
)
@click.option(
    "--since",
    metavar="DURATION",
    help=f"With --stored: events received this recently (default {DEFAULT_SINCE}).",
)
@click.option(
    "--event",
    "event_ids",
    type=int,
    multiple=True,
    metavar="ID",
    help="With --stored: this stored event, by id. Repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@config_option
def test_command(
    event_file: Any,
    source_name: str | None,
    header_values: tuple[str, ...],
    stored: bool,
    since: str | None,
    event_ids: tuple[int, ...],
    as_json: bool,
    config_path: str,
) -> None:
    """Dry run: which rules EVENT.json matches and what they would send ('-' reads stdin).

    With --stored instead: per rule, what the rules on disk (edited, not yet reloaded)
    would make of stored events beside what the log holds, and which events changed.
    Sends nothing and writes nothing. Exit 1 when a rule fails to render.
    """
    _check_usage(event_file, stored, since, event_ids, source_name, header_values)
    if stored:
        test_stored(config_path, since, event_ids, as_json)
        return
    headers = _parse_headers(header_values)
    config = load(config_path)
    if source_name is None:
        if len(config.sources) != 1:
            names = ", ".join(sorted(config.sources)) or "none"
            raise click.UsageError(
                f"--source is needed: {len(config.sources)} sources are configured ({names})"
            )
        source_name = next(iter(config.sources))
    source = config.sources.get(source_name)
    if source is None:
        raise click.BadParameter(
            f"unknown source '{source_name}' (configured: {', '.join(sorted(config.sources))})",
            param_hint="--source",
        )
    raw = event_file.read()
    try:
        body = parse_body(raw)
        event_type = event_type_of(source, body, headers)
    except EventError as e:
        fail(f"{event_file.name}: {e.message}")
    event = Event(
        id=0,
        source=source_name,
        event_type=event_type,
        received_at=time.time(),
        headers=headers,
        body=body,
    )
    outcomes = route(config.rules, config.destinations, event, config.render_timeout)
    noise = _Noise(_silenced(config, event, outcomes), _quiet(config, outcomes, event.received_at))
    redact = config.redactor
    if as_json:
        report = _as_json(event, outcomes, noise)
        click.echo(redact(json.dumps(report, indent=2, ensure_ascii=False)))
    else:
        click.echo(redact(_as_text(event, outcomes, noise)))
    if any(o.error for o in outcomes):
        sys.exit(1)


def _check_usage(
    event_file: Any,
    stored: bool,
    since: str | None,
    event_ids: tuple[int, ...],
    source_name: str | None,
    header_values: tuple[str, ...],
) -> None:
    if stored and event_file is not None:
        raise click.UsageError("give EVENT.json or --stored, not both")
    if not stored and event_file is None:
        raise click.UsageError(
            "give EVENT.json ('-' reads stdin), or --stored for the events in the delivery log"
        )
    if not stored and (since is not None or event_ids):
        raise click.UsageError("--since and --event go with --stored")
    if since is not None and event_ids:
        raise click.UsageError("give --since or --event, not both")
    if stored and (source_name is not None or header_values):
        raise click.UsageError("--source and --header go with EVENT.json, not --stored")


@dataclass(frozen=True, slots=True)
class _Noise:
    """What the noise stages would do to each message, by the message's id()."""

    muted: dict[int, Silence]
    quiet: dict[int, tuple[list[str], float]]  # calendars quiet now, and when they end


def _quiet(
    config: Config, outcomes: list[RuleOutcome], now: float
) -> dict[int, tuple[list[str], float]]:
    found = {}
    for o in outcomes:
        for m in o.messages:
            calendars = calendars_for(config, o.rule, m.destination)
            until = quiet_until(calendars, now) if m.error is None else None
            if until is not None:
                found[id(m)] = ([c.name for c in calendars if quiet_at(c, now)], until)
    return found


def _silenced(config: Config, event: Event, outcomes: list[RuleOutcome]) -> dict[int, Silence]:
    """The silence in force (in the config's database, when there is one) that would mute
    each message, by the message's id()."""
    if not log_exists(config.database):
        return {}

    async def read(store: Store) -> list[Silence]:
        return await store.active_silences(time.time())

    silences, _ = with_log(config.path, read)
    if not silences:
        return {}
    found = {}
    for o in outcomes:
        for m in o.messages:
            silence = (
                silencing(silences, facts_of(event, m), time.time()) if m.error is None else None
            )
            if silence is not None:
                found[id(m)] = silence
    return found


def _as_json(event: Event, outcomes: list[RuleOutcome], noise: _Noise) -> dict[str, Any]:
    muted, quiet = noise.muted, noise.quiet
    return {
        "source": event.source,
        "event_type": event.event_type,
        "rules": [
            {
                "name": o.rule.name,
                "file": o.rule.file,
                "line": o.rule.line,
                "matched": o.matched,
                "reason": o.reason,
                "error": o.error,
                "items": o.items,
                "messages": [
                    {
                        "destination": m.destination,
                        "item": m.item_index,
                        "title": m.title,
                        "body": m.body,
                        "format": m.format,
                        "severity": m.severity,
                        "silenced_by": muted[id(m)].id if id(m) in muted else None,
                        "group": m.grouping.key if m.grouping is not None else None,
                        "throttle": m.throttle.key if m.throttle is not None else None,
                        "quiet_until": iso_time(quiet[id(m)][1]) if id(m) in quiet else None,
                        "error": m.error,
                    }
                    for m in o.messages
                ],
            }
            for o in outcomes
        ],
    }


def _as_text(event: Event, outcomes: list[RuleOutcome], noise: _Noise) -> str:
    muted, quiet = noise.muted, noise.quiet
    lines = [f"event {event.event_type} from source {event.source}"]
    matched = sum(o.matched and not o.error for o in outcomes)
    for o in outcomes:
        head = f"rule {o.rule.name} ({o.rule.where}):"
        if not o.matched:
            lines.append(f"  - {head} no: {o.reason}")
            continue
        if o.error and not any(m.error is None for m in o.messages):
            lines.append(f"  ! {head} ERROR: {o.error}")
            continue
        items = f", {o.items} item{'s' if o.items != 1 else ''}" if o.items is not None else ""
        lines.append(f"  + {head} matched{items}")
        for m in o.messages:
            label = f"[item {m.item_index + 1}/{o.items}] " if m.item_index is not None else ""
            if m.error:
                lines.append(f"      {label}-> {m.destination}: ERROR: {m.error}")
                continue
            lines.append(f"      {label}-> {m.destination} ({m.format}, {m.severity})")
            if id(m) in muted:
                silence = muted[id(m)]
                matchers = " ".join(str(x) for x in silence.matchers)
                lines.append(f"          silenced by silence {silence.id}: {matchers}")
            if id(m) not in muted and m.throttle is not None:
                t = m.throttle
                lines.append(
                    f"          throttled: key {t.key!r}, {t.limit} per {t.per:g}s;"
                    " past that, held for one digest at the window's end"
                )
            if id(m) in muted:
                pass
            elif m.grouping is not None:
                g = m.grouping
                lines.append(
                    f"          grouped: key {g.key!r}, waits {g.wait:g}s for company"
                    + (f", at most {g.max} a digest" if g.max else "")
                    + (f", one digest per {g.interval:g}s" if g.interval else "")
                )
            if id(m) not in muted and id(m) in quiet:
                names, until = quiet[id(m)]
                lines.append(
                    f"          quiet hours ({', '.join(names)}) until {iso_time(until)}:"
                    " held for one digest then, unless a group or throttle holds it longer"
                )
            lines.append(f"          title: {m.title}")
            lines.append("          body:")
            lines.append(indent(m.body, "            "))
    errors = sum(bool(o.error) for o in outcomes)
    messages = sum(m.error is None and id(m) not in muted for o in outcomes for m in o.messages)
    lines.append(
        f"{matched} of {len(outcomes)} rules matched"
        + (f", {errors} with errors" if errors else "")
        + f"; {messages} message{'s' if messages != 1 else ''} would be sent"
        + (f", {len(muted)} silenced" if muted else "")
    )
    return "\n".join(lines)
