"""Silences: muted, then flowing again. In process on a clock moved by hand (tests/
inproc.py: the real daemon, store, admin API and senders to a loopback sink); one real
daemon beside the CLI keeps the real refresh timer honest."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conftest import run_relayhook
from inproc import relay, run
from support import HTTPSink, db_rows, running, wait_for
from test_daemon import make_config

ADMIN = "silence-admin-token-0123456789"


def meter_event(n: int, meters: list[str]) -> dict[str, Any]:
    return {
        "event_id": "meter_data.received",
        "delivery_id": f"m-{n}",
        "payload": [{"meter_id": m, "start_interval": f"t{n}"} for m in meters],
    }


def silences_config(tmp_path: Path, sink: HTTPSink) -> Path:
    return make_config(
        tmp_path,
        # The circuit would pause a destination down this long; these tests want retries.
        {"hook": {"webhook": f"http://127.0.0.1:{sink.port}/m", "circuit": "off"}},
        {
            "meter.yaml": {
                "event": "meter_data.received",
                "rules": [
                    {
                        "name": "meter-data",
                        "for_each": "payload",
                        "to": ["hook"],
                        "title": "{{ item.meter_id }} {{ item.start_interval }}",
                        "body": "x",
                    }
                ],
            }
        },
        retry="{attempts: 100, first_delay: 100ms, max_delay: 300ms}",
        extra=f"admin_token: {ADMIN}\n",
    )


def titles(sink: HTTPSink) -> list[str]:
    return sorted(r.json()["title"] for r in sink.at("/m"))


def cli(config: Path, *args: str) -> Any:
    return run_relayhook("silence", *args, "--config", str(config))


AUTH = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}


def test_a_silence_mutes_matching_items_until_it_is_expired(tmp_path: Path, sink: HTTPSink) -> None:
    config = silences_config(tmp_path, sink)

    async def main() -> None:
        async with relay(config, sink) as r:
            status, made = await r.request(
                "POST",
                "/api/silences",
                {"matchers": ['item.meter_id=~"65a7.*"'], "for": "2h", "comment": "backfill"},
                AUTH,
            )
            assert status == 201
            silence_id = made["id"]
            await r.advance(1)  # the relay reads silences again at least every second
            assert (await r.post(meter_event(1, ["65a7aa", "77bb01", "65a7cc"])))[0] == 202
            await r.settle()
            assert titles(sink) == ["77bb01 t1"]
            rows = r.rows("SELECT id, title, state, silence_id FROM deliveries ORDER BY id")
            assert [(x["title"], x["state"], x["silence_id"]) for x in rows] == [
                ("65a7aa t1", "silenced", silence_id),
                ("77bb01 t1", "delivered", None),
                ("65a7cc t1", "silenced", silence_id),
            ]
            (listed,) = (await r.request("GET", "/api/silences", headers=AUTH))[1]
            assert listed["id"] == silence_id and listed["held"] == 2
            assert listed["matchers"] == ['item.meter_id=~"65a7.*"']
            assert listed["comment"] == "backfill"
            # A replay is a person asking for it: it goes out while the silence holds.
            replay = f"/api/deliveries/{rows[2]['id']}/replay"
            assert (await r.request("POST", replay, headers=AUTH))[0] == 201
            await r.settle()
            assert "65a7cc t1" in titles(sink)

            expired = await r.request("DELETE", f"/api/silences/{silence_id}", headers=AUTH)
            assert expired == (200, {"expired": silence_id})
            assert (await r.request("GET", "/api/silences", headers=AUTH))[1] == []
            await r.advance(1)
            await r.post(meter_event(2, ["65a7aa"]))
            await r.settle()
            assert "65a7aa t2" in titles(sink)  # a message after the silence ended
            # Expiring sent nothing by itself: the held ones are still silenced, until replayed.
            assert "65a7aa t1" not in titles(sink)
            replay = f"/api/deliveries/{rows[0]['id']}/replay"
            assert (await r.request("POST", replay, headers=AUTH))[0] == 201
            await r.settle()
            assert "65a7aa t1" in titles(sink)
            assert (
                'relayhook_notifications_suppressed_total{destination="hook",reason="silenced"} 2.0'
                in await r.metrics()
            )

    run(main)


def test_a_new_silence_takes_hold_within_a_second_of_the_clock(
    tmp_path: Path, sink: HTTPSink
) -> None:
    config = silences_config(tmp_path, sink)

    async def main() -> None:
        async with relay(config, sink) as r:
            await r.post(meter_event(1, ["65a7aa"]))  # reads the silences: there are none
            await r.settle()
            await r.request(
                "POST", "/api/silences", {"matchers": ["rule=meter-data"], "for": "1h"}, AUTH
            )
            await r.advance(0.5)
            await r.post(meter_event(2, ["65a7aa"]))  # read half a second ago: not seen yet
            await r.advance(0.5)
            await r.post(meter_event(3, ["65a7aa"]))  # a second: read again, muted
            await r.settle()
            assert titles(sink) == ["65a7aa t1", "65a7aa t2"]
            await r.advance(3600)  # the hour is over: it lets go within a second
            await r.post(meter_event(4, ["65a7aa"]))
            await r.settle()
            assert titles(sink) == ["65a7aa t1", "65a7aa t2", "65a7aa t4"]

    run(main)


def test_a_silence_from_the_cli_mutes_a_running_daemon(tmp_path: Path, sink: HTTPSink) -> None:
    """The above on the real clock, beside a real daemon, through the CLI, shortened."""
    config = silences_config(tmp_path, sink)
    db = tmp_path / "relayhook.db"
    with running(config) as d:
        added = cli(config, "add", 'item.meter_id=~"65a7.*"', "--for", "2h")
        assert added.returncode == 0, added.stderr
        silence_id = int(added.stdout.strip())
        time.sleep(1.2)  # the daemon reads silences again at least every second
        assert d.post(meter_event(1, ["65a7aa", "77bb01"]))[0] == 202
        wait_for(lambda: titles(sink) == ["77bb01 t1"], what="the unsilenced item")
        rows = db_rows(db, "SELECT title, state, silence_id FROM deliveries ORDER BY id")
        assert [(x["title"], x["state"], x["silence_id"]) for x in rows] == [
            ("65a7aa t1", "silenced", silence_id),
            ("77bb01 t1", "delivered", None),
        ]
        listed = json.loads(cli(config, "list", "--json").stdout.splitlines()[0])
        assert listed["id"] == silence_id and listed["held"] == 1
        expired = cli(config, "expire", str(silence_id))
        assert expired.returncode == 0 and expired.stdout.strip() == f"silence {silence_id} expired"
        assert cli(config, "list").stdout.strip() == "no silences"
        time.sleep(1.2)
        d.post(meter_event(2, ["65a7aa"]))
        wait_for(lambda: "65a7aa t2" in titles(sink), what="a message after the silence ended")


def test_waiting_deliveries_are_checked_again_before_each_attempt(
    tmp_path: Path, sink: HTTPSink
) -> None:
    sink.responses["/m"] = [503]  # down: deliveries wait to be retried
    config = silences_config(tmp_path, sink)

    async def main() -> None:
        async with relay(config, sink) as r:
            await r.post(meter_event(1, ["65a7aa", "77bb01"]))
            await r.settle()
            assert len(sink.at("/m")) == 2  # first attempts
            made = {"matchers": ["item.meter_id=65a7aa"], "for": "1h"}
            assert (await r.request("POST", "/api/silences", made, AUTH))[0] == 201
            await r.advance(1)  # read the silence; both were retried meanwhile
            assert len(sink.at("/m")) > 2
            sink.responses["/m"] = [200]
            await r.advance(1)
            states = {x["title"]: x["state"] for x in r.rows("SELECT title, state FROM deliveries")}
            assert states == {"65a7aa t1": "silenced", "77bb01 t1": "delivered"}

    run(main)


def test_bad_silences_are_refused_with_the_reason(tmp_path: Path, sink: HTTPSink) -> None:
    config = silences_config(tmp_path, sink)
    cases = [
        (["bare", "--for", "1h"], "'bare' is not a matcher"),
        (["rule=~((", "--for", "1h"], "bad regular expression"),
        (["colour=red", "--for", "1h"], "unknown field 'colour'"),
        (["rule=x"], "give --for DURATION or --until TIME: a silence must end"),
        (["rule=x", "--for", "soon"], "expected a duration"),
        ([], "give at least one matcher"),
    ]
    for args, reason in cases:
        result = cli(config, "add", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert reason in result.stderr, (args, result.stderr)
    assert cli(config, "add", "rule=x", "--for", "1h").stdout.strip() == "1"  # makes the log
    assert cli(config, "expire", "99").stderr.strip() == "no silence 99 in force"


def test_silences_api(tmp_path: Path, sink: HTTPSink) -> None:
    config = silences_config(tmp_path, sink)

    async def main() -> None:
        async with relay(config, sink) as r:

            async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
                return await r.request(method, path, body, AUTH)

            status, made = await call(
                "POST", "/api/silences", {"matchers": ["rule=meter-data"], "for": "1h"}
            )
            assert status == 201 and isinstance(made["id"], int)
            status, listed = await call("GET", "/api/silences")
            assert status == 200 and [x["id"] for x in listed] == [made["id"]]
            assert listed[0]["author"] == "api" and listed[0]["state"] == "active"
            assert listed[0]["ends_at"] == r.clock.now + 3600  # on the relay's clock
            for body, error in [
                ({"matchers": ["bare"], "for": "1h"}, "'bare' is not a matcher"),
                ({"matchers": ["rule=x"]}, 'give "for"'),
                ({"matchers": [], "for": "1h"}, "matchers must be a non-empty list"),
                ({"matchers": ["rule=x"], "for": "nope"}, "expected a duration"),
            ]:
                status, answer = await call("POST", "/api/silences", body)
                assert status == 400 and error in answer["error"], (body, answer)
            assert await call("DELETE", f"/api/silences/{made['id']}") == (
                200,
                {"expired": made["id"]},
            )
            assert (await call("DELETE", f"/api/silences/{made['id']}"))[0] == 404
            assert (await call("GET", "/api/silences"))[1] == []
            assert [x["state"] for x in (await call("GET", "/api/silences?all=true"))[1]] == [
                "ended"
            ]
            assert (await r.request("GET", "/api/silences"))[0] == 401

    run(main)


def test_dry_run_shows_what_a_silence_would_mute(tmp_path: Path, sink: HTTPSink) -> None:
    config = silences_config(tmp_path, sink)
    path = tmp_path / "event.json"
    path.write_text(json.dumps(meter_event(1, ["65a7aa", "77bb01"])))
    before = run_relayhook("test", str(path), "--config", str(config))
    assert before.stdout.strip().endswith("; 2 messages would be sent")
    assert cli(config, "add", "item.meter_id=65a7aa", "--for", "1h").stdout.strip() == "1"
    after = run_relayhook("test", str(path), "--config", str(config))
    assert '          silenced by silence 1: item.meter_id="65a7aa"' in after.stdout.splitlines()
    assert after.stdout.strip().endswith("; 1 message would be sent, 1 silenced")
    report = json.loads(run_relayhook("test", str(path), "--json", "--config", str(config)).stdout)
    (rule,) = report["rules"]
    assert [m["silenced_by"] for m in rule["messages"]] == [1, None]
