"""Shared helpers: run the real `relayhook` command, write small configs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SAMPLES = FIXTURES / "openvolt"
RELAYHOOK = str(Path(sys.executable).parent / "relayhook")


def run_relayhook(
    *args: str,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYHOOK_")}
    full_env.update(env or {})
    result = subprocess.run(
        [RELAYHOOK, *args], cwd=cwd, env=full_env, input=input, capture_output=True, timeout=timeout
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


@pytest.fixture
def sink() -> Any:
    """A real HTTP server on loopback that destinations send to (support.HTTPSink)."""
    from support import HTTPSink  # support imports this module

    s = HTTPSink().start()
    yield s
    s.stop()


# The head of most test configs: one Openvolt source; destinations follow it.
CONFIG_HEAD = """\
listen: 127.0.0.1:8787
database: relayhook.db
rules: rules
sources:
  openvolt:
    event_type: event_id
    event_key: delivery_id
    auth: {token: s3cret-token-value}
"""
BASE_CONFIG = (
    CONFIG_HEAD
    + """\
destinations:
  ops-slack: {url: "json://127.0.0.1:9/slack"}
"""
)


def write_config(
    root: Path,
    rules: dict[str, str],
    config: str = BASE_CONFIG,
    templates: dict[str, str] | None = None,
) -> Path:
    """A config folder with the given rule files; returns the config path."""
    (root / "rules" / "templates").mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(textwrap.dedent(config))
    for name, text in rules.items():
        (root / "rules" / name).write_text(textwrap.dedent(text))
    for name, text in (templates or {}).items():
        (root / "rules" / "templates" / name).write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A real PostgreSQL server for the whole run (tests/pg.py), started on first use."""
    from pg import postgres_server

    with postgres_server() as dsn:
        yield dsn
