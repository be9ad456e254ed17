"""The one interface the pipeline, the CLI and the API use for everything they keep.

SQLite (store.sqlite) implements it; another backend must pass the same contract tests
(tests/test_store_contract.py). Every write is durable when its call returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence, Set
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from relayhook.model import Attempt, CircuitState, Delivery, Event, NewEvent, Routing
from relayhook.policy.silence import Matcher, Silence, SilenceFacts

__all__ = [
    "DeliveryFilter",
    "Digest",
    "DueGroup",
    "EventFilter",
    "Made",
    "PruneResult",
    "QueueStats",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoredEvent",
]


class StoreBusy(Exception):  # noqa: N818 - reads as what it says
    """Another daemon holds the database."""


class StoreError(Exception):
    """The database failed a call (disk full, locked too long): nothing of it was kept."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Unfinished work: deliveries per state, the oldest one's age, events not routed."""

    depth: Mapping[str, int]
    oldest_age: float
    awaiting_routing: int
    groups_waiting: int = 0


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """Which deliveries a list or a bulk replay takes; empty fields take all."""

    states: tuple[str, ...] = ()
    destination: str | None = None
    rule: str | None = None
    since: float | None = None  # created at or after
    until: float | None = None  # created before


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a list takes; empty fields take all."""

    state: str | None = None
    source: str | None = None
    event_type: str | None = None
    since: float | None = None  # received at or after
    until: float | None = None  # received before


@dataclass(frozen=True, slots=True)
class DueGroup:
    """A group whose digest is due."""

    id: int
    rule: str
    destination: str
    key: str
    count: int
    event_id: int  # its first message's event
    format: str
    severity: str
    first_at: float
    last_at: float
    reason: str  # wait, max, throttle or quiet


@dataclass(frozen=True, slots=True)
class Digest:
    """A group's rendered digest, or why it could not be rendered."""

    title: str
    body: str
    format: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event read back whole, with its dedupe key and how far it got (received:
    waiting to be routed; routed; unrouted: no rule made anything of it)."""

    event: Event
    key: str
    state: str


@dataclass(frozen=True, slots=True)
class Made:
    """How many messages of one rule to one destination the log holds for one event, in
    one state: the messages routing made, not digests, replays or fallbacks."""

    event_id: int
    rule: str
    destination: str
    state: str
    count: int


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What a prune deleted."""

    events: int = 0
    deliveries: int = 0
    attempts: int = 0


