"""The JSON Schemas of the config and rule files: shipped as `relayhook schema` prints them,
valid draft 2020-12, and never stricter than `check`: every key of the catalogue, given a
wrong value or joined by an unknown key, is refused by both; values `check` accepts, the
schema accepts too."""

from __future__ import annotations

import copy
import glob
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conftest import FIXTURES, REPO, run_relayhook
from relayhook.config import keys, keytypes
from relayhook.config.load import load_config
from relayhook.config.schema import SCHEMAS, schema_of
from relayhook.errors import ConfigError

VALIDATORS = {name: jsonschema.Draft202012Validator(schema_of(name)) for name in SCHEMAS}
SIGN = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# A config and a rule file that use every key there is (check accepts them).
CONFIG: dict[str, Any] = {
    "listen": "127.0.0.1:8787",
    "database": "relayhook.db",
    "rules": "rules",
    "admin_token": "an-admin-token-of-20",
    "trusted_proxies": ["10.0.0.0/8"],
    "read_timeout": "10s",
    "retention": "30d",
    "shutdown_timeout": "10s",
    "render_timeout": "2s",
    "orphan_after": "7d",
    "lease": "60s",
    "retry": {"attempts": 5, "first_delay": "1s", "max_delay": "1m"},
    "concurrency": {"total": 10, "per_destination": 2},
    "quiet_hours": {
        "nights": {
            "timezone": "Europe/London",
            "times": [{"days": "mon-fri", "from": "18:00", "to": "08:00"}],
        }
    },
    "sources": {
        "openvolt": {
            "auth": {"token": "a-source-token"},
            "event_type": "event_id",
            "event_key": "delivery_id",
            "max_body": "1MiB",
            "max_depth": 32,
            "allow_ips": ["127.0.0.1"],
        },
        "signed": {
            "auth": {
                "hmac": {
                    "secret": "a-shared-secret",
                    "header": "X-Signature",
                    "algorithm": "sha256",
                    "encoding": "hex",
                    "prefix": "sha256=",
                }
            },
            "event_type": {"header": "X-Event"},
        },
    },
    "destinations": {
        "chat": {
            "url": "json://127.0.0.1:9/chat",
            "format": "markdown",
            "processes": 0,
            "retry": {"attempts": 3},
            "timeout": "5s",
            "concurrency": 2,
            "min_interval": "1s",
            "quiet": "nights",
            "circuit": {"failures": 3, "probe": "30s"},
            "fallback": "hook",
        },
        "hook": {
            "webhook": "http://127.0.0.1:9/hook",
            "method": "PUT",
            "headers": {"X-Team": "ops"},
            "body": '{"text": {{ title | tojson }}}',
            "sign": SIGN,
            "timeout": "5s",
            "circuit": "off",
        },
    },
}
RULES: dict[str, Any] = {
    "event": "customer.*",
    "source": "openvolt",
    "rules": [
        {
            "name": "grouped",
            "when": ["payload is defined"],
            "to": ["chat"],
            "title": "{{ event_type }}",
            "body": "a customer",
            "format": "text",
            "stop": False,
            "severity": "warning",
            "group": {"key": "{{ source }}", "wait": "30s", "interval": "1m", "max": 10},
            "digest_title": "{{ count }} customers",
            "digest_body": "{{ count }}",
            "quiet": "nights",
        },
        {
            "name": "throttled",
            "for_each": "payload.items",
            "to": "hook",
            "title": "item",
            "body_template": "body.txt",
            "throttle": {"key": "{{ item }}", "limit": 2, "per": "1m"},
            "digest_template": "digest.txt",
            "urgent": True,
        },
    ],
}

