"""Groups against a real daemon, sink and database: digests, once, on time, across SIGKILL."""

from __future__ import annotations

import itertools
import json
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from conftest import run_relayhook
from support import HTTPSink, db_rows, running, wait_for
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


def test_a_burst_for_one_meter_is_one_digest(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "3s"})
    with running(config) as d:
        started = time.monotonic()
        for n in range(13):
            assert d.post(readings(n, "65a7"))[0] == 202
        d.post(readings(0, "77bb"))
        d.post(readings(1, "77bb"))
        assert time.monotonic() - started < 2.0
        wait_for(lambda: len(sent(sink)) >= 2, 10, "two digests")
        time.sleep(1.5)  # and nothing more
    got = sorted(sent(sink), key=lambda m: m["title"])
    assert [m["title"] for m in got] == [
        "13 readings for meter 65a7 (wait)",
        "2 readings for meter 77bb (wait)",
    ]
    lines = got[0]["body"].splitlines()
    assert lines == [f"- 65a7 t{n}.0" for n in range(13)]
    states = db_rows(
        tmp_path / "relayhook.db", "SELECT state, COUNT(*) n FROM deliveries GROUP BY state"
    )
    assert {r["state"]: r["n"] for r in states} == {"grouped": 15, "delivered": 2}


def test_a_group_of_one_goes_as_that_message(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "1s"})
    with running(config) as d:
        d.post(readings(1, "65a7"))
        wait_for(lambda: len(sent(sink)) == 1, 10, "the message")
    (only,) = sent(sink)
    assert only["title"] == "65a7 t1.0" and only["body"] == "reading"


def test_sigkill_while_a_group_waits_sends_one_digest_on_time(
    tmp_path: Path, sink: HTTPSink
) -> None:
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "4s"})
    with running(config) as d:
        for n in range(5):
            d.post(readings(n, "65a7"))
        posted = time.monotonic()
        time.sleep(0.5)
        d.kill()
    assert sent(sink) == []
    with running(config):
        wait_for(lambda: len(sent(sink)) == 1, 15, "the digest after the restart")
        arrived = time.monotonic()
        time.sleep(2.0)
    assert [m["title"] for m in sent(sink)] == ["5 readings for meter 65a7 (wait)"]
    assert 3.5 <= arrived - posted <= 8.0, arrived - posted  # on time, not at once


def test_max_splits_a_flood_and_the_rest_waits(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "3s", "max": 10})
    with running(config) as d:
        d.post(readings(1, "65a7", count=25))
        wait_for(lambda: len(sent(sink)) >= 2, 10, "two full digests")
        assert len(sent(sink)) == 2  # the five left wait for company
        wait_for(lambda: len(sent(sink)) == 3, 10, "the rest after the wait")
    assert sorted(m["title"] for m in sent(sink)) == [
        "10 readings for meter 65a7 (max)",
        "10 readings for meter 65a7 (max)",
        "5 readings for meter 65a7 (wait)",
    ]


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
    with running(config) as d:
        d.post(readings(1, "65a7", count=12))
        wait_for(lambda: len(sink.at("/g")) == 3, 15, "three digests")
    arrivals = sorted(r.at for r in sink.at("/g"))
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 1.8 for gap in gaps), gaps
    assert sorted(m["title"] for m in sent(sink)) == [
        "2 readings for meter 65a7 (wait)",
        "5 readings for meter 65a7 (max)",
        "5 readings for meter 65a7 (max)",
    ]


def test_dry_run_shows_the_group_each_message_joins(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "30s"})
    path = tmp_path / "event.json"
    path.write_text(json.dumps(readings(1, "65a7", count=2)))
    result = run_relayhook("test", str(path), "--config", str(config))
    assert result.stdout.count("          grouped: key '65a7', waits 30s for company") == 2


def test_a_reload_keeps_a_waiting_group_and_its_time(tmp_path: Path, sink: HTTPSink) -> None:
    config = group_config(tmp_path, sink, {"key": "{{ item.meter_id }}", "wait": "3s"})
    rules = tmp_path / "rules" / "meter.yaml"
    with running(config) as d:
        for n in range(3):
            d.post(readings(n, "65a7"))
        posted = time.monotonic()
        rules.write_text(rules.read_text().replace("readings for meter", "new readings for"))
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(sent(sink)) == 1, 10, "the digest after the reload")
        arrived = time.monotonic()
        time.sleep(1.0)
    assert [m["title"] for m in sent(sink)] == ["3 new readings for 65a7 (wait)"]
    assert 2.5 <= arrived - posted <= 5.0, arrived - posted


def test_a_throttle_sends_the_limit_then_one_digest_at_the_window_end(
    tmp_path: Path, sink: HTTPSink
) -> None:
    config = group_config(tmp_path, sink, {"wait": "1s"})
    rules = tmp_path / "rules" / "meter.yaml"
    doc = yaml.safe_load(rules.read_text())
    rule = doc["rules"][0]
    del rule["group"]
    rule["throttle"] = {"key": "{{ item.meter_id }}", "limit": 2, "per": "5s"}
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    with running(config) as d:
        started = time.monotonic()
        for n in range(7):
            d.post(readings(n, "65a7"))
        wait_for(lambda: len(sent(sink)) == 2, 10, "the two under the limit")
        assert time.monotonic() - started < 3.0
        wait_for(lambda: len(sent(sink)) == 3, 10, "the digest at the window's end")
        ended = time.monotonic()
        time.sleep(1.0)
    titles = [m["title"] for m in sent(sink)]
    assert titles == ["65a7 t0.0", "65a7 t1.0", "5 readings for meter 65a7 (throttle)"]
    assert 4.0 <= ended - started <= 8.0, ended - started
    assert sent(sink)[2]["body"].splitlines() == [f"- 65a7 t{n}.0" for n in range(2, 7)]


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
