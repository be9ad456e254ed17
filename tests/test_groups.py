"""Groups and throttles. Their logic runs in process on a clock moved by hand (tests/
inproc.py: the real daemon, store, HTTP app and senders to a loopback sink); two short
real daemons keep the real timers honest: a group across SIGKILL, a throttle's window."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import yaml

from conftest import run_relayhook
from inproc import relay, run
from support import HTTPSink, running, wait_for
from test_daemon import make_config


def readings(n: int, meter: str, count: int = 1) -> dict[str, Any]:
    return {
        "event_id": "meter_data.received",
        "delivery_id": f"{meter}-{n}",
        "payload": [{"meter_id": meter, "start_interval": f"t{n}.{i}"} for i in range(count)],
    }


def group_config(tmp_path: Path, sink: HTTPSink, group: dict[str, Any]) -> Path:
    return make_config(
        tmp_path,
        {"hook": {"webhook": f"http://127.0.0.1:{sink.port}/g"}},
        {
            "meter.yaml": {
                "event": "meter_data.received",
                "rules": [
                    {
                        "name": "meter-data",
                        "for_each": "payload",
                        "to": ["hook"],
                        "title": "{{ item.meter_id }} {{ item.start_interval }}",
                        "body": "reading",
                        "group": group,
                        "digest_title": "{{ count }} readings for meter {{ key }} ({{ reason }})",
                    }
                ],
            }
        },
    )


def sent(sink: HTTPSink) -> list[dict[str, Any]]:
    return [r.json() for r in sink.at("/g")]


def throttle_config(tmp_path: Path, sink: HTTPSink, per: str) -> Path:
    config = group_config(tmp_path, sink, {"wait": "1s"})
    rules = tmp_path / "rules" / "meter.yaml"
    doc = yaml.safe_load(rules.read_text())
    rule = doc["rules"][0]
    del rule["group"]
    rule["throttle"] = {"key": "{{ item.meter_id }}", "limit": 2, "per": per}
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config


def test_a_burst_is_one_digest_per_key_when_its_wait_ends(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "3s"})

    async def main() -> None:
        async with relay(config, sink) as r:
            for n in range(13):
                assert (await r.post(readings(n, "65a7")))[0] == 202
            await r.post(readings(0, "77bb"))
            await r.post(readings(1, "77bb"))
            await r.advance(2.9)
            assert sent(sink) == []  # the wait is not over
            await r.advance(0.1)
            got = sorted(sent(sink), key=lambda m: m["title"])
            assert [m["title"] for m in got] == [
                "13 readings for meter 65a7 (wait)",
                "2 readings for meter 77bb (wait)",
            ]
            assert got[0]["body"].splitlines() == [f"- 65a7 t{n}.0" for n in range(13)]
            await r.advance(60)
            assert len(sent(sink)) == 2  # and nothing more
            states = r.rows("SELECT state, COUNT(*) n FROM deliveries GROUP BY state")
            assert {x["state"]: x["n"] for x in states} == {"grouped": 15, "delivered": 2}
            assert 'reason="grouped"} 15.0' in await r.metrics()

    run(main)


def test_a_group_of_one_goes_as_that_message(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "1s"})

    async def main() -> None:
        async with relay(config, sink) as r:
            await r.post(readings(1, "65a7"))
            await r.advance(0.9)
            assert sent(sink) == []
            await r.advance(0.1)
            (only,) = sent(sink)
            assert only["title"] == "65a7 t1.0" and only["body"] == "reading"

    run(main)


def test_a_waiting_group_keeps_its_time_across_a_restart(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "4s"})

    async def main() -> None:
        async with relay(config, sink) as r:
            for n in range(5):
                await r.post(readings(n, "65a7"))
            await r.advance(1)
            clock = r.clock
        assert sent(sink) == []  # stopping sent nothing early
        async with relay(config, sink, clock=clock) as r:
            await r.advance(2.9)
            assert sent(sink) == []  # due 4 s after the first message, not at the start
            await r.advance(0.1)
            assert [m["title"] for m in sent(sink)] == ["5 readings for meter 65a7 (wait)"]
            await r.advance(30)
            assert len(sent(sink)) == 1

    run(main)


def test_sigkill_while_a_group_waits_sends_one_digest_on_time(
    tmp_path: Path, sink: HTTPSink
) -> None:
    """The real timer and a real crash; the time it keeps is checked to the second above."""
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "2s"})
    with running(config) as d:
        for n in range(5):
            d.post(readings(n, "65a7"))
        posted = time.monotonic()
        time.sleep(0.3)
        d.kill()
    assert sent(sink) == []
    with running(config):
        wait_for(lambda: len(sent(sink)) == 1, 15, "the digest after the restart")
        arrived = time.monotonic()
        time.sleep(0.5)
    assert [m["title"] for m in sent(sink)] == ["5 readings for meter 65a7 (wait)"]
    assert arrived - posted >= 1.5, arrived - posted  # when due, not at once on start


def test_max_splits_a_flood_and_the_rest_waits(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "3s", "max": 10})

    async def main() -> None:
        async with relay(config, sink) as r:
            await r.post(readings(1, "65a7", count=25))
            await r.settle()
            full = ["10 readings for meter 65a7 (max)"] * 2
            assert [m["title"] for m in sent(sink)] == full  # full ones go at once
            await r.advance(2.9)
            assert len(sent(sink)) == 2  # the five left wait for company
            await r.advance(0.1)
            assert [m["title"] for m in sent(sink)] == [*full, "5 readings for meter 65a7 (wait)"]

    run(main)


def test_a_digest_template_typo_is_a_check_error(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"wait": "3s"})
    rules = tmp_path / "rules" / "meter.yaml"
    rules.write_text(rules.read_text().replace("{{ count }} readings", "{{ cuont }} readings"))
    result = run_relayhook("check", "--config", str(config))
    assert result.returncode == 1
    assert "rule 'meter-data': digest_title: 'cuont' is undefined (did you mean 'count'?)" in (
        result.stderr
    )


def test_interval_spaces_the_digests_of_a_key(tmp_path: Path, sink: HTTPSink) -> None:
    group = {"key": "{{ item.meter_id }}", "wait": "1s", "max": 5, "interval": "2s"}
    config = group_config(tmp_path, sink, group)

    async def main() -> None:
        async with relay(config, sink) as r:
            await r.post(readings(1, "65a7", count=12))
            for expected in (1, 1, 2, 2, 3):  # every second: one digest, 2 s apart
                await r.advance(0.95)
                assert len(sent(sink)) == expected, r.clock.now
                await r.advance(0.05)
            await r.advance(30)
        arrivals = [x.at for x in sink.at("/g")]
        assert [b - a for a, b in itertools.pairwise(arrivals)] == [2.0, 2.0]
        assert [m["title"] for m in sent(sink)] == [
            "5 readings for meter 65a7 (max)",
            "5 readings for meter 65a7 (max)",
            "2 readings for meter 65a7 (wait)",
        ]

    run(main)


def test_dry_run_shows_the_group_each_message_joins(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "30s"})
    path = tmp_path / "event.json"
    path.write_text(json.dumps(readings(1, "65a7", count=2)))
    result = run_relayhook("test", str(path), "--config", str(config))
    assert result.stdout.count("          grouped: key '65a7', waits 30s for company") == 2


def test_a_reload_keeps_a_waiting_group_and_its_time(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "3s"})
    rules = tmp_path / "rules" / "meter.yaml"

    async def main() -> None:
        async with relay(config, sink) as r:
            for n in range(3):
                await r.post(readings(n, "65a7"))
            await r.advance(1)
            rules.write_text(rules.read_text().replace("readings for meter", "new readings for"))
            assert await r.daemon.reload() == (True, [])
            await r.advance(1.9)
            assert sent(sink) == []
            await r.advance(0.1)
            # On its first time, with the digest of the rule now in force.
            assert [m["title"] for m in sent(sink)] == ["3 new readings for 65a7 (wait)"]

    run(main)


def test_a_throttle_sends_the_limit_then_one_digest_at_the_window_end(
    tmp_path: Path, sink: HTTPSink
) -> None:
    config = throttle_config(tmp_path, sink, "5s")

    async def main() -> None:
        async with relay(config, sink) as r:
            start = r.clock.now
            for n in range(7):
                await r.post(readings(n, "65a7"))
            await r.settle()
            # The two under the limit at once (so either may arrive first), the rest held.
            assert sorted(m["title"] for m in sent(sink)) == ["65a7 t0.0", "65a7 t1.0"]
            assert [x.at for x in sink.at("/g")] == [start, start]
            await r.advance(4.9)
            assert len(sent(sink)) == 2
            await r.advance(0.1)
            assert [m["title"] for m in sent(sink)][2:] == ["5 readings for meter 65a7 (throttle)"]
            assert sent(sink)[2]["body"].splitlines() == [f"- 65a7 t{n}.0" for n in range(2, 7)]
            # A new window: the limit again at once, then the rest at its end.
            for n in range(7, 10):
                await r.post(readings(n, "65a7"))
            await r.settle()
            assert sorted(m["title"] for m in sent(sink)[3:]) == ["65a7 t7.0", "65a7 t8.0"]
            await r.advance(4.9)
            assert len(sent(sink)) == 5
            await r.advance(0.1)
            assert [m["title"] for m in sent(sink)][5:] == ["65a7 t9.0"]  # a group of one
            assert 'reason="throttled"} 5.0' in await r.metrics()

    run(main)


def test_a_throttle_window_ends_on_the_real_timer(tmp_path: Path, sink: HTTPSink) -> None:
    config = throttle_config(tmp_path, sink, "2s")
    with running(config) as d:
        for n in range(5):
            d.post(readings(n, "65a7"))
        wait_for(lambda: len(sent(sink)) == 3, 10, "the limit, then the digest")
    titles = [m["title"] for m in sent(sink)]
    assert sorted(titles[:2]) == ["65a7 t0.0", "65a7 t1.0"]
    assert titles[2:] == ["3 readings for meter 65a7 (throttle)"]


def test_a_throttle_needs_its_limit_and_window(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"wait": "1s"})
    rules = tmp_path / "rules" / "meter.yaml"
    doc = yaml.safe_load(rules.read_text())
    rule = doc["rules"][0]
    del rule["group"]
    rule["throttle"] = {"limit": 2}
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = run_relayhook("check", "--config", str(config))
    assert result.returncode == 1
    assert "rule 'meter-data': throttle: missing required key 'per'" in result.stderr