# Where each section of the catalogue sits in those two documents.
Doc = tuple[dict[str, Any], dict[str, Any]]
PLACES: dict[str, tuple[str, Callable[[Doc], dict[str, Any]]]] = {
    "TOP": ("config", lambda d: d[0]),
    "RETRY": ("config", lambda d: d[0]["retry"]),
    "CONCURRENCY": ("config", lambda d: d[0]["concurrency"]),
    "SOURCE": ("config", lambda d: d[0]["sources"]["openvolt"]),
    "HMAC": ("config", lambda d: d[0]["sources"]["signed"]["auth"]["hmac"]),
    "DEST_APPRISE": ("config", lambda d: d[0]["destinations"]["chat"]),
    "DEST_WEBHOOK": ("config", lambda d: d[0]["destinations"]["hook"]),
    "CIRCUIT": ("config", lambda d: d[0]["destinations"]["chat"]["circuit"]),
    "CALENDAR": ("config", lambda d: d[0]["quiet_hours"]["nights"]),
    "WINDOW": ("config", lambda d: d[0]["quiet_hours"]["nights"]["times"][0]),
    "RULE_FILE": ("rules", lambda d: d[1]),
    "RULE": ("rules", lambda d: d[1]["rules"][0]),
    "GROUP": ("rules", lambda d: d[1]["rules"][0]["group"]),
    "THROTTLE": ("rules", lambda d: d[1]["rules"][1]["throttle"]),
}
SECTIONS = {name: getattr(keys, name) for name in PLACES}
WRONG = [[{"not": "a value any key takes"}]]


def judge(tmp: Path, config: dict[str, Any], rules: dict[str, Any]) -> tuple[bool, bool, str]:
    """(check accepts, both schemas accept, what check said)."""
    (tmp / "rules" / "templates").mkdir(parents=True, exist_ok=True)
    (tmp / "rules" / "templates" / "body.txt").write_text("{{ item }}")
    (tmp / "rules" / "templates" / "digest.txt").write_text("{{ count }}")
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp / "rules" / "r.yaml").write_text(yaml.safe_dump(rules))
    try:
        load_config(str(tmp / "config.yaml"), env={})
        checked, said = True, ""
    except ConfigError as e:
        checked, said = False, "\n".join(str(p) for p in e.problems)
    valid = VALIDATORS["config"].is_valid(config) and VALIDATORS["rules"].is_valid(rules)
    return checked, valid, said


def with_value(section: str, key: str, value: Any) -> Doc:
    docs = (copy.deepcopy(CONFIG), copy.deepcopy(RULES))
    PLACES[section][1](docs)[key] = value
    return docs


def test_every_section_of_the_catalogue_is_placed_here() -> None:
    found = {n for n in keys.__all__ if isinstance(getattr(keys, n), keytypes.Section)}
    assert found == set(PLACES)


def test_shipped_schemas_are_what_relayhook_schema_prints() -> None:
    for name in SCHEMAS:
        printed = run_relayhook("schema", name)
        assert printed.returncode == 0, printed.stderr
        shipped = REPO / "schema" / f"{name}.schema.json"
        assert printed.stdout == shipped.read_text(), (
            f"{shipped} differs from `relayhook schema {name}`: run"
            f" `relayhook schema {name} > schema/{name}.schema.json`"
        )
        jsonschema.Draft202012Validator.check_schema(json.loads(printed.stdout))


def test_relayhook_schema_refuses_an_unknown_name() -> None:
    result = run_relayhook("schema", "rule")
    assert result.returncode == 2
    assert "Invalid value for '{config|rules}': 'rule' is not one of 'config', 'rules'" in (
        result.stderr
    )


def test_the_example_config_and_every_shipped_rule_file_validate_and_name_their_schema() -> None:
    example = REPO / "config.example.yaml"
    assert example.read_text().splitlines()[0] == (
        "# yaml-language-server: $schema=schema/config.schema.json"
    )
    # As it is, ${VAR} references and all.
    VALIDATORS["config"].validate(yaml.safe_load(example.read_text()))
    files = sorted(glob.glob(str(REPO / "rules" / "*.yaml")))
    assert files
    for path in files:
        text = Path(path).read_text()
        assert text.splitlines()[0] == "# yaml-language-server: $schema=../schema/rules.schema.json"
        VALIDATORS["rules"].validate(yaml.safe_load(text))
    assert run_relayhook("check", "--config", str(example)).returncode == 0


def test_a_document_with_every_key_passes_both(tmp_path: Path) -> None:
    assert judge(tmp_path, CONFIG, RULES) == (True, True, "")


