"""Trying a destination by hand: `relayhook send-test` and its API twin, and the state of
each destination as `relayhook status` and /api/status show it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from relayhook.config.settings import Config, Destination
from relayhook.deliver.senders.base import Sender
from relayhook.deliver.senders.factory import make_sender
from relayhook.model import Delivery, Outcome

__all__ = ["TEST_BODY", "TEST_TITLE", "destination_report", "send_test"]

TEST_TITLE = "relayhook test message"
TEST_BODY = "This is a test from relayhook send-test; nothing is wrong."


async def send_test(
    config: Config,
    dest: Destination,
    title: str = TEST_TITLE,
    body: str = TEST_BODY,
    sender: Sender | None = None,
) -> tuple[Outcome, float]:
    """One real send of title and body to dest (with sender, else a sender made for this
    send and closed after): the outcome, its error redacted, and the seconds it took.
    Nothing is stored."""
    context = {
        "rule": "send-test",
        "severity": "info",
        "event_type": "relayhook.test",
        "source": "relayhook",
    }
    started = time.monotonic()
    try:
        shaped, fmt = dest.shape(title, body, "text", context)
    except Exception as e:  # noqa: BLE001 - the body template wants what a test lacks
        return Outcome(False, f"the destination's body template failed: {e}"), 0.0
    delivery = Delivery(
        id=0,
        event_id=0,
        destination=dest.name,
        title=title,
        body=shaped,
        format=fmt,
        attempts=0,
        received_at=time.time(),
        rule="send-test",
        event_type="relayhook.test",
        source="relayhook",
    )
    own = sender is None
    use = make_sender(dest) if sender is None else sender
    try:
        if own:
            use.open()
        outcome = await use.send(delivery)
    except Exception as e:  # noqa: BLE001 - reported, like an attempt's failure
        outcome = Outcome(False, f"{type(e).__name__}: {e}")
    finally:
        if own:
            await use.close()
    took = time.monotonic() - started
    if outcome.error:
        outcome = dataclasses.replace(
            outcome, error=config.redactor(" ".join(outcome.error.split()))
        )
    return outcome, took


def destination_report(
    config: Config, stored: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each configured destination (and any other with work waiting): circuit, queue,
    last success and last error, from what the store keeps."""
    rows = []
    for name in sorted(set(config.destinations) | set(stored)):
        dest = config.destinations.get(name)
        known = stored.get(name, {})
        circuit = "not configured" if dest is None else known.get("circuit", "closed")
        if dest is not None and dest.circuit is None:
            circuit = "off"
        rows.append(
            {
                "destination": name,
                "circuit": circuit,
                "opened_at": known.get("opened_at") if circuit == "open" else None,
                "next_probe_at": known.get("next_probe_at") if circuit == "open" else None,
                "queue": known.get("queue", 0),
                "oldest_due_at": known.get("oldest_due_at"),
                "last_success_at": known.get("last_success_at"),
                "last_error": known.get("last_error"),
                "last_error_at": known.get("last_error_at"),
                "fallback": dest.fallback if dest is not None else None,
            }
        )
    return rows
