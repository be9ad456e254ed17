"""Durations, sizes, ${VAR} expansion and the template filters operators rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import BASE_CONFIG, write_config
from relayhook.config.load import load_config
from relayhook.config.yamlnodes import expand_env
from relayhook.errors import ConfigError
from relayhook.text.templating import compile_template, datetimeformat, duration, isoparse
from relayhook.text.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5),
        ("10m", 600),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        (7, 7),
        ("1.5s", 1.5),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5 parsecs", "", "-5s", "h1", True])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"), [("1MiB", 1048576), ("512KiB", 524288), ("1MB", 10**6), (10, 10)]
)
def test_parse_size(text: object, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_rejects() -> None:
    with pytest.raises(ValueError, match="expected a size such as 512KiB or 1MiB, got '1 furlong'"):
        parse_size("1 furlong")


def test_expand_env() -> None:
    env = {"A": "x", "EMPTY": ""}
    missing: list[str] = []
    assert (
        expand_env("${A}-${B:-dflt}-${EMPTY:-e}-$${A}-${C}", env, missing.append)
        == "x-dflt-e-${A}-"
    )
    assert missing == ["C"]


def test_env_values_reach_the_config(tmp_path: Path) -> None:
    config = BASE_CONFIG.replace("s3cret-token-value", "${TOKEN}")
    path = write_config(tmp_path, {}, config=config)
    loaded = load_config(str(path), env={"TOKEN": "from-env-1234"})
    auth = loaded.sources["openvolt"].auth
    assert auth is not None and auth.secrets == ("from-env-1234",)
    with pytest.raises(ConfigError) as e:
        load_config(str(path), env={})
    assert [str(p) for p in e.value.problems] == [
        f"{path}:8: environment variable TOKEN is not set"
    ]


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    loaded = load_config(str(write_config(tmp_path, {})), env={})
    assert loaded.database == str(tmp_path / "relayhook.db")
    assert loaded.rules_dir == str(tmp_path / "rules")


def test_datetime_filters() -> None:
    assert isoparse("2024-05-01T23:30:00.000Z").isoformat() == "2024-05-01T23:30:00+00:00"
    assert datetimeformat("2024-01-15T12:00:00Z", "%H:%M %Z", "Europe/London") == "12:00 GMT"
    assert datetimeformat("2024-07-15T12:00:00Z", "%H:%M %Z", "Europe/London") == "13:00 BST"
    assert duration("2024-05-01T00:00:00Z", "2024-05-01T23:30:00Z") == "23 h 30 min"
    assert duration(90061) == "1 d 1 h"
    assert format_duration(0.25) == "250 ms"
    with pytest.raises(ValueError, match="not an ISO-8601 timestamp: 'yesterday'"):
        isoparse("yesterday")
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        datetimeformat("2024-01-01T00:00:00Z", tz="Mars/Olympus")


def test_tojson_and_bounded_repetition() -> None:
    assert compile_template('{{ {"a": "é"} | tojson }}').render() == '{"a": "é"}'
    with pytest.raises(Exception, match="repeated sequence too long"):
        compile_template("{{ 'x' * 10000000 }}").render()