@pytest.mark.parametrize(
    ("section", "key"),
    [(name, k.name) for name, section in SECTIONS.items() for k in section.keys],
)
def test_a_wrong_value_for_any_key_fails_both(tmp_path: Path, section: str, key: str) -> None:
    checked, valid, said = judge(tmp_path, *with_value(section, key, WRONG))
    assert not valid, f"the schema takes {WRONG} for {section}.{key}"
    assert not checked, f"check takes {WRONG} for {section}.{key}"
    assert key in said or "must be a mapping" in said or "a rule" in said, said


@pytest.mark.parametrize(
    ("section", "key"),
    [(name, k.name) for name, section in SECTIONS.items() for k in section.keys],
)
def test_an_empty_value_for_any_key_is_judged_alike(tmp_path: Path, section: str, key: str) -> None:
    # `key:` with nothing after it: some keys read it as left out, others refuse it.
    checked, valid, said = judge(tmp_path, *with_value(section, key, None))
    assert valid == checked, f"{section}.{key}: check {checked}, schema {valid}: {said}"


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_an_unknown_key_in_any_section_fails_both(tmp_path: Path, section: str) -> None:
    checked, valid, said = judge(tmp_path, *with_value(section, "colour", "blue"))
    assert (checked, valid) == (False, False)
    assert "unknown key 'colour'" in said, said


# (section, key, value, check accepts, schema accepts). Where they differ, only ever the
# schema is the looser: it cannot know ranges of text values or cross-file names.
VALUES = [
    ("TOP", "read_timeout", "1h30m", True, True),
    ("TOP", "read_timeout", "1h 30m", True, True),
    ("TOP", "read_timeout", 2.5, True, True),
    ("TOP", "read_timeout", "500ms", True, True),
    ("TOP", "read_timeout", "5x", False, False),
    ("TOP", "read_timeout", "-5s", False, False),
    ("TOP", "read_timeout", True, False, False),
    ("TOP", "listen", "${LISTEN:-127.0.0.1:9000}", True, True),
    ("TOP", "read_timeout", "${READ_TIMEOUT:-5s}", True, True),
    ("TOP", "trusted_proxies", "10.0.0.1", True, True),
    ("TOP", "admin_token", "short", False, True),
    ("RETRY", "attempts", "5", True, True),
    ("RETRY", "attempts", 0, False, False),
    ("RETRY", "attempts", "five", False, False),
    ("RETRY", "attempts", 2.5, False, False),
    ("RETRY", "attempts", "${ATTEMPTS:-3}", True, True),
    ("SOURCE", "max_body", "512KiB", True, True),
    ("SOURCE", "max_body", "1 gb", True, True),
    ("SOURCE", "max_body", 1000, True, True),
    ("SOURCE", "max_body", "1 parsec", False, False),
    ("SOURCE", "auth", "none", True, True),
    ("SOURCE", "auth", {"token": ["old-token", "new-token"]}, True, True),
    ("SOURCE", "auth", {"token": "a", "github": "b"}, False, False),
    ("SOURCE", "auth", {"tokn": "a"}, False, False),
    ("SOURCE", "auth", {"token": []}, False, False),
    ("SOURCE", "event_key", {"header": "X-Id"}, True, True),
    ("SOURCE", "event_key", {"header": "X-Id", "path": "id"}, False, False),
    ("SOURCE", "event_key", "", False, False),
    ("HMAC", "algorithm", "sha512", True, True),
    ("HMAC", "algorithm", "md5", False, False),
    ("DEST_APPRISE", "format", "html", True, True),
    ("DEST_APPRISE", "format", "rtf", False, False),
    ("DEST_APPRISE", "processes", 65, False, False),
    ("DEST_APPRISE", "circuit", False, True, True),
    ("DEST_APPRISE", "circuit", "on", False, False),
    ("DEST_APPRISE", "webhook", "http://127.0.0.1:9/x", False, False),  # url and webhook
    ("DEST_APPRISE", "quiet", "weekends", False, True),  # no such calendar: cross-key
    ("DEST_WEBHOOK", "method", "patch", True, True),
    ("DEST_WEBHOOK", "method", "GET", False, False),
    ("DEST_WEBHOOK", "headers", {"X-Count": 3, "X-Flag": True}, True, True),
    ("DEST_WEBHOOK", "headers", {"X-List": [1]}, False, False),
    ("DEST_WEBHOOK", "format", "html", False, False),  # an apprise key
    ("WINDOW", "days", ["sat", "Sun"], True, True),
    ("WINDOW", "days", "fri-mon", True, True),
    ("WINDOW", "days", "weekdays", False, False),
    ("WINDOW", "from", 1080, False, False),  # what YAML makes of an unquoted 18:00
    ("WINDOW", "from", "7:30:15", True, True),
    ("CALENDAR", "times", [], False, False),
    ("RULE", "to", "chat", True, True),
    ("RULE", "to", [], False, False),
    ("RULE", "to", "nowhere", False, True),  # unknown destination: cross-file
    ("RULE", "severity", " failure ", True, True),
    ("RULE", "severity", "{{ 'failure' if payload else 'info' }}", True, True),
    ("RULE", "severity", "critical", False, False),
    ("RULE", "stop", "yes", False, False),
    ("RULE", "when", "payload.n > 1", True, True),
    ("RULE", "when", "", False, False),
    ("RULE", "name", 7, False, False),
    ("RULE", "body_template", "body.txt", False, False),  # with body: one of them only
    ("GROUP", "max", 0, False, False),
    ("GROUP", "wait", "1m", True, True),
    ("THROTTLE", "per", "soon", False, False),
    ("RULE_FILE", "event", "meter_data.*", True, True),
    ("RULE_FILE", "event", 5, False, False),
]


