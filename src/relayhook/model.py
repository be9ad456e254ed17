"""The records the stages hand each other: what came in, what was made of it, how sending went.

    NewEvent ──store──► Event ──route──► Routing (Messages) ──store──► Delivery
        Delivery ──send──► Outcome ──decide──► Decision ──► Attempt ──store

Every record is frozen and typed, so a reader of any stage sees the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "TIMEOUT",
    "Attempt",
    "CircuitState",
    "Decision",
    "Delivery",
    "DeliveryState",
    "Event",
    "Fallback",
    "Grouping",
    "Message",
    "NewEvent",
    "Outcome",
    "Routing",
    "Throttling",
]


class DeliveryState(StrEnum):
    """Where a delivery stands; the first two are unfinished work."""

    PENDING = "pending"  # never tried (also while its first attempt is in flight)
    RETRYING = "retrying"  # tried, waiting for its next attempt (also while one is in flight)
    DELIVERED = "delivered"
    DEAD = "dead"  # out of tries, or refused in a way no retry can fix
    FAILED = "failed"  # never rendered: nothing to send
    SILENCED = "silenced"  # muted by a silence; sent only if replayed
    GROUPED = "grouped"  # folded into a digest (the group names it); waiting until then

    @property
    def finished(self) -> bool:
        return self not in (DeliveryState.PENDING, DeliveryState.RETRYING)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event accepted at the edge, before it is stored."""

    source: str
    key: str  # the dedupe key: (source, key) is stored once
    event_type: str
    received_at: float
    headers: Mapping[str, str]  # credential headers already dropped
    text: str  # the body as received
    body: Any  # the same body, parsed


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event, as routing sees it."""

    id: int  # 0 for an event that is not stored (a dry run)
    source: str
    event_type: str
    received_at: float
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None  # the parsed JSON document
    error: str | None = None  # why a stored body could not be read back; routing skips it


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered notification for one destination (error set when rendering failed)."""

    rule: str
    destination: str
    item_index: int | None
    title: str
    body: str
    format: str
    error: str | None = None
    severity: str = "info"  # info, success, warning, failure: apprise's notify type
    item: Any = None  # the for_each item it was made from
    silence_id: int | None = None  # the silence that muted it
    grouping: Grouping | None = None  # the group it joins instead of going alone
    throttle: Throttling | None = None  # the limit it counts against
    quiet_until: float | None = None  # quiet hours hold it until then, if nothing else does

    @property
    def may_wait(self) -> bool:
        """Whether a noise stage may fold it into a group (throttle, group, quiet hours)."""
        return not self.error and (
            self.grouping is not None or self.throttle is not None or self.quiet_until is not None
        )


@dataclass(frozen=True, slots=True)
class Throttling:
    """A rule's throttle for one message: past `limit` in a window of `per` seconds from
    the key's first message, messages wait for the window's end and go as one digest."""

    key: str
    limit: int
    per: float


@dataclass(frozen=True, slots=True)
class Grouping:
    """How a message's rule folds it: the group key and the rule's group settings."""

    key: str
    wait: float  # the first message of a group waits this long for company
    interval: float | None  # at most one digest per key per interval
    max: int | None  # a group this full goes at once


@dataclass(frozen=True, slots=True)
class Routing:
    """What routing made of one stored event: a message per (rule, item, destination)."""

    event_id: int
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery taken for one attempt."""

    id: int
    event_id: int
    destination: str
    title: str
    body: str
    format: str
    attempts: int  # attempts made before this one
    received_at: float  # when its event came in
    severity: str = "info"
    rule: str = ""
    due_at: float = 0.0  # when it fell due: its place in the queue
    fallback_of: int | None = None  # the dead delivery this one stands in for
    event_type: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt went: delivered, or why not and whether to try again.

    Senders judge their own failures (a 5xx is worth retrying, a 4xx mostly not), so the
    retry decision takes this as it is.
    """

    ok: bool
    error: str | None = None
    retry: bool = True
    timeout: bool = False
    retry_after: float | None = None  # seconds the destination asked us to wait
    limited: bool = False  # a rate limit (429): the destination is up, sending too fast

    @property
    def label(self) -> str:
        return "delivered" if self.ok else "timeout" if self.timeout else "failed"


TIMEOUT = Outcome(False, "timeout (may have been delivered)", retry=True, timeout=True)


@dataclass(frozen=True, slots=True)
class Decision:
    """What follows an attempt: the delivery's new state, and when to try next."""

    state: DeliveryState
    next_attempt_at: float | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt as the delivery log keeps it, with the decision it led to."""

    delivery_id: int
    number: int
    started_at: float
    duration_ms: float
    outcome: str  # Outcome.label
    error: str | None  # redacted
    decision: Decision
    recorded_at: float
    destination: str = ""
    held: bool = False  # failed while the destination's circuit is open: spends no attempt
    fallback: Fallback | None = None  # what goes to the fallback destination, now dead


@dataclass(frozen=True, slots=True)
class Fallback:
    """A new delivery standing in for a dead one, to the dead one's fallback destination."""

    destination: str
    title: str
    body: str
    format: str


@dataclass(frozen=True, slots=True)
class CircuitState:
    """A destination's circuit as stored: closed, or open with when to probe next."""

    destination: str
    open: bool = False
    failures: int = 0  # failed attempts in a row
    opened_at: float | None = None
    probe_every: float = 0.0  # seconds between probes now (doubles while they fail)
    next_probe_at: float | None = None
    last_error: str | None = None
