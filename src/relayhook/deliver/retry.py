"""What an attempt's outcome means for its delivery: a pure decision, testable alone."""

from __future__ import annotations

from collections.abc import Callable

import tenacity

from relayhook.config.settings import RetryPolicy
from relayhook.model import Decision, DeliveryState, Outcome

__all__ = ["backoff", "decide"]


def backoff(attempt: int, policy: RetryPolicy) -> float:
    """Seconds before the next try: exponential from first_delay, jittered, capped at max_delay."""
    wait = tenacity.wait_exponential_jitter(
        multiplier=policy.first_delay, max=policy.max_delay, jitter=policy.first_delay
    )
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(wait(state))


def decide(
    outcome: Outcome,
    attempt: int,
    policy: RetryPolicy,
    now: float,
    wait: Callable[[int, RetryPolicy], float] = backoff,
) -> Decision:
    """The delivery's state after its attempt number `attempt` had this outcome.

    Delivered when it went out; dead when the sender said a retry cannot help or the
    policy's attempts are spent; else retrying after the backoff, or after the time the
    destination asked for (Retry-After) when that is longer.
    """
    if outcome.ok:
        return Decision(DeliveryState.DELIVERED)
    if not outcome.retry or attempt >= policy.attempts:
        return Decision(DeliveryState.DEAD)
    delay = max(wait(attempt, policy), outcome.retry_after or 0.0)
    return Decision(DeliveryState.RETRYING, now + delay)
