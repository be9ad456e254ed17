"""The sender for a destination: the one place that knows every kind."""

from __future__ import annotations

from relayhook.config.settings import Destination, WebhookDestination
from relayhook.deliver.senders.apprise import AppriseSender
from relayhook.deliver.senders.apprise_procs import ProcessAppriseSender
from relayhook.deliver.senders.base import Sender
from relayhook.deliver.senders.webhook import WebhookSender

__all__ = ["make_sender"]


def make_sender(dest: Destination) -> Sender:
    if isinstance(dest, WebhookDestination):
        return WebhookSender(dest)
    if dest.processes:
        return ProcessAppriseSender(dest)
    return AppriseSender(dest)
