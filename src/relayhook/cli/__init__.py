"""The `relayhook` command: the edge where errors become messages and exit codes.

Exit codes: 0 ok, 1 problems found, 2 usage error.
"""

from relayhook.cli import db, destinations, dryrun, log, schema, serve, silence  # noqa: F401 - each registers commands
from relayhook.cli.base import cli

__all__ = ["main"]


def main() -> None:
    cli(prog_name="relayhook")
