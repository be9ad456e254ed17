"""Message safety: event data in a message shows as text; it cannot ping or plant a link.

Real daemons and sinks on loopback for Mattermost, email, json://, webhooks and
console://; Slack in-process through the daemon's own sender, its HTTP redirected to a
local sink.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import CONFIG_HEAD, run_relayhook, write_config
from support import HTTPSink, SMTPSink, db_count, db_rows, running, wait_for
from test_daemon import make_config, show

WJ = "\u2060"  # the word joiner put after the @ of a broadcast mention
NAME = "<!channel> @channel @all @here @everyone [click](https://evil.example)"
MENTIONS = ("@channel", "@all", "@here", "@everyone")


def customer(n: int, name: str = NAME, **extra: Any) -> dict[str, Any]:
    """An Openvolt-like customer.created event."""
    return {
        "event_id": "customer.created",
        "delivery_id": f"d-{n}",
        "payload": {"n": n, "name": name, **extra},
    }


def rules_file(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"safety.yaml": {"event": "customer.created", "rules": list(rules)}}


@pytest.fixture
def smtp() -> Iterator[SMTPSink]:
    s = SMTPSink().start()
    yield s
    s.stop()


# 1. Mattermost, end to end ------------------------------------------------------------


def test_mattermost_gets_data_that_cannot_ping_or_link(tmp_path: Path, sink: HTTPSink) -> None:
    mm = {"url": f"mmost://127.0.0.1:{sink.port}/tokenabc", "format": "markdown"}
    rules = rules_file(
        {
            "name": "md-data",
            "to": ["mm"],
            "format": "markdown",
            "body": "Markdown customer: {{ payload.name }}",
        },
        {
            "name": "md-here",
            "to": ["mm"],
            "format": "markdown",
            "body": "@here look: {{ payload.name }}",
        },
        {
            "name": "text-data",
            "to": ["mm"],
            "format": "text",
            "body": "Plain customer: {{ payload.name }}",
        },
        {
            "name": "text-here",
            "to": ["mm"],
            "format": "text",
            "body": "@here plain look: {{ payload.name }}",
        },
    )
    config = make_config(tmp_path, {"mm": mm}, rules)
    with running(config) as daemon:
        assert daemon.post(customer(1))[0] == 202
        wait_for(lambda: len(sink.received) >= 4, what="four Mattermost posts")
        time.sleep(0.2)
    assert {r.path for r in sink.received} == {"/hooks/tokenabc"}  # apprise's webhook path
    texts = [r.json()["text"] for r in sink.received]
    assert len(texts) == 4, texts

    def one(prefix: str) -> str:
        (text,) = [t for t in texts if t.startswith(prefix)]
        return str(text)

    md_data, md_here = one("Markdown customer: "), one("@here look: ")
    text_data, text_here = one("Plain customer: "), one("@here plain look: ")
    for text in (md_data, md_here, text_data, text_here):
        data = text.split(": ", 1)[1]  # what the event put in
        for mention in MENTIONS:
            assert mention not in data, text
            assert f"@{WJ}{mention[1:]}" in data, text
        assert "[click](https://evil.example)" not in text, text
        assert "<!channel>" not in text, text
    # The template's own @here still pings, in either format.
    assert md_here.startswith("@here look: ")
    assert text_here.startswith("@here plain look: ")
    # Markdown: the data's link and angle brackets are backslash-escaped, exactly once.
    assert md_data == (
        "Markdown customer: \\<!channel\\> "
        f"@{WJ}channel @{WJ}all @{WJ}here @{WJ}everyone \\[click\\](https://evil.example)"
    )
    assert md_here == "@here look: " + md_data.split(": ", 1)[1]
    assert db_count(tmp_path / "relayhook.db", "deliveries", "state = 'delivered'") == 4


def test_mattermost_text_rule_shows_the_name_without_stray_backslashes(
    tmp_path: Path, sink: HTTPSink
) -> None:
    # The name has no backslash, so a doubled one in the Markdown Mattermost renders is a
    # backslash the reader sees: the data would no longer show as the text it is.
    mm = f"mmost://127.0.0.1:{sink.port}"
    config = make_config(
        tmp_path,
        {
            "as-is": {"url": f"{mm}/plain"},  # apprise sends text as it is
            "md": {"url": f"{mm}/md", "format": "markdown"},  # apprise converts text to md
        },
        rules_file(
            {
                "name": "text",
                "to": ["as-is", "md"],
                "format": "text",
                "body": "Plain customer: {{ payload.name }}",
            }
        ),
    )
    with running(config) as daemon:
        assert daemon.post(customer(1))[0] == 202
        wait_for(lambda: len(sink.received) >= 2, what="two Mattermost posts")
    texts = {r.path: r.json()["text"] for r in sink.received}
    assert set(texts) == {"/hooks/plain", "/hooks/md"}
    for path, text in texts.items():
        assert "<!channel>" not in text and "[click](" not in text, (path, text)
        assert "\\\\" not in text, (path, text)


# 2. Slack, in-process through the daemon's sender ----------------------------------------

SLACK_CONFIG = (
    CONFIG_HEAD
    + """\
