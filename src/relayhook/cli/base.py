"""What every command shares: the group, --config, loading it, failing, reading the log."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import NoReturn, TypeVar

import click

from relayhook.config.load import load_config, resolve_path
from relayhook.config.settings import DEFAULT_CONFIG_PATH, Config
from relayhook.config.yamlnodes import Problems, load_yaml
from relayhook.errors import ConfigError
from relayhook.ops.redact import Redactor, url_secrets
from relayhook.store.base import Store
from relayhook.store.open import is_server, log_exists, open_store

__all__ = ["cli", "config_option", "fail", "indent", "load", "when", "with_log"]

T = TypeVar("T")

config_option = click.option(
    "--config",
    "config_path",
    envvar="RELAYHOOK_CONFIG",
    default=DEFAULT_CONFIG_PATH,
    show_default=True,
    metavar="FILE",
    help="Config file (default: $RELAYHOOK_CONFIG or /etc/relayhook/relayhook.yaml).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="relayhook")
def cli() -> None:
    """relayhook: turn webhooks into Slack messages, emails and other notifications."""


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def load(config_path: str) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as e:
        for problem in e.problems:
            click.echo(str(problem), err=True)
        n = len(e.problems)
        fail(f"{n} problem{'s' if n != 1 else ''} found")


def _database(config_path: str) -> tuple[str, Redactor]:
    """The delivery log named by the config, even when the rest of the config is broken."""
    try:
        config = load_config(config_path)
    except ConfigError as e:
        raw = load_yaml(config_path, Problems(), os.environ)
        database = raw.get("database") if isinstance(raw, dict) else None
        if not isinstance(database, str):
            for problem in e.problems:
                click.echo(str(problem), err=True)
            fail("cannot find the database: the config has problems")
        click.echo(f"warning: {len(e.problems)} config problems (see relayhook check)", err=True)
        if is_server(database):
            return database, Redactor(url_secrets(database))
        return resolve_path(os.path.dirname(config_path), database), Redactor()
    return config.database, config.redactor


def with_log(
    config_path: str, work: Callable[[Store], Awaitable[T]], create: bool = False
) -> tuple[T, Redactor]:
    """Run work against the log beside a running daemon; its result and the redactor.

    With create, a database that does not exist yet is made (a silence may come first).
    """
    path, redactor = _database(config_path)
    if not create and not log_exists(path):
        fail(f"{path}: no database yet (relayhook serve creates it)")

    async def run() -> T:
        store = open_store(path)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run()), redactor


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines()) if text else prefix + "(empty)"
