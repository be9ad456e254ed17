"""`relayhook serve` and `relayhook check`."""

from __future__ import annotations

import dataclasses

import click

from relayhook.cli.base import cli, config_option, load
from relayhook.config.load import parse_listen

__all__ = ["check", "serve"]


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
    from relayhook.daemon import serve as run  # the daemon's imports only when serving

    config = load(config_path)
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
    config = load(config_path)
    for warning in config.warnings:
        click.echo(f"{warning.file}:{warning.line}: warning: {warning.message}", err=True)
    click.echo(f"{config.summary()}: OK")
