"""`relayhook test`: the dry run shows what serving would send, and why rules miss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO, SAMPLES, run_relayhook, write_config


def dry_run(
    event: Path | str,
    *extra: str,
    cwd: Path = REPO,
    config: str = "config.example.yaml",
    input: bytes | None = None,
) -> tuple[int, dict[str, object]]:
    result = run_relayhook(
        "test", str(event), "--json", "--config", config, *extra, cwd=cwd, input=input
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def matched(report: dict[str, object]) -> list[dict[str, object]]:
    return [r for r in report["rules"] if r["matched"]]  # type: ignore[attr-defined]


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.json")))
def test_every_sample_renders_non_empty_messages(sample: str) -> None:
    code, report = dry_run(SAMPLES / sample)
    assert code == 0
    rules = matched(report)
    assert rules, f"no rule matched {sample}"
    for rule in rules:
        assert rule["error"] is None
        assert rule["messages"]
        for message in rule["messages"]:  # type: ignore[attr-defined]
            assert message["title"].strip() and message["body"].strip()
            assert message["error"] is None


def test_for_each_renders_one_message_per_item() -> None:
    code, report = dry_run(SAMPLES / "meter_data.received.daily.json")
    assert code == 0
    (rule,) = matched(report)
    assert rule["items"] == 3
    titles = [m["title"] for m in rule["messages"]]  # type: ignore[attr-defined]
    assert len(titles) == 3
    assert sum("65a7f5449e51f6170f23c9a1" in t for t in titles) == 2
    bodies = [m["body"] for m in rule["messages"]]  # type: ignore[attr-defined]
    # The interval reads in London time, and links to Openvolt's interval-data API.
    assert "Wed 01 May 2024 01:00 BST" in bodies[0]
    assert "interval-data?meter_id=6514167223e3d1424bf82742&start_date=2024-05-01" in bodies[0]
    assert "Span:* 2 h 30 min" in bodies[1]


def test_human_output_explains_misses() -> None:
    result = run_relayhook(
        "test", str(SAMPLES / "customer.created.json"), "--config", "config.example.yaml", cwd=REPO
    )
    assert result.returncode == 0
    assert "+ rule customer-created (rules/customer.created.yaml:5): matched" in result.stdout
    assert (
        "- rule user-created (rules/user.created.yaml:5): no: event type 'customer.created'"
        " does not match 'user.created'"
    ) in result.stdout
    assert result.stdout.rstrip().endswith("1 of 7 rules matched; 1 message would be sent")


def test_stdin() -> None:
    code, report = dry_run("-", input=(SAMPLES / "user.created.json").read_bytes())
    assert code == 0 and matched(report)[0]["name"] == "user-created"


def test_string_payload_is_accepted() -> None:
    # Openvolt's generic schema shows "payload": "": the meter rule must simply not match.
    event = {"event_id": "meter_data.received", "delivery_id": "x", "payload": ""}
    code, report = dry_run("-", input=json.dumps(event).encode())
    assert code == 0
    assert matched(report) == []
    (rule,) = [r for r in report["rules"] if r["name"] == "meter-data-received"]  # type: ignore[attr-defined]
    assert rule["reason"] == "when `payload is list and payload | length > 0` was false"


def test_for_each_that_is_not_a_list() -> None:
    result = run_relayhook(
        "test",
        str(SAMPLES / "customer.created.json"),
        "--config",
        "config.yaml",
        cwd=FIXTURES / "broken" / "for_each_not_list",
    )
    assert result.returncode == 1
    assert (
        "! rule customer-each (rules/customer.yaml:3): ERROR: for_each `payload` gave a mapping,"
        " not a list"
    ) in result.stdout


def test_body_not_json() -> None:
    result = run_relayhook("test", "-", "--config", "config.example.yaml", cwd=REPO, input=b"{nope")
    assert result.returncode == 1
    assert result.stderr == (
        "<stdin>: request body is not valid JSON: Expecting property name"
        " enclosed in double quotes at line 1 column 2\n"
    )


def test_event_without_type() -> None:
    result = run_relayhook(
        "test", "-", "--config", "config.example.yaml", cwd=REPO, input=b'{"payload": 1}'
    )
    assert result.returncode == 1
    assert result.stderr == "<stdin>: event type missing: field event_id is not in the request\n"


def test_unknown_source_is_a_usage_error() -> None:
    result = run_relayhook(
        "test",
        str(SAMPLES / "user.created.json"),
        "--source",
        "github",
        "--config",
        "config.example.yaml",
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "unknown source 'github' (configured: openvolt)" in result.stderr


def test_payload_values_are_data_not_templates(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "c.yaml": """\
        event: customer.created
        rules:
          - name: echo
            to: [ops-slack]
            title: "{{ payload.name }}"
            body: "name={{ payload.name }}"
        """
        },
    )
    event = {"event_id": "customer.created", "payload": {"name": "{{ 7*7 }}{% raw %}"}}
    code, report = dry_run(
        "-", cwd=tmp_path, config="config.yaml", input=json.dumps(event).encode()
    )
    assert code == 0
    (message,) = matched(report)[0]["messages"]  # type: ignore[index]
    assert message["title"] == "{{ 7*7 }}{% raw %}"
    assert message["body"] == "name={{ 7*7 }}{% raw %}"


@pytest.mark.parametrize(
    ("expression", "unsafe"),
    [
        ("payload.__class__", "access to attribute '__class__' of 'dict' object is unsafe"),
        ("''.__class__.__mro__", "access to attribute '__class__' of 'str' object is unsafe"),
        ("payload.update({'x': 1})", "access to attribute 'update' of 'dict' object is unsafe"),
    ],
)
def test_sandbox_blocks_escapes(tmp_path: Path, expression: str, unsafe: str) -> None:
    write_config(
        tmp_path,
        {
            "c.yaml": f"""\
        event: customer.created
        rules:
          - name: escape
            to: [ops-slack]
            body: "{{{{ {expression} }}}}"
          - name: innocent
            to: [ops-slack]
            body: "still here"
        """
        },
    )
    code, report = dry_run(SAMPLES / "customer.created.json", cwd=tmp_path, config="config.yaml")
    assert code == 1
    escape, innocent = report["rules"]  # type: ignore[misc]
    assert escape["error"] == f"sandbox: {unsafe}"
    assert escape["messages"][0]["body"] == ""
    # One broken rule never blocks the others.
    assert innocent["error"] is None and innocent["messages"][0]["body"] == "still here"


def test_render_error_names_the_missing_field(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "c.yaml": """\
        event: customer.*
        rules:
          - name: r
            to: [ops-slack]
            body: "{{ payload.no_such_field }}"
        """
        },
    )
    code, report = dry_run(SAMPLES / "customer.created.json", cwd=tmp_path, config="config.yaml")
    assert code == 1
    assert (
        report["rules"][0]["error"] == "undefined: 'dict object' has no attribute 'no_such_field'"
    )  # type: ignore[index]


def test_stop_and_source_and_when_list(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "a.yaml": """\
        event: "meter_data.*"
        source: openvolt
        rules:
          - name: big
            when:
              - payload is list
              - payload | length > 2
            to: [ops-slack]
            body: "big {{ payload | length }}"
            stop: true
          - name: any
            to: [ops-slack]
            body: "any"
        """
        },
    )
    code, report = dry_run(
        SAMPLES / "meter_data.received.daily.json", cwd=tmp_path, config="config.yaml"
    )
    assert code == 0
    big, any_rule = report["rules"]  # type: ignore[misc]
    assert big["matched"] and big["messages"][0]["body"] == "big 3"
    assert (
        not any_rule["matched"] and any_rule["reason"] == "not evaluated: rule 'big' has stop: true"
    )
    code, report = dry_run(
        SAMPLES / "meter_data.received.backfill.json", cwd=tmp_path, config="config.yaml"
    )
    big, any_rule = report["rules"]  # type: ignore[misc]
    assert big["reason"] == "when `payload | length > 2` was false"
    assert any_rule["matched"]


def test_html_autoescapes_payload_but_text_does_not(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "a.yaml": """\
        event: customer.created
        rules:
          - name: html
            to: [ops-slack]
            format: html
            body: "<b>{{ payload.name }}</b>"
          - name: text
            to: [ops-slack]
            body: "{{ payload.name }}"
        """
        },
    )
    event = {"event_id": "customer.created", "payload": {"name": "<script>x</script>"}}
    _, report = dry_run("-", cwd=tmp_path, config="config.yaml", input=json.dumps(event).encode())
    html, text = report["rules"]  # type: ignore[misc]
    assert html["messages"][0]["body"] == "<b>&lt;script&gt;x&lt;/script&gt;</b>"
    assert text["messages"][0]["body"] == "<script>x</script>"
