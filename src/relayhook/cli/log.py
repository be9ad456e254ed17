"""The delivery log from the command line: deliveries, show, replay, prune.

Each works beside a running daemon (WAL lets both read and write at once).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from relayhook.cli.base import cli, config_option, fail, indent, when, with_log
from relayhook.model import DeliveryState
from relayhook.store.base import PruneResult, Store
from relayhook.text import units

__all__ = ["deliveries", "prune", "replay", "show"]

STATES = [state.value for state in DeliveryState]


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return units.since(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None


@cli.command()
@click.option("--status", type=click.Choice(STATES), help="Only deliveries in this state.")
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

    async def read(store: Store) -> list[dict[str, Any]]:
        return await store.list_deliveries(
            state=status, rule=rule, destination=destination, since=since_ts, limit=limit
        )

    rows, redact = with_log(config_path, read)
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
        if r["state"] == "grouped" and r.get("digest_id"):
            error = f"in digest {r['digest_id']}" if r["digest_id"] != r["id"] else ""
        click.echo(
            redact(
                f"{r['id']:>6}  {r['state']:<9} {r['attempts']:>5}  {when(r['created_at']):<19}  "
                f"{r['rule'][:22]:<22} {r['destination'][:16]:<16} {error}"
            )
        )


@cli.command()
@click.argument("delivery_id", type=int, metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@config_option
def show(delivery_id: int, as_json: bool, config_path: str) -> None:
    """One delivery: its event, the rendered message and every attempt."""

    async def read(store: Store) -> dict[str, Any] | None:
        return await store.get_delivery(delivery_id)

    d, redact = with_log(config_path, read)
    if d is None:
        fail(f"no delivery {delivery_id}")
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
        f"  next attempt {when(d['next_attempt_at'])}"
        if d["state"] in ("pending", "retrying")
        else "",
        f"  last error   {d['last_error']}" if d["last_error"] else "",
        f"  silenced by  silence {d['silence_id']}" if d.get("silence_id") else "",
        _group_line("grouped in", d["group"], d["id"]),
        f"  fell back to delivery {d['fallback_id']}" if d.get("fallback_id") else "",
        f"  fallback of  delivery {d['fallback_of']}" if d.get("fallback_of") else "",
        _group_line("digest of", d["digest_of"], d["id"]),
        f"event {e['id']}: {e['event_type']} from {e['source']}, key {e['event_key']},"
        f" received {when(e['received_at'])} ({e['state']})",
        indent(_pretty(e["body"]), "  "),
        f"message ({d['format']})",
        f"  title: {d['title']}",
        "  body:",
        indent(d["body"], "    "),
        "attempts" if d["attempts_log"] else "no attempts yet",
    ]
    for a in d["attempts_log"]:
        lines.append(
            f"  #{a['number']} {when(a['started_at'])} {a['duration_ms']:.0f} ms {a['outcome']}"
            + (" (probe of an open circuit: not counted)" if a.get("held") else "")
            + (
                " (late: its lease had passed to another instance; changed nothing)"
                if a.get("late")
                else ""
            )
            + (f": {a['error']}" if a["error"] else "")
        )
    click.echo(redact("\n".join(line for line in lines if line)))


def _group_line(label: str, group: dict[str, Any] | None, delivery_id: int) -> str:
    if group is None or (label == "digest of" and group["count"] == 1):
        return ""
    about = (
        f"group {group['id']} ({group['count']} messages, key {group['key']!r}, {group['reason']})"
    )
    if label == "digest of":
        return f"  digest of    {about}"
    if group["digest_id"] is None:
        return f"  grouped in   {about}, due {when(group['due_at'])}"
    if group["digest_id"] == delivery_id:
        return f"  grouped in   {about}, sent as itself"
    return f"  grouped in   {about}, sent as delivery {group['digest_id']}"


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

    async def queue(store: Store) -> list[tuple[int, int]]:
        if delivery_ids:
            return await store.replay(delivery_ids, time.time())
        return await store.replay_dead(since_ts or 0.0, time.time())

    made, _ = with_log(config_path, queue)
    for original, new in made:
        click.echo(f"delivery {original} queued again as {new}")
    skipped = sorted(set(delivery_ids) - {o for o, _ in made})
    if skipped:
        listed = ", ".join(map(str, skipped))
        fail(f"not replayed (unknown, or not delivered/dead/silenced): {listed}")
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
        age = units.parse_duration(older_than)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--older-than") from None
    cutoff = time.time() - age
    sizes: list[int] = []

    async def run(store: Store) -> PruneResult:
        sizes.append(_size(store.where))
        done = await store.prune(cutoff)
        sizes.append(_size(store.where))
        return done

    done, _ = with_log(config_path, run)
    click.echo(
        f"pruned {done.events} events, {done.deliveries} deliveries, {done.attempts} attempts;"
        f" database {sizes[0]:,} -> {sizes[1]:,} bytes"
    )


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.isfile(path) else 0
