"""`relayhook test --stored` over a large log: the rules on disk against 100,000 stored
events, beside what was made of them. Goal: at most 30 s.

The log is filled in process through the Store API and routed by the daemon's own code
(route_event, quiet hours, save_routings), with the repository's Openvolt rules and the
Openvolt samples (tests/fixtures/openvolt; meter data of 1 to 3 items over 50 meters, grouped by meter),
all received within the last 24 hours. Then the real command runs once over all of it.

Baselines: the 30 s goal, and the time the same rules took to route the same events in
process while filling (no store reads, no comparison): what is left is the command's own
cost (start, reading the log in pages, comparing, folding, printing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from common import RELAYHOOK, REPO, report, tempdir

from relayhook.config.load import load_config
from relayhook.model import NewEvent, Routing
from relayhook.route.quiet import hold_quiet
from relayhook.route.stage import route_event
from relayhook.store.open import open_store

SAMPLES = REPO / "tests" / "fixtures" / "openvolt"
GOAL = 30.0  # seconds
METERS = 50
_CHUNK = 5000  # events added at once
_BATCH = 500  # events routed and saved at once


def bodies(n: int) -> list[dict[str, Any]]:
    samples = [json.loads(p.read_text()) for p in sorted(SAMPLES.glob("*.json"))]
    out = []
    for i in range(n):
        body = dict(samples[i % len(samples)])
        body["delivery_id"] = f"bench-{i}"
        if body["event_id"] == "meter_data.received":
            item = body["payload"][0]
            body["payload"] = [
                {**item, "meter_id": f"meter-{(i + k) % METERS:02d}"} for k in range(1 + i % 3)
            ]
        out.append(body)
    return out


def write_config(root: Path) -> Path:
    shutil.copytree(REPO / "rules", root / "rules")
    destinations = "".join(
        f"  {name}: {{url: 'json://127.0.0.1:9/{name}', format: {fmt}}}\n"
        for name, fmt in (("ops-slack", "markdown"), ("ops-email", "html"),
                          ("security-email", "html"))
    )  # fmt: skip
    (root / "config.yaml").write_text(
        "database: relayhook.db\nrules: rules\nsources:\n  openvolt:\n"
        "    event_type: event_id\n    event_key: delivery_id\n    auth: {token: bench-token}\n"
        "destinations:\n" + destinations
    )
    return root / "config.yaml"


async def fill(config_path: Path, events: int) -> float:
    """Store and route the events; the seconds routing alone took."""
    config = load_config(str(config_path))
    store = open_store(config.database)
    now = time.time()
    routing = 0.0
    try:
        all_bodies = bodies(events)
        for start in range(0, events, _CHUNK):
            chunk = all_bodies[start : start + _CHUNK]
            await asyncio.gather(
                *(
                    store.add_event(
                        NewEvent("openvolt", b["delivery_id"], b["event_id"],
                                 now - 80_000 + (start + i) * 0.8, {}, json.dumps(b), b)
                    )
                    for i, b in enumerate(chunk)
                )
            )  # fmt: skip
        while batch := await store.events_to_route(_BATCH):
            started = time.perf_counter()
            routings = [Routing(e.id, route_event(config, e)) for e in batch]
            routing += time.perf_counter() - started
            at = max(e.received_at for e in batch)
            await store.save_routings(hold_quiet(config, routings, at), at)
    finally:
        await store.close()
    return routing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    with tempdir() as tmp:
        config = write_config(Path(tmp))
        started = time.monotonic()
        routing = asyncio.run(fill(config, args.events))
        print(f"filled {args.events} events in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        out = subprocess.run(
            [RELAYHOOK, "test", "--stored", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        took = time.monotonic() - started
    result = json.loads(out)
    made = sum(r["sent"] for r in result["rules"])
    assert result["events"] == args.events, result["events"]
    assert not result["difference"], result["changed"][:10]
    report(
        f"relayhook test --stored over {args.events} stored events ({made} messages)",
        [
            ("test --stored vs the 30 s goal", took, GOAL, "s"),
            ("test --stored vs routing the same events in process", took, routing, "s"),
        ],
    )


if __name__ == "__main__":
    main()
