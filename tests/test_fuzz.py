"""Property-based: no request, however malformed, gets a 5xx or leaves a row behind."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import HTTPSink, db_count, running
from test_security import ADMIN, TOKEN, security_config

EXAMPLES = int(os.environ.get("RELAYHOOK_FUZZ_EXAMPLES", "10000"))

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_event = st.fixed_dictionaries(
    {"event_id": st.one_of(st.text(max_size=30), st.integers(), st.none(), _json)},
    optional={"delivery_id": st.text(max_size=12) | st.integers(), "payload": _json},
)
_body = st.one_of(
    _event.map(lambda v: json.dumps(v).encode()),
    _event.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    _json.map(lambda v: json.dumps(v).encode()),
    _event.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 200).map(lambda n: b"[" * n + b"]" * n),
    st.just(b""),
)
_token = st.sampled_from(
    ["", f"?token={TOKEN}", "?token=wrong", "?token=", f"?token={TOKEN}&x=%ff"]
)
_path = st.one_of(
    st.sampled_from(
        [
            "/hooks/openvolt",
            "/hooks/gh",
            "/hooks/std",
            "/hooks/stripe",
            "/hooks/hm",
            "/hooks/lan",
            "/hooks/nope",
            "/hooks/",
            "/hooks",
            "/api/events",
            "/api/events/1",
            "/api/deliveries",
            "/api/deliveries/1/replay",
            "/api/replay",
            "/healthz",
            "/readyz",
            "/",
            "/api/deliveries?since=forever",
            "/api/events?limit=x",
        ]
    ),
    st.text(st.sampled_from("abcdefXYZ0123456789-._~%/"), max_size=40).map(lambda p: "/" + p),
)
_header_name = st.sampled_from(
    [
        "Content-Type",
        "Authorization",
        "X-Hub-Signature-256",
        "X-GitHub-Event",
        "Stripe-Signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "X-Sig",
        "X-Forwarded-For",
        "X-Whatever",
    ]
)
_header_value = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    st.sampled_from(
        [
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            f"Bearer {TOKEN}",
            f"Bearer {ADMIN}",
            "t=1,v1=00",
            "v1,AAAA",
            "sha256=00",
            "203.0.113.9",
        ]
    ),
)
_anything = st.fixed_dictionaries(
    {
        "method": st.sampled_from(
            ["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
        ),
        "path": _path,
        "query": _token,
        "headers": st.dictionaries(_header_name, _header_value, max_size=4),
        "body": _body,
    }
)
# Mostly-valid events, so the accepting path (and dedupe) is fuzzed as hard as refusals.
_almost_valid = st.fixed_dictionaries(
    {
        "method": st.just("POST"),
        "path": st.just("/hooks/openvolt"),
        "query": st.just(f"?token={TOKEN}"),
        "headers": st.dictionaries(
            _header_name.filter(lambda h: h != "Content-Type"), _header_value, max_size=2
        ),
        "body": st.fixed_dictionaries(
            {"event_id": st.text(min_size=1, max_size=30).filter(str.strip)},
            optional={"delivery_id": st.text(max_size=3), "payload": _json},
        ).map(lambda v: json.dumps(v).encode()),
    }
)
_request = st.one_of(_anything, _almost_valid)


def test_fuzzed_requests_never_5xx_and_never_write_rejected_rows(tmp_path: Path) -> None:
    sink = HTTPSink().start()
    config = security_config(tmp_path, sink)
    db = tmp_path / "relayhook.db"
    accepted = 0
    statuses: dict[int, int] = {}
    try:
        with running(config) as daemon:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(req=_request)
            def one(req: dict[str, Any]) -> None:
                nonlocal accepted
                target = req["path"] + ("" if "?" in req["path"] else req["query"])
                conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
                try:
                    conn.request(req["method"], target, body=req["body"], headers=req["headers"])
                    response = conn.getresponse()
                    text = response.read()
                finally:
                    conn.close()
                statuses[response.status] = statuses.get(response.status, 0) + 1
                assert response.status < 500, (req, response.status, text)
                if req["method"] != "HEAD" and response.status >= 400:
                    assert "error" in json.loads(text), text
                if response.status == 202:
                    accepted += 1

            one()
            assert daemon.request("GET", "/readyz")[0] == 200
            assert daemon.proc is not None and daemon.proc.poll() is None
        # A 202 is the only answer that writes an event; nothing else left a row.
        assert db_count(db, "events") == accepted
        assert accepted >= EXAMPLES // 10, statuses  # the accepting path was exercised too
        assert sum(statuses.values()) >= EXAMPLES, statuses
        print(f"{sum(statuses.values())} requests, {accepted} accepted: {sorted(statuses.items())}")
    finally:
        sink.stop()
