"""What a dead delivery's fallback destination is sent: the same title and body, and a
line saying which destination failed, after how many attempts, and its last error."""

from __future__ import annotations

import html
import json
import logging

from relayhook.config.settings import Config, Destination
from relayhook.model import Delivery, Fallback
from relayhook.route.match import escapers

__all__ = ["fallback_for"]

logger = logging.getLogger("relayhook.deliver")
_FORMATS = ("text", "markdown", "html")


def fallback_for(
    config: Config, dest: Destination, delivery: Delivery, attempts: int, error: str | None
) -> Fallback | None:
    """The delivery to make at dest's fallback, or None (no fallback, or this delivery is
    itself a fallback: one level only). error is already redacted."""
    if dest.fallback is None or delivery.fallback_of is not None:
        return None
    target = config.destinations.get(dest.fallback)
    if target is None:
        return None
    body, fmt = _message_of(delivery)
    note = (
        f"relayhook: sent here because delivery {delivery.id} to {dest.name} failed after"
        f" {attempts} attempt{'s' if attempts != 1 else ''}; last error: {error or 'none given'}"
    )
    # The error text comes from the failed service: escaped like event data, so it can
    # neither ping a channel nor plant a link.
    _, escape = escapers(target, fmt)
    if fmt == "html":
        note = html.escape(note)
    if escape is not None:
        note = escape(note)
    body = f"{body}\n<p>{note}</p>" if fmt == "html" else f"{body}\n\n{note}"
    title = delivery.title
    context = {
        "rule": delivery.rule,
        "severity": delivery.severity,
        "event_type": delivery.event_type,
        "source": delivery.source,
    }
    try:
        body, fmt = target.shape(title, body, fmt, context)
    except Exception as e:  # noqa: BLE001 - a body template for events may want more
        logger.warning(
            "fallback to %s: its body template failed (%s); sending the message's parts",
            target.name,
            e,
        )
        body = json.dumps({"title": title, "body": body, "format": fmt, **context})
        fmt = "json"
    return Fallback(target.name, title, body, fmt)


def _message_of(delivery: Delivery) -> tuple[str, str]:
    """The message's body and format. A webhook's stored body is the request it would
    have sent: its default JSON carries the message's body, which is taken; a body of the
    user's own shape goes on as text."""
    if delivery.format in _FORMATS:
        return delivery.body, delivery.format
    try:
        sent = json.loads(delivery.body)
    except ValueError:
        sent = None
    if isinstance(sent, dict) and isinstance(sent.get("body"), str):
        fmt = sent.get("format")
        return sent["body"], fmt if fmt in _FORMATS else "text"
    return delivery.body, "text"
