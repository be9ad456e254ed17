"""Inbound security: signature schemes, limits, admin API, redaction (issue: inbound security)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from pathlib import Path

import yaml

from conftest import run_relayhook
from relayhook.policy.signatures import GithubAuth, HmacAuth, StandardWebhooksAuth, StripeAuth
from support import HTTPSink, db_count, running, wait_for

GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_VECTOR = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
STRIPE_SECRETS = ["whsec_stripe_old_0123456789", "whsec_stripe_new_9876543210"]
STD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HMAC_SECRET = "hmac-secret-value-42"
TOKEN = "openvolt-token-7f3a9c"
ADMIN = "admin-token-0123456789abcdef"
SLACK_TOKEN = "xoxbSECRETslackTOKEN123456"


# -- the schemes against their published or computed vectors ----------------------------


def test_github_published_vector() -> None:
    auth = GithubAuth((GITHUB_SECRET,))
    assert auth.verify(b"Hello, World!", {"x-hub-signature-256": GITHUB_VECTOR}, {}, 0) is None
    assert auth.verify(b"Hello, World?", {"x-hub-signature-256": GITHUB_VECTOR}, {}, 0) == (
        "X-Hub-Signature-256 signature does not match"
    )
    assert auth.verify(b"x", {}, {}, 0) == "missing X-Hub-Signature-256 header"


def test_standard_webhooks_published_vector() -> None:
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    body = b'{"test": 2432232314}'
    for secret in (STD_SECRET, STD_SECRET.removeprefix("whsec_")):
        assert StandardWebhooksAuth((secret,)).verify(body, headers, {}, 1614265330) is None


def stripe_header(body: bytes, secret: str, t: int, extra_v1: list[str] | None = None) -> str:
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return ",".join([f"t={t}", *[f"v1={s}" for s in extra_v1 or []], f"v1={sig}"])


def std_headers(
    body: bytes, secret: str, msg_id: str, t: int, extra: list[str] | None = None
) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    sig = base64.b64encode(hmac.new(key, f"{msg_id}.{t}.".encode() + body, hashlib.sha256).digest())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(t),
        "webhook-signature": " ".join([*(extra or []), f"v1,{sig.decode()}"]),
    }


def test_stripe_vectors() -> None:
    auth = StripeAuth(tuple(STRIPE_SECRETS))
    body, now = b'{"type": "invoice.paid"}', 1_700_000_000
    several = stripe_header(body, STRIPE_SECRETS[1], now, extra_v1=["00" * 32, "ab" * 32])
    assert auth.verify(body, {"stripe-signature": several}, {}, now) is None
    old = stripe_header(body, STRIPE_SECRETS[0], now - 301)
    assert auth.verify(body, {"stripe-signature": old}, {}, now) == (
        "Stripe-Signature timestamp is older than 300 s"
    )
    wrong = stripe_header(body, "whsec_not_ours", now)
    assert (
        auth.verify(body, {"stripe-signature": wrong}, {}, now) == "Stripe-Signature does not match"
    )
    assert auth.verify(body, {"stripe-signature": "v1=abc"}, {}, now) == (
        "malformed Stripe-Signature header: expected t=... and v1=..."
    )


def test_standard_webhooks_cases() -> None:
    auth = StandardWebhooksAuth((STD_SECRET,))
    body, now = b'{"type": "x"}', 1_700_000_000
    assert auth.verify(body, {}, {}, now) == (
        "missing webhook-id, webhook-timestamp, webhook-signature headers"
    )
    good = std_headers(body, STD_SECRET, "msg_1", now, extra=["v1,AAAA", "v2,zzzz"])
    assert auth.verify(body, good, {}, now) is None
    assert auth.verify(body, std_headers(body, STD_SECRET, "msg_1", now - 301), {}, now) == (
        "webhook-timestamp is older than 300 s"
    )
    assert auth.verify(body, std_headers(body, STD_SECRET, "msg_1", now + 301), {}, now) == (
        "webhook-timestamp is too far in the future"
    )
    other = "whsec_" + base64.b64encode(b"another key entirely!").decode()
    assert auth.verify(body, std_headers(body, other, "msg_1", now), {}, now) == (
        "webhook-signature does not match"
    )


def test_generic_hmac_base64_sha512_with_rotation() -> None:
    auth = HmacAuth(
        ("old-secret", HMAC_SECRET), header="X-Sig", algorithm="sha512", encoding="base64"
    )
    body = b'{"a": 1}'
    sig = base64.b64encode(hmac.new(HMAC_SECRET.encode(), body, hashlib.sha512).digest()).decode()
    assert auth.verify(body, {"x-sig": sig}, {}, 0) is None
    assert auth.verify(body + b" ", {"x-sig": sig}, {}, 0) == "X-Sig signature does not match"


# -- a real daemon with every scheme ---------------------------------------------------------


def security_config(root: Path, sink: HTTPSink) -> Path:
    (root / "rules").mkdir()
    (root / "rules" / "all.yaml").write_text(
        yaml.safe_dump(
            {
                "event": "*",
                "rules": [
                    {
                        "name": "echo",
                        "to": ["chat"],
                        "title": "{{ source }} {{ event_type }}",
                        "body": "ok",
                    },
                ],
            }
        )
    )
    config = {
        "database": "relayhook.db",
        "rules": "rules",
        "admin_token": ADMIN,
        "trusted_proxies": ["127.0.0.1/32"],
        "sources": {
            "openvolt": {
                "event_key": "delivery_id",
                "auth": {"token": [TOKEN, "second-token-xyz"]},
                "max_body": "1MiB",
                "max_depth": 32,
            },
            "gh": {"auth": {"github": GITHUB_SECRET}},
            "stripe": {"event_type": "type", "event_key": "id", "auth": {"stripe": STRIPE_SECRETS}},
            "std": {"event_type": "type", "auth": {"standard_webhooks": STD_SECRET}},
            "hm": {
                "event_type": "kind",
                "auth": {"hmac": {"secret": HMAC_SECRET, "header": "X-Sig", "prefix": "sha256="}},
            },
            "lan": {"auth": {"token": TOKEN}, "allow_ips": ["10.0.0.0/8"]},
            "proxied": {"auth": {"token": TOKEN}, "allow_ips": ["203.0.113.0/24"]},
        },
        "destinations": {"chat": {"url": f"json://u:{SLACK_TOKEN}@127.0.0.1:{sink.port}/chat"}},
        "retry": {"attempts": 2, "first_delay": "50ms", "max_delay": "100ms"},
        "read_timeout": "2s",
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root / "config.yaml"


def test_schemes_end_to_end(tmp_path: Path, sink: HTTPSink) -> None:
    config = security_config(tmp_path, sink)
    db = tmp_path / "relayhook.db"
    with running(config) as d:
        # GitHub: the published vector's body is not JSON: past auth, refused as a body.
        hdr = {
            "X-Hub-Signature-256": GITHUB_VECTOR,
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": "g1",
        }
        assert d.post(None, "gh", None, raw=b"Hello, World!", headers=hdr) == (
            400,
            {"error": "request body is not valid JSON: Expecting value at line 1 column 1"},
        )
        body = b'{"zen": "Keep it logically awesome."}'
        sig = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert (
            d.post(None, "gh", None, raw=body, headers={**hdr, "X-Hub-Signature-256": sig})[0]
            == 202
        )
        assert d.post(None, "gh", None, raw=body, headers={**hdr, "X-Hub-Signature-256": sig}) == (
            200,
            {"duplicate": True, "event_id": 1},
        )  # X-GitHub-Delivery is the dedupe key
        assert d.post(
            None, "gh", None, raw=body + b" ", headers={**hdr, "X-Hub-Signature-256": sig}
        ) == (401, {"error": "X-Hub-Signature-256 signature does not match"})
        # Stripe: several v1 with one valid; old timestamp; wrong secret.
        sbody = b'{"id": "evt_1", "type": "invoice.paid"}'
        now = int(time.time())
        ok = stripe_header(sbody, STRIPE_SECRETS[0], now, extra_v1=["11" * 32])
        assert d.post(None, "stripe", None, raw=sbody, headers={"Stripe-Signature": ok})[0] == 202
        old = stripe_header(sbody, STRIPE_SECRETS[0], now - 400)
        assert d.post(None, "stripe", None, raw=sbody, headers={"Stripe-Signature": old}) == (
            401,
            {"error": "Stripe-Signature timestamp is older than 300 s"},
        )
        bad = stripe_header(sbody, "whsec_wrong", now)
        assert d.post(None, "stripe", None, raw=sbody, headers={"Stripe-Signature": bad}) == (
            401,
            {"error": "Stripe-Signature does not match"},
        )
        # Standard Webhooks: a replayed webhook-id is a duplicate.
        wbody = b'{"type": "user.created"}'
        h = std_headers(wbody, STD_SECRET, "msg_42", now)
        first = d.post(None, "std", None, raw=wbody, headers=h)
        assert first[0] == 202
        assert d.post(None, "std", None, raw=wbody, headers=h) == (
            200,
            {"duplicate": True, **first[1]},
        )
        assert d.post(None, "std", None, raw=wbody, headers={"webhook-id": "m"}) == (
            401,
            {"error": "missing webhook-timestamp, webhook-signature headers"},
        )
        # Generic HMAC with a prefix.
        hbody = b'{"kind": "thing.happened"}'
        hsig = "sha256=" + hmac.new(HMAC_SECRET.encode(), hbody, hashlib.sha256).hexdigest().upper()
        assert d.post(None, "hm", None, raw=hbody, headers={"X-Sig": hsig})[0] == 202
        # Token rotation: both tokens work.
        assert d.post({"event_id": "a.b", "delivery_id": "r1"}, token="second-token-xyz")[0] == 202
        # Address allow-lists, and X-Forwarded-For from a trusted proxy.
        assert d.post({"event_id": "a.b"}, "lan", TOKEN) == (
            403,
            {"error": "client address 127.0.0.1 is not allowed for this source"},
        )
        assert (
            d.post(
                {"event_id": "a.b"}, "proxied", TOKEN, headers={"X-Forwarded-For": "203.0.113.9"}
            )[0]
            == 202
        )
        assert d.post(
            {"event_id": "a.b"},
            "proxied",
            TOKEN,
            headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"},
        ) == (403, {"error": "client address 198.51.100.7 is not allowed for this source"})
        events = db_count(db, "events")
        assert events == 6
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 6, what="deliveries")


def test_limits(tmp_path: Path, sink: HTTPSink) -> None:
    config = security_config(tmp_path, sink)
    db = tmp_path / "relayhook.db"
    with running(config) as d:
        big = b'{"event_id": "x", "pad": "' + b"a" * (3 * 1024 * 1024) + b'"}'
        assert d.post(None, raw=big, token=TOKEN) == (
            413,
            {"error": "request body is larger than the 1048576-byte limit for this source"},
        )
        deep = b"[" * 5000 + b"]" * 5000
        assert d.post(None, raw=deep, token=TOKEN) == (
            400,
            {"error": "request body nests deeper than 32 levels"},
        )
        form = d.request(
            "POST",
            f"/hooks/openvolt?token={TOKEN}",
            b"payload=%7B%7D",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert form == (
            415,
            {
                "error": "content type application/x-www-form-urlencoded is not"
                " accepted: send the event as JSON (application/json)"
            },
        )
        # JSON with another (or no) content type is accepted.
        plain = d.request(
            "POST",
            f"/hooks/openvolt?token={TOKEN}",
            b'{"event_id": "a.b", "delivery_id": "p"}',
            {"Content-Type": "text/plain"},
        )
        assert plain[0] == 202
        assert db_count(db, "events") == 1

        # A client sending one byte a second does not delay others, and times out.
        slow = socket.create_connection(("127.0.0.1", d.port))
        slow.sendall(
            f"POST /hooks/openvolt?token={TOKEN} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )
        started = time.monotonic()
        for n in range(20):
            assert d.post({"event_id": "a.b", "delivery_id": f"fast-{n}"}, token=TOKEN)[0] == 202
        assert time.monotonic() - started < 2
        slow.settimeout(10)
        for _ in range(5):
            try:
                slow.sendall(b" ")
            except OSError:
                break
            time.sleep(1)
        answer = slow.recv(4096).decode()
        slow.close()
        assert answer.startswith("HTTP/1.1 408"), answer
        assert '"request body not received within 2 s"' in answer
        assert db_count(db, "events") == 21


def test_admin_api(tmp_path: Path, sink: HTTPSink) -> None:
    config = security_config(tmp_path, sink)
    with running(config) as d:
        d.post({"event_id": "a.b", "delivery_id": "x1"}, token=TOKEN)
        wait_for(
            lambda: db_count(tmp_path / "relayhook.db", "deliveries", "state = 'delivered'") == 1
        )
        assert d.request("GET", "/api/deliveries") == (
            401,
            {"error": "missing admin token: send Authorization: Bearer ..."},
        )
        assert d.request("GET", "/api/deliveries", headers={"Authorization": "Bearer nope"}) == (
            401,
            {"error": "invalid admin token"},
        )
        assert d.request("GET", f"/api/deliveries?token={ADMIN}")[0] == 401
        auth = {"Authorization": f"Bearer {ADMIN}"}
        status, rows = d.request("GET", "/api/deliveries?status=delivered", headers=auth)
        assert status == 200 and [r["id"] for r in rows] == [1]
        status, event = d.request("GET", "/api/events/1", headers=auth)
        assert status == 200 and event["deliveries"][0]["state"] == "delivered"
        assert d.request("GET", "/api/deliveries/99", headers=auth) == (
            404,
            {"error": "no delivery 99"},
        )
        status, made = d.request("POST", "/api/deliveries/1/replay", headers=auth)
        assert status == 201 and made == {"replayed": [{"original": 1, "new": 2}]}
        status, made = d.request("POST", "/api/replay", json.dumps({"ids": [1]}).encode(), auth)
        assert status == 200 and made == {"replayed": [{"original": 1, "new": 3}]}
        assert d.request("POST", "/api/replay", b"{}", auth) == (
            400,
            {"error": 'send {"ids": [1, 2]} or {"dead_since": "24h"}'},
        )
        status, delivery = d.request("GET", "/api/deliveries/1", headers=auth)
        assert status == 200 and len(delivery["attempts_log"]) == 1


def test_admin_api_is_off_without_a_token(tmp_path: Path, sink: HTTPSink) -> None:
    config = security_config(tmp_path, sink)
    text = config.read_text().replace(f"admin_token: {ADMIN}\n", "")
    config.write_text(text)
    with running(config) as d:
        assert d.request("GET", "/api/deliveries", headers={"Authorization": "Bearer "}) == (
            401,
            {"error": "the admin API is off: set admin_token in the config"},
        )


def test_no_secret_leaks_into_logs_database_or_cli(tmp_path: Path, sink: HTTPSink) -> None:
    sink.responses["/chat"] = [500, 200]
    config = security_config(tmp_path, sink)
    with running(config) as d:
        d.post({"event_id": "a.b", "delivery_id": "s1"}, token=TOKEN)
        d.post(
            {"event_id": "a.b", "delivery_id": "s2"},
            token=None,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        d.post({"event_id": "a.b"}, token="wrong-" + TOKEN)
        body = b'{"type": "x"}'
        d.post(
            None,
            "std",
            None,
            raw=body,
            headers=std_headers(body, STD_SECRET, "m1", int(time.time())),
        )
        db = tmp_path / "relayhook.db"
        wait_for(lambda: db_count(db, "deliveries", "state = 'delivered'") == 3, what="deliveries")
        auth = {"Authorization": f"Bearer {ADMIN}"}
        api = json.dumps(
            [
                d.request("GET", "/api/deliveries/1", headers=auth),
                d.request("GET", "/api/events/1", headers=auth),
            ]
        )
        assert d.stop() == 0
        log = d.log()
    cli = "".join(
        r.stdout + r.stderr
        for r in (
            run_relayhook("deliveries", "--json", "--config", str(config)),
            run_relayhook("show", "1", "--config", str(config)),
            run_relayhook("show", "1", "--json", "--config", str(config)),
            run_relayhook("check", "--config", str(config)),
        )
    )
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("relayhook.db*"))
    assert "attempt 1 retrying" in log  # the failed attempt was logged...
    for secret in (
        TOKEN,
        ADMIN,
        SLACK_TOKEN,
        STD_SECRET,
        STD_SECRET.removeprefix("whsec_"),
        GITHUB_SECRET,
        HMAC_SECRET,
        *STRIPE_SECRETS,
    ):
        assert secret not in log, secret  # ...without any secret
        assert secret.encode() not in stored, secret
        assert secret not in cli, secret
        assert secret not in api, secret
