"""`relayhook schema`: the JSON Schema of the config file or of rule files."""

from __future__ import annotations

import click

from relayhook.cli.base import cli
from relayhook.config.schema import SCHEMAS, schema_text

__all__ = ["schema"]


@cli.command()
@click.argument("which", type=click.Choice(sorted(SCHEMAS)))
def schema(which: str) -> None:
    """Print the JSON Schema of the config file or of rule files (for editors)."""
    click.echo(schema_text(which), nl=False)
