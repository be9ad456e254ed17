"""The native webhook destination: the body of the user's shape, and the HTTP status decides."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

from conftest import run_relayhook
from support import HTTPSink, db_count, db_rows, running, wait_for
from test_daemon import event, make_config, sample

SIGN = "whsec_" + base64.b64encode(b"relayhook outbound signing key!").decode()


def webhook(sink: HTTPSink, path: str, **extra: Any) -> dict[str, Any]:
    return {"webhook": f"http://127.0.0.1:{sink.port}{path}", **extra}


def test_templated_body_headers_method_and_signature(tmp_path: Path, sink: HTTPSink) -> None:
    rules = {
        "m.yaml": {
            "event": "meter_data.received",
            "rules": [
                {
                    "name": "meter",
                    "for_each": "payload",
                    "to": ["billing"],
                    "title": "meter {{ item.meter_id }}",
                    "body": "from {{ item.start_interval }}",
                }
            ],
        }
    }
    body = (
        '{"meter": {{ item.meter_id | tojson }}, "text": {{ body | tojson }},'
        ' "title": {{ title | tojson }}, "n": {{ item_number }}}'
    )
    config = make_config(
        tmp_path,
        {
            "billing": webhook(
                sink,
                "/bill",
                method="PUT",
                headers={"X-Team": "energy"},
                body=body,
                sign=SIGN,
            )
        },
        rules,
    )
    with running(config) as d:
        assert d.post(sample("meter_data.received.daily.json"))[0] == 202
        wait_for(lambda: len(sink.at("/bill")) == 3, what="three webhook calls")
    got = sorted((r.json()["n"], r.json()) for r in sink.at("/bill"))
    assert got[0][1] == {
        "meter": "6514167223e3d1424bf82742",
        "text": "from 2024-05-01T00:00:00.000Z",
        "title": "meter 6514167223e3d1424bf82742",
        "n": 1,
    }
    request = sink.at("/bill")[0]
    assert request.headers["X-Team"] == "energy"
    assert request.headers["Content-Type"] == "application/json"
    # A receiver can verify the Standard Webhooks signature.
    msg_id, ts = request.headers["webhook-id"], request.headers["webhook-timestamp"]
    key = base64.b64decode(SIGN.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{ts}.".encode() + request.body, hashlib.sha256).digest()
    ).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}"
    assert msg_id.startswith("relayhook-") and abs(int(ts) - time.time()) < 60


def test_status_decides(tmp_path: Path, sink: HTTPSink) -> None:
    sink.responses["/gone"] = [404]
    sink.responses["/moved"] = [(301, {"Location": "https://elsewhere.example/"})]
    sink.responses["/busy"] = [
        (503, {"Retry-After": "1"}),
        (429, {"Retry-After": lambda: formatdate(time.time() + 2, usegmt=True)}),
        200,
    ]
    sink.responses["/flaky"] = [500, 408, 200]
    config = make_config(
        tmp_path,
        {
            "gone": webhook(sink, "/gone"),
            "moved": webhook(sink, "/moved"),
            "busy": webhook(sink, "/busy"),
            "flaky": webhook(sink, "/flaky"),
        },
        {
            "a.yaml": {
                "event": "*",
                "rules": [{"name": "r", "to": ["gone", "moved", "busy", "flaky"], "body": "x"}],
            }
        },
        retry="{attempts: 5, first_delay: 50ms, max_delay: 100ms}",
    )
    db = tmp_path / "relayhook.db"
    with running(config) as d:
        d.post(event(1))
        wait_for(
            lambda: db_count(db, "deliveries", "state IN ('delivered', 'dead')") == 4,
            20,
            "every delivery to finish",
        )
    rows = {r["destination"]: r for r in db_rows(db, "SELECT * FROM deliveries")}
    assert rows["gone"]["state"] == "dead" and rows["gone"]["attempts"] == 1
    assert rows["gone"]["last_error"] == 'HTTP 404: {"error": "sink says no"}'
    assert rows["moved"]["state"] == "dead" and rows["moved"]["attempts"] == 1
    assert rows["moved"]["last_error"] == (
        "HTTP 301: redirect to https://elsewhere.example/ not followed; fix the destination URL"
    )
    assert rows["flaky"]["state"] == "delivered" and rows["flaky"]["attempts"] == 3
    assert rows["busy"]["state"] == "delivered" and rows["busy"]["attempts"] == 3
    times = [r.at for r in sink.at("/busy")]
    # Retry-After, in seconds and as an HTTP date (whole seconds: 1-2 s away when sent),
    # outweighs the 50-100 ms backoff.
    assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 0.9, times
    log = show_attempts(config, rows["busy"]["id"])
    assert [a["outcome"] for a in log] == ["failed", "failed", "delivered"]
    assert log[0]["error"] == 'HTTP 503: {"error": "sink says no"}'


def show_attempts(config: Path, delivery_id: int) -> list[dict[str, Any]]:
    result = run_relayhook("show", str(delivery_id), "--json", "--config", str(config))
    return list(json.loads(result.stdout)["attempts_log"])


def test_default_body_and_bad_config(tmp_path: Path, sink: HTTPSink) -> None:
    config = make_config(
        tmp_path,
        {"plain": webhook(sink, "/p")},
        {
            "a.yaml": {
                "event": "*",
                "rules": [
                    {"name": "r", "to": ["plain"], "title": "T {{ payload.n }}", "body": "B"}
                ],
            }
        },
    )
    with running(config) as d:
        d.post(event(7))
        wait_for(lambda: len(sink.at("/p")) == 1)
    assert sink.at("/p")[0].json() == {
        "title": "T 7",
        "body": "B",
        "format": "text",
        "rule": "r",
        "severity": "info",
        "event_type": "customer.created",
        "source": "openvolt",
    }
    (tmp_path / "bad").mkdir()
    bad = make_config(
        tmp_path / "bad", {"w": webhook(sink, "/p", method="GET", sign="not base64!")}, {}
    )
    result = run_relayhook("check", "--config", str(bad))
    assert result.returncode == 1
    assert "destination 'w': method: must be POST, PUT or PATCH, got 'GET'" in result.stderr
    assert (
        "destination 'w': sign: must be a Standard Webhooks secret: whsec_ followed by base64"
        in result.stderr
    )


def test_a_send_in_flight_survives_two_quick_reloads(tmp_path: Path, sink: HTTPSink) -> None:
    # The first reload keeps the destination's HTTP pool, the second replaces it; the old
    # pool must stay open until the send that began before both is done.
    sink.responses["/slow"] = ["hang"]
    sink.hang_seconds = 2
    rules = {"all.yaml": {"event": "*", "rules": [{"name": "r", "to": ["hook"], "body": "x"}]}}
    admin = "admin-token-" + "x" * 8
    config = make_config(
        tmp_path,
        {"hook": webhook(sink, "/slow", timeout="10s")},
        rules,
        extra=f"admin_token: {admin}\n",
    )
    db = tmp_path / "relayhook.db"
    with running(config) as daemon:
        assert daemon.proc is not None
        assert daemon.post(event(1))[0] == 202
        wait_for(lambda: len(sink.at("/slow")) == 1, 10, "the send to begin")
        for timeout in ("10s", "9s"):
            make_config(
                tmp_path,
                {"hook": webhook(sink, "/slow", timeout=timeout)},
                rules,
                extra=f"admin_token: {admin}\n",
            )
            answer = daemon.request(
                "POST", "/api/reload", headers={"Authorization": f"Bearer {admin}"}
            )
            assert answer[0] == 200, answer
        wait_for(lambda: db_count(db, "attempts") == 1, 10, "the attempt")
    (attempt,) = db_rows(db, "SELECT outcome, error FROM attempts")
    assert (attempt["outcome"], attempt["error"]) == ("delivered", None)
