"""`relayhook send-test` and `relayhook status`: is a destination working, and how each
one stands (circuit, queue, last success and error)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from relayhook.cli.base import cli, config_option, fail, load, when, with_log
from relayhook.deliver.probe import TEST_BODY, TEST_TITLE, destination_report, send_test
from relayhook.store.base import Store
from relayhook.store.open import log_exists

__all__ = ["send_test_command", "status"]


@cli.command("send-test")
@click.argument("destination")
@click.option("--title", default=TEST_TITLE, show_default=True, help="The title to send.")
@click.option("--body", default=TEST_BODY, show_default=True, help="The body to send.")
@config_option
def send_test_command(destination: str, title: str, body: str, config_path: str) -> None:
    """Send one message to DESTINATION now, through the sender the daemon uses.

    Exit 0 when it was delivered, 1 when not. Writes nothing to the delivery log.
    """
    config = load(config_path)
    dest = config.destinations.get(destination)
    if dest is None:
        known = ", ".join(sorted(config.destinations)) or "none"
        fail(f"no destination named '{destination}' (configured: {known})", 2)
    outcome, took = asyncio.run(send_test(config, dest, title, body))
    if outcome.ok:
        click.echo(f"delivered to {destination} in {took * 1000:.0f} ms")
        return
    fail(f"not delivered to {destination} ({took * 1000:.0f} ms): {outcome.error}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per destination.")
@config_option
def status(as_json: bool, config_path: str) -> None:
    """Each destination: its circuit, deliveries waiting, last success and last error."""
    config = load(config_path)
    if log_exists(config.database):

        async def read(store: Store) -> dict[str, dict[str, Any]]:
            return await store.destination_status()

        stored, redact = with_log(config_path, read)
    else:
        stored, redact = {}, config.redactor
    rows = destination_report(config, stored)
    if as_json:
        for row in rows:
            click.echo(redact(json.dumps(row, ensure_ascii=False)))
        return
    click.echo(
        f"{'DESTINATION':<18} {'CIRCUIT':<28} {'QUEUE':>6}  {'LAST SUCCESS':<19}  LAST ERROR"
    )
    for r in rows:
        circuit = r["circuit"]
        if circuit == "open":
            circuit = f"open, probe {when(r['next_probe_at'])[11:]}"
        error = ""
        if r["last_error"]:
            error = f"{when(r['last_error_at'])} {r['last_error']}"[:80]
        click.echo(
            redact(
                f"{r['destination'][:18]:<18} {circuit[:28]:<28} {r['queue']:>6}  "
                f"{when(r['last_success_at']) if r['last_success_at'] else '-':<19}  {error}"
            )
        )