destinations:
  slack: {url: "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general"}
"""
)


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_slack_payload_carries_entities_not_a_channel_ping(
    tmp_path: Path, sink: HTTPSink, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    from relayhook.config.load import load_config
    from relayhook.deliver.senders.apprise import AppriseSender
    from relayhook.model import Delivery, Event
    from relayhook.route.match import route

    real_request = requests.request

    def to_sink(method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        assert url.startswith("https://hooks.slack.com/"), url
        local = url.replace("https://hooks.slack.com/", f"http://127.0.0.1:{sink.port}/", 1)
        response = real_request(method, local, *args, **kwargs)
        response._content = b"ok"  # what Slack's webhook answers
        return response

    monkeypatch.setattr("apprise.plugins.slack.requests.request", to_sink)
    # A link the rule itself writes, in CommonMark; apprise turns it into Slack's form.
    link = " [ok](https://ok.example)" if fmt == "markdown" else ""
    path = write_config(
        tmp_path,
        {
            "safety.yaml": f"""\
            event: customer.created
            rules:
              - name: hello
                to: slack
                format: {fmt}
                body: "New customer: {{{{ payload.name }}}}{link}"
            """
        },
        SLACK_CONFIG,
    )
    config = load_config(str(path))
    body = customer(1)
    event = Event(1, "openvolt", "customer.created", time.time(), {}, body)
    (outcome,) = route(config.rules, config.destinations, event, config.render_timeout)
    (message,) = outcome.messages
    assert message.error is None and message.format == fmt
    sender = AppriseSender(config.destinations["slack"])  # type: ignore[arg-type]
    delivery = Delivery(
        1, 1, "slack", message.title, message.body, message.format, 0, time.time(), "info"
    )
    try:
        result = asyncio.run(sender.send(delivery))
    finally:
        asyncio.run(sender.close())
    (request,) = sink.received
    assert request.path == "/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", request.path
    posted = request.json()
    text = posted["attachments"][0]["text"]
    assert "&lt;!channel&gt;" in text, posted
    expected = (
        f"New customer: &lt;!channel&gt; @{WJ}channel @{WJ}all @{WJ}here @{WJ}everyone"
        " [click](https://evil.example)"  # no link in Slack's mrkdwn
    )
    assert text == expected + (" <https://ok.example|ok>" if fmt == "markdown" else ""), posted
    assert "<!channel>" not in text, posted
    assert "<https://evil.example|click>" not in text, posted
    for mention in MENTIONS:
        assert mention not in text, posted
    if fmt == "markdown":
        # The template's own Slack link is the rule's to write.
        assert "<https://ok.example|ok>" in text, posted
    assert result.ok, result


# 3. HTML email, end to end --------------------------------------------------------------


def test_html_email_escapes_data_and_keeps_the_template_markup(
    tmp_path: Path, smtp: SMTPSink
) -> None:
    name = "<img src=x onerror=alert(1)> <!channel> @here"
    config = make_config(
        tmp_path,
        {"mail": {"url": smtp.url(), "format": "html", "min_interval": "0s"}},
        rules_file(
            {
                "name": "mail",
                "to": ["mail"],
                "format": "html",
                "title": "New customer",
                "body": "<p>New customer: {{ payload.name }}</p>",
            }
        ),
    )
    with running(config) as daemon:
        assert daemon.post(customer(1, name))[0] == 202
        wait_for(lambda: len(smtp.messages) == 1, what="the email")
    (message,) = smtp.messages
    assert str(message["Subject"]) == "New customer"
    part = message.get_body(("html",))
    assert part is not None
    html = part.get_content()
    assert "<p>New customer: &lt;img src=x onerror=alert(1)&gt; &lt;!channel&gt; @here</p>" in html
    assert "<img" not in html
    assert "<!channel>" not in html


# 4. Severity ---------------------------------------------------------------------------


def test_severity_reaches_apprise_and_webhooks(tmp_path: Path, sink: HTTPSink) -> None:
    config = make_config(
        tmp_path,
        {
            "j": {"url": f"json://127.0.0.1:{sink.port}/sev"},
            "wh": {"webhook": f"http://127.0.0.1:{sink.port}/wh"},
        },
        rules_file(
            {
                "name": "warn",
                "to": ["j", "wh"],
                "severity": "warning",
                "body": "warn {{ payload.n }}",
            },
            {"name": "plain", "to": ["j"], "body": "plain {{ payload.n }}"},
            {
                "name": "templ",
                "to": ["j"],
                "severity": "{{ 'failure' if payload.n > 1 else 'success' }}",
                "body": "templ {{ payload.n }}",
            },
            {
                "name": "bad",
                "to": ["j"],
                "when": "payload.n == 1",
                "severity": "{{ payload.level }}",
                "body": "bad {{ payload.n }}",
            },
        ),
    )
    with running(config) as daemon:
        assert daemon.post(customer(1, "x", level="nonsense"))[0] == 202
        assert daemon.post(customer(2, "y", level="nonsense"))[0] == 202
        wait_for(
            lambda: len(sink.at("/sev")) >= 6 and len(sink.at("/wh")) >= 2,
            what="six json:// and two webhook posts",
        )
        time.sleep(0.3)
    got = sorted((r.json()["message"], r.json()["type"]) for r in sink.at("/sev"))
    assert got == [
        ("plain 1", "info"),
        ("plain 2", "info"),
        ("templ 1", "success"),
        ("templ 2", "failure"),
        ("warn 1", "warning"),
        ("warn 2", "warning"),
    ]
    hooks = sorted((r.json() for r in sink.at("/wh")), key=lambda b: b["body"])
    assert hooks[0] == {
        "title": "",
        "body": "warn 1",
        "format": "text",
        "rule": "warn",
        "severity": "warning",
        "event_type": "customer.created",
        "source": "openvolt",
    }
    assert hooks[1]["severity"] == "warning"
    db = tmp_path / "relayhook.db"
    (bad,) = db_rows(db, "SELECT * FROM deliveries WHERE rule = 'bad'")
    assert bad["state"] == "failed"
    assert bad["last_error"].endswith(
        "severity gave 'nonsense', not one of info, success, warning, failure"
    ), bad["last_error"]
    shown = show(config, bad["id"])
    assert shown["state"] == "failed"
    assert shown["last_error"] == bad["last_error"], shown


def test_check_names_a_misspelt_severity(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "sev.yaml": """\
            event: customer.created
            rules:
              - name: x
                to: ops-slack
                severity: warnign
                body: hello
            """
        },
    )
    result = run_relayhook("check", "--config", str(path))
    assert result.returncode == 1, result
    file = tmp_path / "rules" / "sev.yaml"
    assert (
        f"{file}:5: rule 'x': severity must be one of info, success, warning, failure"
        " (or a template giving one), got 'warnign' (did you mean 'warning'?)"
    ) in result.stderr.splitlines(), result.stderr


# 5. `| safe` ---------------------------------------------------------------------------

MM_CONFIG = (
    CONFIG_HEAD
    + """\
