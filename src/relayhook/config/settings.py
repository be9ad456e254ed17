"""The typed, frozen objects a loaded config is made of; what every stage reads.

Nothing here reads a file: config.load builds these, and a reload swaps a whole new set.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jinja2

from relayhook.errors import Problem
from relayhook.ops.redact import Redactor
from relayhook.policy.networks import Network
from relayhook.policy.quiet import QuietHours
from relayhook.policy.signatures import Verifier
from relayhook.text.escape import Family

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "FORMATS",
    "SEVERITIES",
    "AppriseDestination",
    "Check",
    "CircuitPolicy",
    "Concurrency",
    "Config",
    "Destination",
    "FieldRef",
    "GroupPolicy",
    "RetryPolicy",
    "Rule",
    "Source",
    "ThrottlePolicy",
    "WebhookDestination",
]

DEFAULT_CONFIG_PATH = "/etc/relayhook/relayhook.yaml"
FORMATS = ("text", "markdown", "html")
SEVERITIES = ("info", "success", "warning", "failure")  # apprise's notify types
Format = Literal["text", "markdown", "html"]
Expression = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a delivery is tried."""

    attempts: int = 10
    first_delay: float = 5.0
    max_delay: float = 3600.0


@dataclass(frozen=True, slots=True)
class FieldRef:
    """Where a value lives in a request: a dotted path into the JSON body, or a header."""

    path: tuple[str, ...] = ()
    header: str | None = None

    def describe(self) -> str:
        return f"header {self.header}" if self.header else "field " + ".".join(self.path)

    def extract(self, body: Any, headers: Mapping[str, str]) -> Any:
        """The value, or None when absent."""
        if self.header is not None:
            return headers.get(self.header.lower())
        node = body
        for part in self.path:
            if isinstance(node, Mapping):
                node = node.get(part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node


@dataclass(frozen=True, slots=True)
class Source:
    """A sender relayhook accepts events from, at POST /hooks/{name}."""

    name: str
    event_type: FieldRef
    event_key: FieldRef | None
    auth: Verifier | None
    max_body: int = 1024 * 1024
    max_depth: int = 64
    allow_ips: tuple[Network, ...] = ()  # empty: any address


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    """After `failures` failed attempts in a row, pause the destination and probe it every
    `probe` seconds (doubling up to retry.max_delay) until one gets through."""

    failures: int = 5
    probe: float = 30.0


@dataclass(frozen=True, slots=True)
class _Sending:
    """What every destination has: where, and how patiently and how much at once."""

    name: str
    url: str
    retry: RetryPolicy
    timeout: float = 10.0
    concurrency: int = 4
    min_interval: float | None = None  # apprise: None is apprise's own pacing for the service
    quiet: str | None = None  # the quiet_hours calendar that holds its messages
    circuit: CircuitPolicy | None = CircuitPolicy()  # None: off
    fallback: str | None = None  # where a delivery that goes dead here is sent instead


@dataclass(frozen=True, slots=True)
class AppriseDestination(_Sending):
    """Any service apprise speaks, by URL; apprise shapes the request."""

    format: Format | None = None
    processes: int = 0  # worker processes to send from; 0 for threads
    family: Family = Family.OTHER  # how the service treats text: what data is escaped for

    def shape(self, title: str, body: str, fmt: str, context: Mapping[str, Any]) -> tuple[str, str]:
        """The body to send and its format: apprise takes the rendered message as it is."""
        return body, fmt

    def escaping(self) -> Family:
        return self.family


@dataclass(frozen=True, slots=True)
class WebhookDestination(_Sending):
    """A plain HTTP request whose body has the user's shape."""

    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    body: jinja2.Template | None = None  # None: a JSON object of the message's parts
    sign: str | None = None  # a Standard Webhooks secret: sign what we send

    def escaping(self) -> Family:
        return Family.OTHER  # the body template decides; its data is JSON, not chat text

    def shape(self, title: str, body: str, fmt: str, context: Mapping[str, Any]) -> tuple[str, str]:
        """The request body: the destination's template, or the message's parts as JSON."""
        parts = {
            "title": title,
            "body": body,
            "format": fmt,
            "rule": context["rule"],
            "severity": context["severity"],
        }
        if self.body is not None:
            return self.body.render({**context, **parts}), "json"
        whole = {**parts, "event_type": context["event_type"], "source": context["source"]}
        return json.dumps(whole, ensure_ascii=False), "json"


Destination = AppriseDestination | WebhookDestination


@dataclass(frozen=True, slots=True)
class Concurrency:
    """How many deliveries may be in flight at once, in all and per destination."""

    total: int = 64
    per_destination: int = 8


@dataclass(frozen=True, slots=True)
class Check:
    """One `when` (or `for_each`) expression: its text, for explaining a miss, and its code."""

    text: str
    line: int
    fn: Expression


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    """A rule's `group:`: fold its messages into digests."""

    key: jinja2.Template | None  # None: one group per (rule, destination)
    wait: float = 30.0
    interval: float | None = None
    max: int | None = None


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """A rule's `throttle:`: at most `limit` messages per key per `per` seconds at once."""

    key: jinja2.Template | None
    limit: int
    per: float


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: match an event, render a message, send it to destinations."""

    name: str
    file: str
    line: int
    event: str
    source: str | None
    when: tuple[Check, ...]
    for_each: Check | None
    to: tuple[str, ...]
    title: jinja2.Template | None
    body: jinja2.Template
    format: str
    stop: bool
    severity: jinja2.Template  # renders to one of SEVERITIES; most are a fixed word
    group: GroupPolicy | None = None
    throttle: ThrottlePolicy | None = None
    digest_title: jinja2.Template | None = None  # None: the default digest title
    digest_body: jinja2.Template | None = None  # None: the default digest body
    quiet: str | None = None  # the quiet_hours calendar that holds its messages
    urgent: bool = False  # quiet hours (its own and its destinations') never hold it

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def matches_type(self, event_type: str) -> bool:
        return fnmatch.fnmatchcase(event_type, self.event)


@dataclass(frozen=True)
class Config:
    """Everything the daemon and the CLI need, checked and compiled."""

    path: str
    listen_host: str
    listen_port: int
    database: str
    rules_dir: str
    sources: Mapping[str, Source]
    destinations: Mapping[str, Destination]
    retry: RetryPolicy
    concurrency: Concurrency
    rules: tuple[Rule, ...] = ()
    redactor: Redactor = field(default_factory=Redactor)
    admin_token: str | None = None  # None: the /api/ endpoints are off
    trusted_proxies: tuple[Network, ...] = ()
    read_timeout: float = 10.0
    shutdown_timeout: float = 10.0  # how long SIGTERM waits for deliveries in flight
    retention: float | None = None  # finished work older than this is pruned; None: kept
    render_timeout: float = 2.0  # the time one rule may take to match and render an event
    quiet_hours: Mapping[str, QuietHours] = field(default_factory=dict)
    orphan_after: float = 7 * 86400.0  # work for a destination no longer configured: dead after
    lease: float = 60.0  # PostgreSQL: how long a claim holds a delivery for one instance
    warnings: tuple[Problem, ...] = ()  # what check reports without refusing the config

    def summary(self) -> str:
        return (
            f"{_plural(len(self.sources), 'source')}, "
            f"{_plural(len(self.destinations), 'destination')}, "
            f"{_plural(len(self.rules), 'rule')}"
        )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
