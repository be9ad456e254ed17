"""`relayhook silence add|list|expire`: mute matching messages for a while."""

from __future__ import annotations

import getpass
import json
import time
from datetime import datetime
from typing import Any

import click

from relayhook.cli.base import cli, config_option, fail, when, with_log
from relayhook.policy.silence import Matcher, parse_matcher
from relayhook.store.base import Store
from relayhook.text import units

__all__ = ["silence"]


@cli.group()
def silence() -> None:
    """Mute messages that match, until a set time (works while the daemon runs)."""


def _matchers(texts: tuple[str, ...]) -> list[Matcher]:
    if not texts:
        raise click.UsageError("give at least one matcher, such as event_type=meter_data.received")
    try:
        return [parse_matcher(text) for text in texts]
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _until(value: str) -> float:
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"'{value}' is not a time such as 2026-12-01T08:00 or 2026-12-01T08:00+01:00",
            param_hint="--until",
        ) from None
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()


@silence.command("add")
@click.argument("matcher_texts", nargs=-1, metavar="MATCHER...")
@click.option("--for", "duration", metavar="DURATION", help="How long, e.g. 2h.")
@click.option("--until", "until", metavar="TIME", help="Until when (ISO 8601; local time).")
@click.option("--comment", default="", help="Why (shown in `silence list`).")
@click.option("--author", default=None, help="Who (default: the user running this).")
@config_option
def add(
    matcher_texts: tuple[str, ...],
    duration: str | None,
    until: str | None,
    comment: str,
    author: str | None,
    config_path: str,
) -> None:
    """Mute messages matching every MATCHER: field=value, !=, =~ or !~ (a regex matches
    the whole value); fields source, event_type, rule, destination, payload.<path>,
    item.<path>. Prints the new silence's id."""
    matchers = _matchers(matcher_texts)
    if (duration is None) == (until is None):
        raise click.UsageError("give --for DURATION or --until TIME: a silence must end")
    now = time.time()
    if duration is not None:
        try:
            ends_at = now + units.parse_duration(duration)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--for") from None
    else:
        ends_at = _until(until or "")
    if ends_at <= now:
        raise click.BadParameter("the silence would end before it starts", param_hint="--until")
    who = author or getpass.getuser()

    async def run(store: Store) -> int:
        return await store.add_silence(matchers, now, ends_at, comment, who, now)

    silence_id, _ = with_log(config_path, run, create=True)
    click.echo(silence_id)


@silence.command("list")
@click.option("--all", "include_ended", is_flag=True, help="Ended silences too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@config_option
def list_(include_ended: bool, as_json: bool, config_path: str) -> None:
    """Silences in force (or all), newest first, with how many messages each held."""

    async def run(store: Store) -> list[dict[str, Any]]:
        return await store.list_silences(time.time(), include_ended)

    rows, redact = with_log(config_path, run)
    if as_json:
        for row in rows:
            click.echo(redact(json.dumps(row, ensure_ascii=False)))
        return
    if not rows:
        click.echo("no silences")
        return
    click.echo(f"{'ID':>4}  {'STATE':<7} {'ENDS':<19}  {'HELD':>5}  {'BY':<12} MATCHERS / COMMENT")
    for r in rows:
        click.echo(
            redact(
                f"{r['id']:>4}  {r['state']:<7} {when(r['ends_at']):<19}  {r['held']:>5}"
                f"  {r['author'][:12]:<12} {' '.join(r['matchers'])}"
                + (f"  # {r['comment']}" if r["comment"] else "")
            )
        )


@silence.command("expire")
@click.argument("silence_id", type=int, metavar="ID")
@config_option
def expire(silence_id: int, config_path: str) -> None:
    """End a silence now. It sends nothing by itself; `relayhook replay` can."""

    async def run(store: Store) -> bool:
        return await store.expire_silence(silence_id, time.time())

    done, _ = with_log(config_path, run)
    if not done:
        fail(f"no silence {silence_id} in force")
    click.echo(f"silence {silence_id} expired")
