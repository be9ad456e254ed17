"""`relayhook db copy FROM TO`: move a delivery log between SQLite and PostgreSQL."""

from __future__ import annotations

import click

from relayhook.cli.base import cli, fail
from relayhook.ops.redact import redact_url
from relayhook.store.copy import CopyError, copy_log

__all__ = ["db"]


@cli.group()
def db() -> None:
    """The delivery log's database."""


@db.command("copy")
@click.argument("source", metavar="FROM")
@click.argument("target", metavar="TO")
@click.option("--force", is_flag=True, help="Copy into a target that has rows already.")
def copy(source: str, target: str, force: bool) -> None:
    """Copy a whole log FROM one database TO another (a SQLite file or a postgresql:// URL).

    Stop the daemons writing to FROM first. TO gets its schema and must be empty.
    """

    def said(table: str, n: int) -> None:
        click.echo(f"{table}: {n} rows")

    try:
        copy_log(source, target, force=force, progress=said)
    except CopyError as e:
        fail(f"not copied: {e}")
    except Exception as e:  # noqa: BLE001 - a database's own error, said in one line
        fail(f"not copied: {type(e).__name__}: {redact_url(str(e))}")
    click.echo(f"copied {redact_url(source)} to {redact_url(target)}")
