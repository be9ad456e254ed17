"""The apprise worker process: `python -m relayhook.deliver.senders.apprise_worker`.

It serves one destination: the destination's description on the first line of stdin,
then one job per line; it answers "ready", then one whole Outcome per job, in order, as
JSON lines on stdout. Both ends of that wire live here, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from relayhook.config.settings import AppriseDestination, RetryPolicy
from relayhook.deliver.senders.apprise import apprise_for, body_format, judge, notify_type
from relayhook.model import TIMEOUT, Delivery, Outcome

__all__ = ["WORKER_MODULE", "describe", "main", "read_outcome", "write_job", "write_outcome"]

WORKER_MODULE = "relayhook.deliver.senders.apprise_worker"
_ERROR_CHARS = 2000


def describe(dest: AppriseDestination) -> dict[str, Any]:
    """What a worker needs of the destination (the URL may hold secrets: sent by pipe)."""
    return {"name": dest.name, "url": dest.url, "timeout": dest.timeout, "format": dest.format}


def write_job(delivery: Delivery) -> bytes:
    """One send for a worker: what apprise's notify() takes."""
    job = [delivery.id, delivery.title, delivery.body or " ", body_format(delivery.format)]
    return json.dumps([*job, delivery.severity]).encode() + b"\n"


def write_outcome(outcome: Outcome) -> bytes:
    fields = dataclasses.asdict(outcome)
    if outcome.error:
        fields["error"] = outcome.error[:_ERROR_CHARS]
    return json.dumps(fields).encode() + b"\n"


def read_outcome(line: bytes) -> Outcome:
    """The Outcome on one line, or a failure saying what the worker said instead."""
    try:
        fields = json.loads(line)
        return Outcome(**fields)
    except (ValueError, TypeError):
        return Outcome(False, f"the worker process answered {line[:200]!r}")


def main() -> None:
    """Serve one destination's sends: a job per line on stdin, an outcome per line out."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    # Our stdout carries the protocol; anything printed by a library goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    logging.getLogger("apprise").disabled = True
    stdin = sys.stdin.buffer
    spec = json.loads(stdin.readline() or "null")
    if not isinstance(spec, dict):
        return
    dest = AppriseDestination(
        name=spec["name"],
        url=spec["url"],
        retry=RetryPolicy(),
        timeout=spec["timeout"],
        format=spec["format"],
    )
    notifier, _ = apprise_for(dest)
    out.write(b'"ready"\n')
    out.flush()
    for line in stdin:
        _, title, body, fmt, severity = json.loads(line)
        started = time.monotonic()
        try:
            result = notifier.notify(
                body=body, title=title, body_format=fmt, notify_type=notify_type(severity)
            )
            outcome = judge(result)
        except Exception as e:  # noqa: BLE001 - told to the parent, which logs it
            outcome = Outcome(False, f"{type(e).__name__}: {e}")
        if not outcome.ok and time.monotonic() - started >= dest.timeout:
            outcome = TIMEOUT
        out.write(write_outcome(outcome))
        out.flush()


if __name__ == "__main__":
    main()
