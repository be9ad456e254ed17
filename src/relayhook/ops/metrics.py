"""Prometheus metrics, named after Alertmanager's (relayhook_notifications_total, ...)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
    21600,
    86400,
)


class Metrics:
    """Every metric the daemon exports, in a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events = Counter(
            "relayhook_events_received",
            "Inbound requests to /hooks/, by outcome.",
            ["source", "event_type", "outcome"],
            registry=r,
        )
        self.routed = Counter(
            "relayhook_events_routed",
            "Stored events after routing: routed or unrouted.",
            ["outcome"],
            registry=r,
        )
        self.notifications = Counter(
            "relayhook_notifications",
            "Deliveries finished, by destination and outcome (delivered, dead, failed).",
            ["destination", "outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "relayhook_notification_attempts",
            "Delivery attempts, by destination and outcome (delivered, failed, timeout).",
            ["destination", "outcome"],
            registry=r,
        )
        self.suppressed = Counter(
            "relayhook_notifications_suppressed",
            "Messages held back instead of sent, by destination and reason"
            " (silenced, grouped, throttled, quiet).",
            ["destination", "reason"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "relayhook_destination_circuit_open",
            "1 while a destination's circuit is open (its deliveries wait for a probe).",
            ["destination"],
            registry=r,
        )
        self.latency = Histogram(
            "relayhook_notification_latency_seconds",
            "From receiving an event to delivering it.",
            ["destination"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Gauge(
            "relayhook_deliveries",
            "Deliveries by state (pending, retrying, sending).",
            ["state"],
            registry=r,
        )
        self.oldest = Gauge(
            "relayhook_oldest_pending_delivery_age_seconds",
            "Age of the oldest delivery not yet finished: the alarm for accepted but never sent.",
            registry=r,
        )
        self.unrouted_backlog = Gauge(
            "relayhook_events_awaiting_routing",
            "Acknowledged events not routed yet.",
            registry=r,
        )
        self.groups_waiting = Gauge(
            "relayhook_groups_waiting",
            "Groups whose digest has not gone out yet.",
            registry=r,
        )
        self.reload_ok = Gauge(
            "relayhook_config_last_reload_successful",
            "Whether the last configuration reload attempt was successful.",
            registry=r,
        )
        self.reload_time = Gauge(
            "relayhook_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload.",
            registry=r,
        )
        self.reload_ok.set(1)
        self.reload_time.set(time.time())

    def reloaded(self, ok: bool) -> None:
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_time.set(time.time())

    def render(
        self, depth: Mapping[str, int], oldest_age: float, awaiting: int, groups: int = 0
    ) -> bytes:
        for state in ("pending", "retrying", "sending"):
            self.queue.labels(state).set(depth.get(state, 0))
        self.oldest.set(oldest_age)
        self.unrouted_backlog.set(awaiting)
        self.groups_waiting.set(groups)
        return generate_latest(self.registry)