@pytest.mark.parametrize(("section", "key", "value", "checked", "valid"), VALUES)
def test_values_are_judged_alike(
    tmp_path: Path, section: str, key: str, value: Any, checked: bool, valid: bool
) -> None:
    assert valid or not checked, "the table says the schema is stricter than check"
    found = judge(tmp_path, *with_value(section, key, value))
    assert found[:2] == (checked, valid), found[2]


def test_a_required_key_left_out_fails_both(tmp_path: Path) -> None:
    for name, section in SECTIONS.items():
        for key in (k for k in section.keys if k.required):
            docs = (copy.deepcopy(CONFIG), copy.deepcopy(RULES))
            del PLACES[name][1](docs)[key.name]
            checked, valid, said = judge(tmp_path, *docs)
            assert (checked, valid) == (False, False), (name, key.name, said)


def test_the_refused_fixtures_of_a_wrong_key_or_type_fail_the_schema_too() -> None:
    broken = FIXTURES / "broken"
    for case in ("unknown_key", "for_each_not_expression"):
        config = yaml.safe_load((broken / case / "config.yaml").read_text())
        rules = [
            yaml.safe_load(Path(p).read_text())
            for p in sorted(glob.glob(str(broken / case / "rules" / "*.yaml")))
        ]
        refused = not VALIDATORS["config"].is_valid(config) or not all(
            VALIDATORS["rules"].is_valid(r) for r in rules
        )
        assert refused, case