destinations:
  mm: {url: "mmost://127.0.0.1:9/tokenabc", format: markdown}
"""
)


def dry_run(tmp_path: Path, config: Path, event: dict[str, Any]) -> dict[str, Any]:
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(event))
    result = run_relayhook("test", str(event_path), "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_safe_warns_in_check_and_lets_data_through(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "safe.yaml": """\
            event: customer.created
            rules:
              - name: x
                to: mm
                format: markdown
                body: "Trusted: {{ payload.name | safe }}"
            """
        },
        MM_CONFIG,
    )
    result = run_relayhook("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    file = tmp_path / "rules" / "safe.yaml"
    assert result.stderr.splitlines() == [
        f"{file}:6: warning: rule 'x': body: '| safe' lets event data through unescaped:"
        " it can mention @channel or plant links in chat; keep it for values you trust"
    ], result.stderr
    assert result.stdout.strip().endswith(": OK"), result.stdout
    report = dry_run(tmp_path, path, customer(1))
    (message,) = report["rules"][0]["messages"]
    assert message["body"] == f"Trusted: {NAME}"


# 6. `relayhook test` shows what the destination gets -------------------------------------


def test_dry_run_shows_the_escaped_message_and_severity(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "dry.yaml": """\
            event: customer.created
            rules:
              - name: x
                to: mm
                format: markdown
                severity: warning
                title: "Customer {{ payload.name }}"
                body: "New customer: {{ payload.name }}"
            """
        },
        MM_CONFIG,
    )
    report = dry_run(tmp_path, path, customer(1))
    (message,) = report["rules"][0]["messages"]
    escaped = (
        f"\\<!channel\\> @{WJ}channel @{WJ}all @{WJ}here @{WJ}everyone"
        " \\[click\\](https://evil.example)"
    )
    assert message == {
        "destination": "mm",
        "item": None,
        "title": f"Customer {escaped}",
        "body": f"New customer: {escaped}",
        "format": "markdown",
        "severity": "warning",
        "silenced_by": None,
        "group": None,
        "throttle": None,
        "quiet_until": None,
        "error": None,
    }


# 7. console:// -------------------------------------------------------------------------


def test_console_prints_the_message_to_the_daemon_output(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        {"con": {"url": "console://"}},
        rules_file(
            {
                "name": "con",
                "to": ["con"],
                "severity": "success",
                "title": "Console title {{ payload.n }}",
                "body": "Console body for {{ payload.name }}",
            }
        ),
    )
    with running(config) as daemon:
        assert daemon.post(customer(1, "Ada @here"))[0] == 202
        db = tmp_path / "relayhook.db"
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 1, what="delivery")
        wait_for(lambda: "Console body for" in daemon.log(), 5, "the printed message")
        log = daemon.log()
    assert "Console title 1\n" in log, log
    assert "Console body for Ada @here\n" in log, log
    assert "── relayhook: success" in log, log
    assert show(config, 1)["state"] == "delivered"