class Store(Protocol):
    """Events, deliveries and attempts, kept durably."""

    @property
    def where(self) -> str:
        """The database, as a user would name it (secrets masked)."""

    # -- ingest ------------------------------------------------------------------------

    async def add_event(self, event: NewEvent) -> tuple[int, bool]:
        """Keep an accepted event: (its id, whether (source, key) was known already).

        A known key keeps the first event and stores nothing new.
        """

    # -- routing -----------------------------------------------------------------------

    async def events_to_route(
        self, limit: int, received_before: float | None = None
    ) -> list[Event]:
        """Up to limit stored events not routed yet (received before received_before, if
        given), oldest first."""

    async def save_routings(self, routings: Sequence[Routing], now: float) -> list[bool]:
        """Each event's deliveries and its new state (routed, unrouted), all at once.

        An event routed already is left alone (False), so routing one twice is harmless.
        """

    # -- sending -----------------------------------------------------------------------

    async def recover(self, now: float) -> int:
        """After a crash: make work caught in flight due again; how many."""

    async def claim_due(
        self, wants: Mapping[str, int], busy: Set[int], now: float
    ) -> tuple[list[Delivery], float | None]:
        """Up to wants[destination] due deliveries each, oldest due first, none of busy;
        and, when it claims none, when the next delivery to those destinations falls due
        (None when it claims some: the caller asks again at once). A claimed delivery is
        not claimed again (by any instance) until its attempt is recorded or it is
        released; with a lease, also once the lease has run out."""

    # How long a claim holds a delivery for this instance (renewed while it sends), or None
    # where one daemon owns the database and keeps what is in flight in memory (SQLite).
    lease: float | None

    async def listen(self, heard: Callable[[str], None]) -> None:
        """Call heard(topic) whenever another instance stores work ("deliveries";
        "groups": messages that may fill a group); runs until cancelled (where nobody
        else stores work: does nothing)."""

    def exclusive(self, job: str) -> AbstractAsyncContextManager[bool]:
        """Whether this instance runs a periodic job (a name of up to 7 letters) now: one
        instance at a time among those on the database, for as long as the block runs."""

    async def release(self, ids: Sequence[int]) -> None:
        """Give back claimed deliveries that will not be sent now: due again at once."""

    async def renew_leases(self, ids: Sequence[int], until: float) -> int:
        """Extend this instance's leases on deliveries still being sent; how many it holds."""

    async def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Log each attempt and move its delivery to the state it decided (a held attempt
        spends none of its attempts); add and link the fallback delivery of one that went
        dead with a fallback; note each destination's last success or error."""

    async def waiting_by_destination(self) -> dict[str, int]:
        """Unfinished deliveries per destination."""

    async def requeue_due(self, destination: str, now: float) -> int:
        """Give every delivery due to destination its first due time (when it was made)
        back as its place in the queue, so a backlog drains oldest first."""

    async def orphans(self, configured: Sequence[str], before: float, now: float) -> dict[str, int]:
        """Make dead the unfinished deliveries to destinations not in `configured`, not
        touched since `before`, saying why: how many per destination."""

    # -- destinations --------------------------------------------------------------------

    async def circuits(self) -> list[CircuitState]:
        """Every stored circuit."""

    async def save_circuit(self, state: CircuitState) -> None:
        """Store a destination's circuit as it is now."""

    async def take_probe(self, destination: str, now: float, every: float) -> float | None:
        """Take the probe of destination's open circuit for this instance: the probe
        interval in force (instances share it; `every` where none is stored), or None when
        another instance probes this time. Taking it moves the stored next probe on."""

    async def destination_status(self) -> dict[str, dict[str, Any]]:
        """Per destination: circuit, opened_at, next_probe_at, last_success_at,
        last_error, last_error_at, queue (deliveries waiting) and oldest_due_at."""

    # -- replay ------------------------------------------------------------------------

    async def replay(self, ids: Iterable[int], now: float) -> list[tuple[int, int]]:
        """A new pending copy of each delivered, dead or silenced delivery: [(original,
        new)]."""

    async def replay_dead(self, since: float, now: float) -> list[tuple[int, int]]:
        """replay() of every delivery that went dead at or after since."""

    # -- groups ------------------------------------------------------------------------

    async def due_groups(self, now: float, limit: int) -> list[DueGroup]:
        """Groups not sent whose time has come, the longest due first."""

    async def next_group_due(self) -> float | None:
        """When the next group not sent falls due."""

    async def group_members(self, group_id: int, limit: int) -> list[dict[str, Any]]:
        """A group's first `limit` messages in arrival order (title, body, item, event)."""

    async def close_group(self, group: DueGroup, digest: Digest | None, now: float) -> int | None:
        """Send a due group once: digest as a new delivery (None: its one message as
        itself). The delivery that goes, or None when the group was sent already."""

    async def hold_group(self, group: DueGroup, until: float, now: float) -> int | None:
        """Fold a due group's messages into the quiet-hours group of its rule and
        destination, due at until, instead of sending it. That group's id, or None when
        the group was sent already."""

    # -- silences ----------------------------------------------------------------------

    async def add_silence(
        self,
        matchers: Sequence[Matcher],
        starts_at: float,
        ends_at: float,
        comment: str,
        author: str,
        now: float,
    ) -> int:
        """Keep a new silence; its id."""

    async def active_silences(self, now: float) -> list[Silence]:
        """Silences in force at now, oldest first."""

    async def list_silences(self, now: float, include_ended: bool = False) -> list[dict[str, Any]]:
        """Silences not ended (or all), newest first, each with `held`: messages it muted."""

    async def expire_silence(self, silence_id: int, now: float) -> bool:
        """End a silence now; False when unknown or ended already. Sends nothing."""

    async def silence_facts(self, ids: Iterable[int]) -> dict[int, SilenceFacts]:
        """What matchers read of each of these deliveries (payload, item, rule, ...)."""

    async def mute(self, muted: Sequence[tuple[int, int]], now: float) -> list[int]:
        """Mark unfinished deliveries silenced, each by its silence: the ids it changed."""

    # -- reads for the CLI and the API --------------------------------------------------

    async def list_events(
        self, *, state: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[dict[str, Any]]: ...

    async def get_event(self, event_id: int) -> dict[str, Any] | None:
        """An event with its body, headers and a summary of each of its deliveries."""

    def events_since(self, since: float, batch: int) -> AsyncIterator[list[StoredEvent]]:
        """Every event received at or after since, whole, in pages of up to batch by id
        (a long scan never holds them all, nor a write lock)."""

    async def events_by_id(self, ids: Sequence[int]) -> list[StoredEvent]:
        """These events, whole, by id; an unknown id is left out."""

    async def made_for(self, event_ids: Sequence[int]) -> list[Made]:
        """What routing made of these events: per event, rule, destination and state, the
        messages it stored (a message folded into a digest counts, in its own state; the
        digest, a replay and a fallback do not)."""

    async def list_deliveries(
        self,
        *,
        state: str | None = None,
        rule: str | None = None,
        destination: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]: ...

    async def page_deliveries(
        self, f: DeliveryFilter, before: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Deliveries matching f, newest first, ids below `before`: one page of a list."""

    async def matching_deliveries(self, f: DeliveryFilter) -> list[int]:
        """Every delivery matching f that replay takes (delivered, dead, silenced)."""

    async def page_events(
        self, f: EventFilter, before: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Events matching f, newest first, ids below `before`."""

    async def waiting_groups(self) -> list[dict[str, Any]]:
        """Groups not sent yet, soonest due first: id, rule, destination, key (as the
        user wrote it), reason, count, first_at, last_at, due_at."""

    async def send_group_now(self, group_id: int, now: float) -> bool:
        """Make a waiting group due now; False when it is sent already or unknown."""

    async def get_delivery(self, delivery_id: int) -> dict[str, Any] | None:
        """A delivery with its event, every attempt, the group it is in (`group`) and the
        group it is the digest of (`digest_of`)."""

    async def queue_stats(self, now: float) -> QueueStats: ...

    async def ping(self) -> None:
        """Raise unless the database takes a write transaction now."""

    # -- retention ---------------------------------------------------------------------

    async def prune(self, cutoff: float) -> PruneResult:
        """Delete finished events received before cutoff, with their deliveries and
        attempts; unfinished work and anything touched since cutoff stays."""

    async def close(self) -> None: ...