def test_every_key_has_a_description() -> None:
    def walk(node: Any, path: str) -> list[str]:
        missing = []
        if isinstance(node, dict):
            keyed = node.get("additionalProperties") is False  # a section of keys
            for name, sub in node.get("properties", {}).items() if keyed else ():
                if "description" not in sub:
                    missing.append(f"{path}.{name}")
            for key, sub in node.items():
                missing += walk(sub, f"{path}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                missing += walk(sub, f"{path}[{i}]")
        return missing

    for name in SCHEMAS:
        assert walk(schema_of(name), name) == []


def test_the_defaults_the_schemas_show_are_the_ones_in_force(tmp_path: Path) -> None:
    from relayhook.text.units import parse_duration, parse_size

    config = {
        "rules": "rules",
        "sources": {"plain": {"auth": "none"}, "signed": {"auth": {"hmac": {
            "secret": "s", "header": "X-Sig"}}}},
        "destinations": {
            "chat": {"url": "json://127.0.0.1:9/chat", "circuit": {}},
            "hook": {"webhook": "http://127.0.0.1:9/hook"},
        },
    }  # fmt: skip
    rules = {"event": "*", "rules": [{"name": "r", "to": "chat", "body": "b", "group": {}}]}
    (tmp_path / "rules").mkdir()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "rules" / "r.yaml").write_text(yaml.safe_dump(rules))
    c = load_config(str(tmp_path / "config.yaml"), env={})
    chat, hook, rule = c.destinations["chat"], c.destinations["hook"], c.rules[0]
    in_force: dict[tuple[str, str], Any] = {
        ("TOP", "listen"): f"{c.listen_host}:{c.listen_port}",
        ("TOP", "database"): None,  # a path, resolved against the config's folder
        ("TOP", "rules"): None,  # a folder that must exist
        ("TOP", "read_timeout"): c.read_timeout,
        ("TOP", "shutdown_timeout"): c.shutdown_timeout,
        ("TOP", "render_timeout"): c.render_timeout,
        ("TOP", "orphan_after"): c.orphan_after,
        ("TOP", "lease"): c.lease,
        ("RETRY", "attempts"): c.retry.attempts,
        ("RETRY", "first_delay"): c.retry.first_delay,
        ("RETRY", "max_delay"): c.retry.max_delay,
        ("CONCURRENCY", "total"): c.concurrency.total,
        ("CONCURRENCY", "per_destination"): c.concurrency.per_destination,
        ("SOURCE", "event_type"): ".".join(c.sources["plain"].event_type.path),
        ("SOURCE", "max_body"): c.sources["plain"].max_body,
        ("SOURCE", "max_depth"): c.sources["plain"].max_depth,
        ("HMAC", "algorithm"): getattr(c.sources["signed"].auth, "algorithm", None),
        ("HMAC", "encoding"): getattr(c.sources["signed"].auth, "encoding", None),
        ("HMAC", "prefix"): getattr(c.sources["signed"].auth, "prefix", None),
        ("CIRCUIT", "failures"): chat.circuit.failures if chat.circuit else None,
        ("CIRCUIT", "probe"): chat.circuit.probe if chat.circuit else None,
        ("DEST_APPRISE", "processes"): getattr(chat, "processes", None),
        ("DEST_APPRISE", "timeout"): chat.timeout,
        ("DEST_WEBHOOK", "method"): getattr(hook, "method", None),
        ("DEST_WEBHOOK", "timeout"): hook.timeout,
        ("GROUP", "wait"): rule.group.wait if rule.group else None,
        ("RULE", "stop"): rule.stop,
        ("RULE", "severity"): rule.severity.render(),
        ("RULE", "urgent"): rule.urgent,
    }
    shown = {
        (name, k.name): k
        for name, section in SECTIONS.items()
        for k in section.keys
        if k.default is not None
    }
    assert set(shown) == set(in_force)
    for (name, key_name), key in shown.items():
        if in_force[name, key_name] is None:
            continue
        parse = {keytypes.Duration: parse_duration, keytypes.Size: parse_size}.get(type(key.type))
        default = parse(key.default) if parse else key.default
        assert default == in_force[name, key_name], (name, key_name)


def test_the_auth_schemes_are_the_ones_sources_know() -> None:
    from relayhook.policy.signatures import AUTH_SCHEMES

    (schemes,) = [k.type for k in keys.SOURCE.keys if k.name == "auth"]
    assert isinstance(schemes, keytypes.Either)
    (section,) = [o for o in schemes.options if isinstance(o, keytypes.Section)]
    assert section.names == set(AUTH_SCHEMES)


def test_the_shipped_files_validate_as_an_editor_reads_them_too() -> None:
    # Editors' YAML language server parses YAML 1.2 by default, relayhook (PyYAML) 1.1:
    # `off`, `yes` or an unquoted 1:30 read differently. The shipped files use neither.
    from ruamel.yaml import YAML

    yaml12 = YAML(typ="safe", pure=True)
    VALIDATORS["config"].validate(yaml12.load((REPO / "config.example.yaml").read_text()))
    for path in sorted(glob.glob(str(REPO / "rules" / "*.yaml"))):
        VALIDATORS["rules"].validate(yaml12.load(Path(path).read_text()))
