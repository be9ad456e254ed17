"""Quiet hours: the relay holds what can wait until a window (in a timezone not UTC) ends,
then sends one digest per rule and destination; urgent rules pass; DST is wall-clock. In
process on a clock set to the night and moved by hand (tests/inproc.py); one short real
daemon, killed while a group is held, keeps the real timer and wall clock honest."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from conftest import run_relayhook
from inproc import FakeClock, relay, run
from relayhook.policy.quiet import QuietHours, QuietWindow, quiet_at, quiet_until
from support import HTTPSink, running, wait_for
from test_daemon import make_config
from test_groups import readings, sent

ZONE = "America/New_York"


def window_ending_in(seconds: float) -> tuple[str, float]:
    """A window (as YAML flow text) that began a minute ago and ends in `seconds`, in ZONE
    wall-clock time, and when it ends as a monotonic time."""
    now = datetime.now(ZoneInfo(ZONE))
    start, end = now - timedelta(minutes=1), now + timedelta(seconds=seconds)
    end = end.replace(microsecond=0)
    left = (end - now).total_seconds()
    text = f'{{from: "{start:%H:%M:%S}", to: "{end:%H:%M:%S}"}}'
    return text, time.monotonic() + left


def quiet_config(
    tmp_path: Path, sink: HTTPSink, window: str, group: dict[str, Any] | None = None
) -> Path:
    rule: dict[str, Any] = {
        "name": "meter-data",
        "for_each": "payload",
        "to": ["hook"],
        "title": "{{ item.meter_id }} {{ item.start_interval }}",
        "body": "reading",
        "digest_title": "{{ count }} readings held ({{ reason }}, key '{{ key }}')",
    }
    if group is not None:
        rule["group"] = group
    urgent = {
        "name": "meter-urgent",
        "for_each": "payload",
        "to": ["hook"],
        "title": "urgent {{ item.meter_id }} {{ item.start_interval }}",
        "body": "now",
        "urgent": True,
    }
    return make_config(
        tmp_path,
        {"hook": {"webhook": f"http://127.0.0.1:{sink.port}/g", "quiet": "nights"}},
        {"meter.yaml": {"event": "meter_data.received", "rules": [rule, urgent]}},
        extra=f"quiet_hours:\n  nights:\n    timezone: {ZONE}\n    times:\n      - {window}\n",
    )


def titles(sink: HTTPSink) -> list[str]:
    return [m["title"] for m in sent(sink)]


NIGHT = '{from: "22:00", to: "06:00"}'


def before_six(seconds: float) -> FakeClock:
    """A clock `seconds` before 06:00 in ZONE, the end of NIGHT."""
    return FakeClock(datetime(2027, 1, 14, 6, 0, tzinfo=ZoneInfo(ZONE)).timestamp() - seconds)


def test_quiet_hours_hold_until_they_end_then_one_digest_and_urgent_passes(
    tmp_path: Path, sink: HTTPSink
) -> None:
    config = quiet_config(tmp_path, sink, NIGHT)

    async def main() -> None:
        async with relay(config, sink, clock=before_six(7)) as r:
            for n in range(3):
                assert (await r.post(readings(n, "65a7")))[0] == 202
            await r.settle()
            assert sorted(titles(sink)) == [f"urgent 65a7 t{n}.0" for n in range(3)]  # at once
            await r.advance(6.9)
            assert len(sent(sink)) == 3
            await r.advance(0.1)  # 06:00: the window's end
            assert len(sent(sink)) == 4
            await r.advance(3600)
            assert len(sent(sink)) == 4
            metrics = await r.metrics()
            rows = r.rows(
                "SELECT d.id, d.rule, d.state, g.id AS group_id, g.digest_id FROM deliveries d"
                " LEFT JOIN groups g ON g.id = d.group_id ORDER BY d.id"
            )
        digest = sent(sink)[3]
        assert digest["title"] == "3 readings held (quiet, key '')"
        assert digest["body"].splitlines() == [f"- 65a7 t{n}.0" for n in range(3)]
        assert (
            'relayhook_notifications_suppressed_total{destination="hook",reason="quiet"} 3.0'
            in metrics
        )
        held = [x for x in rows if x["rule"] == "meter-data" and x["state"] == "grouped"]
        assert len(held) == 3 and len({x["digest_id"] for x in held}) == 1  # all name it
        group, digest_id = held[0]["group_id"], held[0]["digest_id"]
        shown = run_relayhook("show", str(held[0]["id"]), "--config", str(config)).stdout
        assert (
            f"grouped in   group {group} (3 messages, key '', quiet), sent as delivery {digest_id}"
            in shown
        )
        shown = run_relayhook("show", str(digest_id), "--config", str(config)).stdout
        assert f"digest of    group {group} (3 messages, key '', quiet)" in shown
        listed = run_relayhook("deliveries", "--config", str(config)).stdout
        assert listed.count(f"in digest {digest_id}") == 3

    run(main)


def test_a_group_due_in_quiet_hours_waits_for_their_end_across_a_restart(
    tmp_path: Path, sink: HTTPSink
) -> None:
    config = quiet_config(tmp_path, sink, NIGHT, group={"key": "{{ item.meter_id }}", "wait": "1s"})
    clock = before_six(9)

    async def first() -> None:
        async with relay(config, sink, clock=clock) as r:
            for n in range(4):
                await r.post(readings(n, "65a7"))
            await r.post(readings(0, "77bb"))
            await r.advance(2.5)  # the groups came due (1 s) inside quiet hours: held
            assert len(sent(sink)) == 5 and all(t.startswith("urgent ") for t in titles(sink))

    async def second() -> None:
        async with relay(config, sink, clock=clock) as r:
            await r.advance(6.4)
            assert len(sent(sink)) == 5
            await r.advance(0.1)  # 06:00
            assert titles(sink)[5:] == ["5 readings held (quiet, key '')"]
            await r.advance(60)
            assert len(sent(sink)) == 6

    run(first)
    run(second)
    assert sent(sink)[5]["body"].splitlines() == [
        *(f"- 65a7 t{n}.0" for n in range(4)),
        "- 77bb t0.0",
    ]


def test_a_group_due_in_quiet_hours_waits_for_their_end_across_sigkill(
    tmp_path: Path, sink: HTTPSink
) -> None:
    """The test above on the real clock and wall time, with a real crash, shortened."""
    window, ends = window_ending_in(7)  # room for the start, the posts and the group wait
    config = quiet_config(
        tmp_path, sink, window, group={"key": "{{ item.meter_id }}", "wait": "1s"}
    )
    with running(config) as d:
        for n in range(2):
            d.post(readings(n, "65a7"))
        wait_for(lambda: len(sent(sink)) == 2, 5, "the urgent rule's messages at once")
        time.sleep(1.3)  # the group came due (1 s) inside quiet hours and was held
        assert len(sent(sink)) == 2
        d.kill()
    with running(config):
        wait_for(lambda: len(sent(sink)) == 3, 20, "the quiet digest after the restart")
        arrived = time.monotonic()
    assert arrived >= ends - 0.5, ends - arrived  # not before the window's end
    assert titles(sink)[2:] == ["2 readings held (quiet, key '')"]


def test_dry_run_shows_the_quiet_hours_a_message_would_wait_for(
    tmp_path: Path, sink: HTTPSink
) -> None:
    window, _ = window_ending_in(600)
    config = quiet_config(tmp_path, sink, window)
    path = tmp_path / "event.json"
    path.write_text(json.dumps(readings(1, "65a7")))
    result = run_relayhook("test", str(path), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("quiet hours (nights) until ") == 1  # the urgent one is not held
    report = json.loads(run_relayhook("test", str(path), "--json", "--config", str(config)).stdout)
    quiet = {r["name"]: r["messages"][0]["quiet_until"] for r in report["rules"]}
    assert quiet["meter-urgent"] is None and quiet["meter-data"] is not None


@pytest.mark.parametrize(
    ("calendar", "where", "message"),
    [
        (
            "{timezone: Europe/Londn, times: [{days: sat-sun}]}",
            "config.yaml:",
            "quiet_hours 'nights': timezone: unknown timezone 'Europe/Londn', expected an IANA"
            " name such as Europe/London (did you mean 'Europe/London'?)",
        ),
        (
            "{timezone: UTC, times: [{days: mon-fry}]}",
            "config.yaml:",
            "quiet_hours 'nights': times[0]: days: 'mon-fry' is not a day or range of days;"
            " expected names from mon, tue, wed, thu, fri, sat, sun, such as mon-fri or"
            " [sat, sun] (did you mean 'fri'?)",
        ),
        (
            "{timezone: UTC, times: [{from: 18:00, to: '08:00'}]}",
            "config.yaml:",
            "quiet_hours 'nights': times[0]: from: write the time in quotes, such as \"18:00\"",
        ),
        (
            "{timezone: UTC, times: [{from: '18:00'}]}",
            "config.yaml:",
            "quiet_hours 'nights': times[0]: give both from and to, or neither for whole days",
        ),
        (
            "{timezone: UTC, times: [{from: '25:00', to: '08:00'}]}",
            "config.yaml:",
            "quiet_hours 'nights': times[0]: from: '25:00' is not a time of day",
        ),
        (
            "{timezone: UTC, times: [{days: mon-sun}]}",
            "config.yaml:",
            "quiet_hours 'nights': is quiet all week, so nothing would ever be sent",
        ),
        (
            "{timezone: UTC, times: []}",
            "config.yaml:",
            "quiet_hours 'nights': times must be a list of windows such as",
        ),
    ],
)
def test_a_wrong_calendar_is_a_check_error_naming_it(
    tmp_path: Path, sink: HTTPSink, calendar: str, where: str, message: str
) -> None:
    config = quiet_config(tmp_path, sink, "{days: sat-sun}")
    text = config.read_text()
    head = text[: text.index("quiet_hours:")]
    config.write_text(head + f"quiet_hours:\n  nights: {calendar}\n")
    result = run_relayhook("check", "--config", str(config))
    assert result.returncode == 1, result.stdout
    line = next(x for x in result.stderr.splitlines() if message in x)
    assert where in line and line.split(where)[1].split(":")[0].isdigit(), line


def test_a_quiet_name_that_is_not_a_calendar_is_a_check_error(
    tmp_path: Path, sink: HTTPSink
) -> None:
    config = quiet_config(tmp_path, sink, "{days: sat-sun}")
    config.write_text(config.read_text().replace("quiet: nights", "quiet: night"))
    rules = tmp_path / "rules" / "meter.yaml"
    doc = yaml.safe_load(rules.read_text())
    doc["rules"][0]["quiet"] = "weekend"
    doc["rules"][1]["urgent"] = "yes"
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = run_relayhook("check", "--config", str(config))
    assert result.returncode == 1
    assert (
        "destination 'hook': quiet: no quiet_hours named 'night' (did you mean 'nights'?)"
        in result.stderr
    )
    assert (
        "rule 'meter-data': quiet: no quiet_hours named 'weekend'; quiet_hours has nights"
        in result.stderr
    )
    assert "rule 'meter-urgent': urgent must be true or false" in result.stderr
    assert f"{rules}:" in result.stderr


# The calendar's arithmetic, in-process: DST changes must not shift a window.

LONDON = ZoneInfo("Europe/London")
NIGHTS = QuietHours(
    "nights",
    "Europe/London",
    LONDON,
    (
        QuietWindow(frozenset(range(5)), 18 * 3600, 8 * 3600),  # mon-fri 18:00-08:00
        QuietWindow(frozenset({5, 6}), 0, 86400),  # sat-sun
    ),
)


def london(*args: int) -> float:
    return datetime(*args, tzinfo=LONDON).timestamp()  # type: ignore[misc]


def local(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, LONDON).isoformat()


@pytest.mark.parametrize(
    ("at", "until"),
    [
        # The weekend UK clocks go forward (29 March 2026): Monday 08:00 is BST.
        ((2026, 3, 27, 20, 0), "2026-03-30T08:00:00+01:00"),
        ((2026, 3, 30, 7, 59), "2026-03-30T08:00:00+01:00"),
        ((2026, 3, 30, 8, 0), None),  # `to` is exclusive
        ((2026, 3, 30, 18, 0), "2026-03-31T08:00:00+01:00"),  # `from` is inclusive
        # And back (25 October 2026): Monday 08:00 is GMT again.
        ((2026, 10, 24, 12, 0), "2026-10-26T08:00:00+00:00"),
        ((2026, 10, 26, 2, 0), "2026-10-26T08:00:00+00:00"),
        ((2026, 10, 27, 12, 0), None),
    ],
)
def test_windows_are_wall_clock_across_dst(at: tuple[int, ...], until: str | None) -> None:
    assert local(quiet_until([NIGHTS], london(*at))) == until


def test_calendars_together_hold_until_none_is_quiet() -> None:
    # Tokyo's 16:00-18:00 is 07:00-09:00 London in winter: it outlasts the night.
    tokyo = QuietHours(
        "standup",
        "Asia/Tokyo",
        ZoneInfo("Asia/Tokyo"),
        (QuietWindow(frozenset(range(7)), 16 * 3600, 18 * 3600),),
    )
    assert quiet_at(tokyo, london(2026, 1, 13, 8, 30))
    assert not quiet_at(NIGHTS, london(2026, 1, 13, 8, 30))
    assert local(quiet_until([NIGHTS, tokyo], london(2026, 1, 13, 7, 30))) == (
        "2026-01-13T09:00:00+00:00"
    )
    assert local(quiet_until([tokyo], london(2026, 1, 13, 7, 30))) == "2026-01-13T09:00:00+00:00"
    assert quiet_until([NIGHTS, tokyo], london(2026, 1, 13, 9, 0)) is None
