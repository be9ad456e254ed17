"""Circuits: a destination that keeps failing is paused and probed, not hammered.

After `failures` failed attempts in a row a destination's circuit opens: its due
deliveries wait, keeping their attempt counts, and one probe (the oldest due delivery,
a real send) goes every `probe` seconds, the interval doubling up to the destination's
retry.max_delay. A probe's failure is logged but spends none of its delivery's
attempts, so an outage alone never makes a delivery dead; a delivered probe (or any
delivered attempt) closes the circuit and the backlog drains oldest first. A refusal (a
request the destination understood and rejected, so a retry cannot help) shows the
destination is up and counts neither way. Every change is stored, so an open circuit
stays open, and probes keep their schedule, across a restart.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from relayhook.config.settings import Destination
from relayhook.model import CircuitState, Outcome
from relayhook.ops.metrics import Metrics
from relayhook.store.base import Store

__all__ = ["Circuits"]

logger = logging.getLogger("relayhook.deliver")


class Circuits:
    """Every destination's circuit, kept in memory and stored on each change."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._states: dict[str, CircuitState] = {}
        self._probing: set[str] = set()  # destinations with a probe in flight
        self._changed: dict[str, CircuitState] = {}  # not stored yet
        self.reordering: set[str] = set()  # just closed: no claims until the backlog is in order

    async def load(self) -> None:
        for state in await self.store.circuits():
            self._states[state.destination] = state
            self.metrics.circuit_open.labels(state.destination).set(int(state.open))
            if state.open:
                logger.warning(
                    "circuit for %s is open (since the last run); next probe %s",
                    state.destination,
                    "now" if state.next_probe_at is None else f"at {state.next_probe_at:.0f}",
                    extra={"destination": state.destination},
                )

    async def refresh(self) -> None:
        """Take the circuits other instances changed (several instances on one database):
        an open one pauses this instance too, a closed one lets it send again."""
        for stored in await self.store.circuits():
            name = stored.destination
            mine = self._states.get(name)
            if name in self._changed or name in self._probing:
                continue  # ours is newer, or our probe will tell
            if mine is None or (mine.open, mine.next_probe_at) != (
                stored.open,
                stored.next_probe_at,
            ):
                self._states[name] = stored
                self.metrics.circuit_open.labels(name).set(int(stored.open))

    def get(self, name: str) -> CircuitState:
        return self._states.get(name) or CircuitState(name)

    def gate(self, dest: Destination, now: float) -> tuple[bool, float | None]:
        """(whether deliveries may be claimed, and if only as one probe: when the next
        probe is due, else None)."""
        if dest.name in self.reordering:
            return False, None
        state = self._states.get(dest.name)
        if state is None or not state.open or dest.circuit is None:
            return True, None
        due = state.next_probe_at or now
        return dest.name not in self._probing and due <= now, due

    def probed_elsewhere(self, name: str, until: float) -> None:
        """Another instance took this probe: ours waits until then (not stored: theirs is)."""
        state = self._states.get(name)
        if state is not None and state.open:
            self._states[name] = dataclasses.replace(state, next_probe_at=until)

    def probe_every(self, name: str, every: float) -> None:
        """The probe interval in force, as the instances share it: the next failed probe
        doubles this one."""
        state = self._states.get(name)
        if state is not None and state.open and every != state.probe_every:
            self._states[name] = dataclasses.replace(state, probe_every=every)

    def probing(self, name: str) -> None:
        """A probe to name is on its way."""
        self._probing.add(name)

    def probe_abandoned(self, name: str) -> None:
        """The probe never got an outcome (relayhook's own error): the next may go."""
        self._probing.discard(name)

    def is_open(self, name: str) -> bool:
        state = self._states.get(name)
        return state is not None and state.open

    def observe(
        self, dest: Destination, outcome: Outcome, error: str | None, probe: bool, now: float
    ) -> None:
        """Count one attempt's outcome to dest; open, re-probe or close its circuit."""
        if probe:
            self._probing.discard(dest.name)
        policy = dest.circuit
        state = self.get(dest.name)
        if policy is None:
            if state.open:
                self._set(dataclasses.replace(state, open=False, failures=0, next_probe_at=None))
                logger.info("circuit for %s closed: it is off in the config", dest.name)
            return
        if outcome.ok:
            if state.open:
                logger.warning(
                    "circuit for %s closed: %s delivered; the backlog drains now",
                    dest.name,
                    "a probe" if probe else "an attempt",
                    extra={"destination": dest.name},
                )
            if state.open:
                self._set(CircuitState(dest.name))
                self.reordering.add(dest.name)
            elif state.failures:
                self._states[dest.name] = CircuitState(dest.name)
            return
        if not outcome.retry or outcome.limited:
            # Refused or rate limited: the destination is up, and this attempt proves no
            # more; a probe's turn passes to the next one at the same interval.
            if probe:
                self._set(dataclasses.replace(state, next_probe_at=now + state.probe_every))
            return
        failures = state.failures + 1
        if state.open:
            if probe:
                every = min(state.probe_every * 2, dest.retry.max_delay)
                every = max(every, policy.probe)
                self._set(
                    dataclasses.replace(
                        state, failures=failures, probe_every=every,
                        next_probe_at=now + every, last_error=error,
                    )
                )  # fmt: skip
                logger.warning(
                    "circuit for %s: the probe failed (%s); next probe in %.0fs",
                    dest.name,
                    error,
                    every,
                    extra={"destination": dest.name},
                )
            return  # an attempt begun before it opened: no news
        if failures < policy.failures:
            # Counted in memory only: a restart forgets a few failures, not an open circuit.
            self._states[dest.name] = dataclasses.replace(
                state, failures=failures, last_error=error
            )
            return
        self._set(
            CircuitState(
                dest.name, open=True, failures=failures, opened_at=now,
                probe_every=policy.probe, next_probe_at=now + policy.probe, last_error=error,
            )
        )  # fmt: skip
        logger.warning(
            "circuit for %s opened after %d failed attempts in a row (last: %s);"
            " its deliveries wait, probing every %.0fs",
            dest.name,
            failures,
            error,
            policy.probe,
            extra={"destination": dest.name},
        )

    def _set(self, state: CircuitState) -> None:
        self._states[state.destination] = state
        self._changed[state.destination] = state
        self.metrics.circuit_open.labels(state.destination).set(int(state.open))

    @property
    def changed(self) -> bool:
        return bool(self._changed)

    async def store_changes(self) -> None:
        """Write every changed circuit; one that fails to write is written next time."""
        while self._changed:
            name, state = next(iter(self._changed.items()))
            await self.store.save_circuit(state)
            if self._changed.get(name) is state:
                del self._changed[name]

    def follow_config(self, destinations: Mapping[str, Destination]) -> None:
        """Close circuits of destinations the config turned off (on reload)."""
        for name, state in list(self._states.items()):
            dest = destinations.get(name)
            if state.open and dest is not None and dest.circuit is None:
                self._set(dataclasses.replace(state, open=False, failures=0, next_probe_at=None))
                logger.info("circuit for %s closed: it is off in the config", name)
