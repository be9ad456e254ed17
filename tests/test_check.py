"""`relayhook check`: every problem, located, in one run."""

from __future__ import annotations

import pytest

from conftest import FIXTURES, REPO, run_relayhook

BROKEN = FIXTURES / "broken"

CASES = {
    "bad_yaml": [
        "rules/customer.yaml:6: YAML syntax error: expected <block end>,"
        " but found '<block mapping start>'",
    ],
    "unknown_key": ["config.yaml:12: unknown key 'atempts' in retry (did you mean 'attempts'?)"],
    "undefined_destination": [
        "rules/customer.yaml:5: rule 'customer-created': unknown destination 'ops-slak'"
        " (did you mean 'ops-slack'?)",
    ],
    "duplicate_rule_name": [
        "rules/b.yaml:3: duplicate rule name 'customer-created' (first defined at rules/a.yaml:3)",
    ],
    "template_syntax": [
        "rules/customer.yaml:8: rule 'customer-created': body: template syntax error:"
        " unexpected '}', expected ')'",
    ],
    "when_syntax": [
        "rules/customer.yaml:6: rule 'customer-created': when: syntax error:"
        " unexpected 'end of template'",
    ],
    "undefined_name": [
        "rules/meter_data.yaml:6: rule 'meter-data': title: 'itme' is undefined"
        " (did you mean 'item'?)"
        " (available: event, event_type, headers, item, item_count, item_number, payload,"
        " received_at, source)",
    ],
    "missing_env": [
        "config.yaml:10: environment variable RELAYHOOK_TEST_UNSET_SLACK_URL is not set"
    ],
    "bad_apprise_url": [
        "config.yaml:10: destination 'ops-slack': url: apprise cannot use URL"
        " 'nosuchservice://***@example.invalid/x'",
    ],
    "for_each_not_expression": [
        "rules/meter_data.yaml:4: rule 'meter-data': for_each: expected a Jinja expression"
        " as a string, got ['a', 'b']",
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_broken_config_reports_its_problem(case: str) -> None:
    result = run_relayhook("check", "--config", "config.yaml", cwd=BROKEN / case)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [*CASES[case], "1 problem found"]
    assert result.stdout == ""


def test_several_problems_are_all_reported_in_one_run() -> None:
    result = run_relayhook("check", "--config", "config.yaml", cwd=BROKEN / "several")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "config.yaml:10: retry: attempts: must be at least 1, got 0",
        "config.yaml:10: retry: first_delay: expected a duration such as 500ms, 5s, 10m, 1h"
        " or 1h30m, got 'soon'",
        "config.yaml:7: source 'openvolt': unknown auth scheme 'tokn'"
        " (known: token, hmac, github, stripe, standard_webhooks) (did you mean 'token'?)",
        "config.yaml:9: unknown key 'fromat' in destination 'ops-slack' (did you mean 'format'?)",
        "rules/customer.yaml:5: rule 'customer-created': when: syntax error:"
        " unexpected 'end of template'",
        "rules/customer.yaml:6: rule 'customer-created': unknown destination 'pager'",
        "rules/customer.yaml:7: rule 'customer-created': title: template syntax error:"
        " unexpected '}'",
        "rules/customer.yaml:8: rule 'customer-created': body: 'paylod' is undefined"
        " (did you mean 'payload'?) (available: event, event_type, headers, payload,"
        " received_at, source)",
        "8 problems found",
    ]


def test_processes_only_for_apprise_and_in_range(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "rules").mkdir()
    (root / "config.yaml").write_text(
        "rules: rules\n"
        "sources: {}\n"
        "destinations:\n"
        "  a: {url: 'json://127.0.0.1:9/a', processes: -1}\n"
        "  b: {url: 'json://127.0.0.1:9/b', processes: 65}\n"
        "  c: {webhook: 'http://127.0.0.1:9/c', processes: 2}\n"
    )
    result = run_relayhook("check", "--config", "config.yaml", cwd=root)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "config.yaml:4: destination 'a': processes: must be at least 0, got -1",
        "config.yaml:5: destination 'b': processes: must be at most 64, got 65",
        "config.yaml:6: unknown key 'processes' in destination 'c'",
        "3 problems found",
    ]


def test_example_config_is_ok() -> None:
    result = run_relayhook("check", "--config", "config.example.yaml", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1 source, 3 destinations, 7 rules: OK\n"


def test_config_from_environment_variable() -> None:
    result = run_relayhook("check", cwd=REPO, env={"RELAYHOOK_CONFIG": "config.example.yaml"})
    assert result.returncode == 0, result.stderr


def test_secret_in_a_bad_url_is_not_printed() -> None:
    result = run_relayhook("check", "--config", "config.yaml", cwd=BROKEN / "bad_apprise_url")
    assert "hunter2secret" not in result.stdout + result.stderr


def test_missing_config_file(tmp_path: object) -> None:
    result = run_relayhook("check", "--config", "nope.yaml", cwd=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == "nope.yaml: cannot read file: No such file or directory"


def test_missing_rules_folder(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "config.yaml").write_text("sources: {}\ndestinations: {}\nrules: nowhere\n")
    result = run_relayhook("check", "--config", "config.yaml", cwd=root)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == "nowhere: rules folder not found"


@pytest.mark.parametrize("command", [[], ["check"], ["test"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = run_relayhook(*command, "--help")
    assert result.returncode == 0
    assert "Usage: relayhook" in result.stdout


def test_usage_error_exits_2() -> None:
    result = run_relayhook("check", "--no-such-flag")
    assert result.returncode == 2
    assert "No such option '--no-such-flag'" in result.stderr
