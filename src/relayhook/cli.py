"""The `relayhook` command: the edge where errors become messages and exit codes.

Exit codes: 0 ok, 1 problems found, 2 usage error.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from datetime import datetime
from typing import Any, NoReturn

import click

from relayhook import deliverylog as dl
from relayhook import store
from relayhook.config import DEFAULT_CONFIG_PATH, Config, load_config
from relayhook.errors import ConfigError, EventError
from relayhook.ingest import event_type_of, parse_body
from relayhook.redact import Redactor
from relayhook.router import InboundEvent, RuleOutcome, route
from relayhook.units import parse_duration
from relayhook.yamlfile import Problems, load_yaml

__all__ = ["main"]

config_option = click.option(
    "--config",
    "config_path",
    envvar="RELAYHOOK_CONFIG",
    default=DEFAULT_CONFIG_PATH,
    show_default=True,
    metavar="FILE",
    help="Config file (default: $RELAYHOOK_CONFIG or /etc/relayhook/relayhook.yaml).",
)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def _load(config_path: str) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as e:
        for problem in e.problems:
            click.echo(str(problem), err=True)
        n = len(e.problems)
        _fail(f"{n} problem{'s' if n != 1 else ''} found")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="relayhook")
def cli() -> None:
    """relayhook: turn webhooks into Slack messages, emails and other notifications."""


@cli.command()
@click.option("--listen", metavar="HOST:PORT", help="Address to serve on (overrides the config).")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Least severe log lines shown.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "text"]),
    default="auto",
    show_default=True,
    help="auto: JSON lines unless stdout is a terminal.",
)
@config_option
def serve(listen: str | None, log_level: str, log_format: str, config_path: str) -> None:
    """Run the relay daemon: SIGHUP reloads, SIGTERM drains and exits."""
    import dataclasses

    from relayhook.config import parse_listen
    from relayhook.daemon import serve as run

    config = _load(config_path)
    if listen is not None:
        try:
            host, port = parse_listen(listen)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--listen") from None
        config = dataclasses.replace(config, listen_host=host, listen_port=port)
    run(config, log_level, {"auto": None, "json": True, "text": False}[log_format])


@cli.command()
@config_option
def check(config_path: str) -> None:
    """Validate the config, rules and templates without sending anything."""
    config = _load(config_path)
    click.echo(f"{config.summary()}: OK")


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
@click.argument("event_file", type=click.File("rb"), metavar="EVENT.json")
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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@config_option
def test_command(
    event_file: Any,
    source_name: str | None,
    header_values: tuple[str, ...],
    as_json: bool,
    config_path: str,
) -> None:
    """Dry run: which rules EVENT.json matches and what they would send ('-' reads stdin).

    Sends nothing and writes nothing.
    """
    headers = _parse_headers(header_values)
    config = _load(config_path)
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
        _fail(f"{event_file.name}: {e.message}")
    event = InboundEvent(
        source=source_name,
        event_type=event_type,
        body=body,
        headers=headers,
        received_at=time.time(),
    )
    outcomes = route(config.rules, config.destinations, event)
    redact = config.redactor
    if as_json:
        click.echo(redact(json.dumps(_as_json(event, outcomes), indent=2, ensure_ascii=False)))
    else:
        click.echo(redact(_as_text(event, outcomes)))
    if any(o.error for o in outcomes):
        sys.exit(1)


def _as_json(event: InboundEvent, outcomes: list[RuleOutcome]) -> dict[str, Any]:
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
                        "error": m.error,
                    }
                    for m in o.messages
                ],
            }
            for o in outcomes
        ],
    }


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines()) if text else prefix + "(empty)"


def _as_text(event: InboundEvent, outcomes: list[RuleOutcome]) -> str:
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
            lines.append(f"      {label}-> {m.destination} ({m.format})")
            lines.append(f"          title: {m.title}")
            lines.append("          body:")
            lines.append(_indent(m.body, "            "))
    errors = sum(bool(o.error) for o in outcomes)
    messages = sum(m.error is None for o in outcomes for m in o.messages)
    lines.append(
        f"{matched} of {len(outcomes)} rules matched"
        + (f", {errors} with errors" if errors else "")
        + f"; {messages} message{'s' if messages != 1 else ''} would be sent"
    )
    return "\n".join(lines)


def main() -> None:
    cli(prog_name="relayhook")


# -- the delivery log ---------------------------------------------------------------------


def _database(config_path: str) -> tuple[sqlite3.Connection, Redactor]:
    """The delivery log named by the config, even when the rest of the config is broken."""
    try:
        config = load_config(config_path)
        path, redactor = config.database, config.redactor
    except ConfigError as e:
        problems = Problems()
        raw = load_yaml(config_path, problems, os.environ)
        database = raw.get("database") if isinstance(raw, dict) else None
        if not isinstance(database, str):
            for problem in e.problems:
                click.echo(str(problem), err=True)
            _fail("cannot find the database: the config has problems")
        path = os.path.normpath(os.path.join(os.path.dirname(config_path), database))
        redactor = Redactor()
        click.echo(f"warning: {len(e.problems)} config problems (see relayhook check)", err=True)
    if not os.path.exists(path):
        _fail(f"{path}: no database yet (relayhook serve creates it)")
    store.migrate(path)
    return store.connect(path), redactor


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return time.time() - parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


@cli.command()
@click.option("--status", type=click.Choice(dl.STATES), help="Only deliveries in this state.")
@click.option("--rule", help="Only deliveries of this rule.")
@click.option("--destination", help="Only deliveries to this destination.")
@click.option(
    "--since", metavar="DURATION", help="Only deliveries created this recently (e.g. 1h)."
)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@config_option
def deliveries(
    status: str | None,
    rule: str | None,
    destination: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
    config_path: str,
) -> None:
    """List deliveries, newest first (works while the daemon runs)."""
    since_ts = _since(since)
    conn, redact = _database(config_path)
    rows = dl.list_deliveries(
        conn, state=status, rule=rule, destination=destination, since=since_ts, limit=limit
    )
    if as_json:
        for row in rows:
            click.echo(redact(json.dumps(row, ensure_ascii=False)))
        return
    if not rows:
        click.echo("no deliveries")
        return
    click.echo(
        f"{'ID':>6}  {'STATE':<9} {'TRIES':>5}  {'CREATED':<19}  {'RULE':<22} "
        f"{'DESTINATION':<16} ERROR"
    )
    for r in rows:
        error = (r["last_error"] or "")[:60]
        click.echo(
            redact(
                f"{r['id']:>6}  {r['state']:<9} {r['attempts']:>5}  {_when(r['created_at']):<19}  "
                f"{r['rule'][:22]:<22} {r['destination'][:16]:<16} {error}"
            )
        )


@cli.command()
@click.argument("delivery_id", type=int, metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@config_option
def show(delivery_id: int, as_json: bool, config_path: str) -> None:
    """One delivery: its event, the rendered message and every attempt."""
    conn, redact = _database(config_path)
    d = dl.get_delivery(conn, delivery_id)
    if d is None:
        _fail(f"no delivery {delivery_id}")
    if as_json:
        click.echo(redact(json.dumps(d, indent=2, ensure_ascii=False)))
        return
    e = d["event"]
    lines = [
        f"delivery {d['id']}: {d['state']} after {d['attempts']} attempt(s)"
        + (f" (replay of {d['replay_of']})" if d["replay_of"] else ""),
        f"  rule         {d['rule']}"
        + (f" (item {d['item_index'] + 1})" if d["item_index"] is not None else ""),
        f"  destination  {d['destination']}",
        f"  next attempt {_when(d['next_attempt_at'])}"
        if d["state"] in ("pending", "retrying")
        else "",
        f"  last error   {d['last_error']}" if d["last_error"] else "",
        f"event {e['id']}: {e['event_type']} from {e['source']}, key {e['event_key']},"
        f" received {_when(e['received_at'])} ({e['state']})",
        _indent(_pretty(e["body"]), "  "),
        f"message ({d['format']})",
        f"  title: {d['title']}",
        "  body:",
        _indent(d["body"], "    "),
        "attempts" if d["attempts_log"] else "no attempts yet",
    ]
    for a in d["attempts_log"]:
        lines.append(
            f"  #{a['number']} {_when(a['started_at'])} {a['duration_ms']:.0f} ms {a['outcome']}"
            + (f": {a['error']}" if a["error"] else "")
        )
    click.echo(redact("\n".join(line for line in lines if line)))


def _pretty(body: str) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body


@cli.command()
@click.argument("delivery_ids", type=int, nargs=-1, metavar="[ID]...")
@click.option("--dead", is_flag=True, help="Replay every dead delivery (with --since).")
@click.option("--since", metavar="DURATION", help="With --dead: those that died this recently.")
@config_option
def replay(delivery_ids: tuple[int, ...], dead: bool, since: str | None, config_path: str) -> None:
    """Queue delivered or dead deliveries again, as new deliveries linked to the originals."""
    if bool(delivery_ids) == dead:
        raise click.UsageError("give delivery IDs, or --dead (optionally with --since)")
    if since is not None and not dead:
        raise click.UsageError("--since goes with --dead")
    since_ts = _since(since) if since else 0.0
    conn, _ = _database(config_path)
    with store.transaction(conn):
        ids = list(delivery_ids) if delivery_ids else dl.dead_since(conn, since_ts or 0.0)
        made = dl.replay(conn, ids, time.time())
    for original, new in made:
        click.echo(f"delivery {original} queued again as {new}")
    skipped = sorted(set(ids) - {o for o, _ in made})
    if skipped:
        _fail(f"not replayed (unknown, or not delivered/dead): {', '.join(map(str, skipped))}")
    if not made:
        click.echo("nothing to replay")


@cli.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="DURATION",
    help="Remove finished events and their deliveries older than this (e.g. 30d).",
)
@config_option
def prune(older_than: str, config_path: str) -> None:
    """Delete old finished work; pending and retrying deliveries are never touched."""
    try:
        age = parse_duration(older_than)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--older-than") from None
    conn, _ = _database(config_path)
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    before = os.path.getsize(path)
    cutoff = time.time() - age
    totals = [0, 0, 0]
    while True:
        with store.transaction(conn):
            done = dl.prune(conn, cutoff)
        if done is None:
            break
        totals = [a + b for a, b in zip(totals, done, strict=True)]
    store.shrink(conn)
    after = os.path.getsize(path)
    click.echo(
        f"pruned {totals[0]} events, {totals[1]} deliveries, {totals[2]} attempts;"
        f" database {before:,} -> {after:,} bytes"
    )
