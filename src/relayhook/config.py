"""The daemon's config: loaded from YAML, checked whole, frozen into typed objects.

Every problem found is collected, so `relayhook check` reports them all in one run;
`load_config` raises ConfigError carrying that list, or returns a Config that is safe
to serve from.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import apprise

from relayhook.auth import (
    AUTH_SCHEMES,
    GithubAuth,
    HmacAuth,
    Network,
    StandardWebhooksAuth,
    StripeAuth,
    TokenAuth,
    Verifier,
    check_standard_secret,
    parse_networks,
)
from relayhook.errors import ConfigError, Problem
from relayhook.redact import Redactor, redact_url, url_secrets
from relayhook.units import parse_duration, parse_size
from relayhook.yamlfile import Problems, YList, YMap, load_yaml

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Config",
    "Destination",
    "FieldRef",
    "RetryPolicy",
    "Source",
    "load_config",
]

DEFAULT_CONFIG_PATH = "/etc/relayhook/relayhook.yaml"
FORMATS = ("text", "markdown", "html")
Format = Literal["text", "markdown", "html"]

_TOP_KEYS = {
    "listen",
    "database",
    "rules",
    "sources",
    "destinations",
    "retry",
    "concurrency",
    "admin_token",
    "trusted_proxies",
    "read_timeout",
    "retention",
    "shutdown_timeout",
}
_SOURCE_KEYS = {"event_type", "event_key", "auth", "max_body", "max_depth", "allow_ips"}
_DEST_COMMON = {"retry", "timeout", "concurrency", "min_interval"}
_DEST_KEYS_APPRISE = {"url", "format", "processes", *_DEST_COMMON}
_DEST_KEYS_WEBHOOK = {"webhook", "method", "headers", "body", "sign", *_DEST_COMMON}
_MAX_PROCESSES = 64
_RETRY_KEYS = {"attempts", "first_delay", "max_delay"}
_CONCURRENCY_KEYS = {"total", "per_destination"}


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
class Destination:
    """Where notifications go: an apprise URL, or a webhook with a body of the user's shape."""

    name: str
    kind: Literal["apprise", "webhook"]
    url: str
    retry: RetryPolicy
    timeout: float = 10.0
    concurrency: int = 4
    format: Format | None = None
    min_interval: float | None = None  # None: apprise's own pacing for the service
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    body: Any = None  # compiled jinja2.Template for webhook destinations
    sign: str | None = None  # a Standard Webhooks secret: sign what we send
    processes: int = 0  # apprise only: worker processes to send from; 0 for threads


@dataclass(frozen=True, slots=True)
class Concurrency:
    """How many deliveries may be in flight at once, in all and per destination."""

    total: int = 64
    per_destination: int = 8


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
    rules: tuple[Any, ...] = ()  # tuple[relayhook.rules.Rule, ...]
    redactor: Redactor = field(default_factory=Redactor)
    admin_token: str | None = None  # None: the /api/ endpoints are off
    trusted_proxies: tuple[Network, ...] = ()
    read_timeout: float = 10.0
    shutdown_timeout: float = 10.0  # how long SIGTERM waits for deliveries in flight
    retention: float | None = None  # finished work older than this is pruned; None: kept

    def summary(self) -> str:
        return (
            f"{_plural(len(self.sources), 'source')}, "
            f"{_plural(len(self.destinations), 'destination')}, "
            f"{_plural(len(self.rules), 'rule')}"
        )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), sorted(str(c) for c in choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_keys(node: YMap, allowed: set[str], where: str, problems: Problems) -> None:
    """Report each key of node that is not allowed, with a did-you-mean."""
    for key in node:
        if key not in allowed:
            problems.add(
                node.file,
                node.line_of(key),
                f"unknown key '{key}' in {where}{did_you_mean(key, allowed)}",
            )


def expect_map(value: Any, file: str, line: int, what: str, problems: Problems) -> YMap | None:
    if isinstance(value, YMap):
        return value
    problems.add(file, line, f"{what} must be a mapping, got {_kind(value)}")
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {
        dict: "a mapping",
        YMap: "a mapping",
        list: "a list",
        YList: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


class _Reader:
    """Typed access to one mapping's values; wrong values become located problems."""

    def __init__(self, node: YMap, where: str, problems: Problems) -> None:
        self.node, self.where, self.problems = node, where, problems

    def fail(self, key: str, message: str) -> None:
        self.problems.add(self.node.file, self.node.line_of(key), f"{self.where}: {key}: {message}")

    def string(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.node.get(key)
        if value is None:
            if required:
                self.problems.add(
                    self.node.file, self.node.line, f"{self.where}: missing required key '{key}'"
                )
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(key, f"expected a string, got {_kind(value)}")
            return default
        return str(value)

    def integer(self, key: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.node.get(key, default)
        try:
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError
            number = int(value)
        except ValueError:
            self.fail(key, f"expected a whole number, got {value!r}")
            return default
        if number < minimum:
            self.fail(key, f"must be at least {minimum}, got {number}")
            return default
        if maximum is not None and number > maximum:
            self.fail(key, f"must be at most {maximum}, got {number}")
            return default
        return number

    def duration(self, key: str, default: float) -> float:
        if key not in self.node:
            return default
        try:
            return parse_duration(self.node[key])
        except ValueError as e:
            self.fail(key, str(e))
            return default

    def size(self, key: str, default: int) -> int:
        if key not in self.node:
            return default
        try:
            return parse_size(self.node[key])
        except ValueError as e:
            self.fail(key, str(e))
            return default

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(key)
        if value is not None and value not in choices:
            self.fail(
                key,
                f"must be one of {', '.join(choices)}, got '{value}'{did_you_mean(value, choices)}",
            )
            return None
        return value


def _read_retry(
    node: Any, file: str, line: int, where: str, base: RetryPolicy, problems: Problems
) -> RetryPolicy:
    retry = expect_map(node, file, line, where, problems)
    if retry is None:
        return base
    check_keys(retry, _RETRY_KEYS, where, problems)
    r = _Reader(retry, where, problems)
    policy = RetryPolicy(
        attempts=r.integer("attempts", base.attempts, minimum=1),
        first_delay=r.duration("first_delay", base.first_delay),
        max_delay=r.duration("max_delay", base.max_delay),
    )
    if policy.max_delay < policy.first_delay:
        problems.add(
            retry.file,
            retry.line_of("max_delay"),
            f"{where}: max_delay is shorter than first_delay",
        )
    return policy


def _read_field_ref(
    value: Any, node: YMap, key: str, where: str, problems: Problems
) -> FieldRef | None:
    if isinstance(value, str) and value.strip():
        return FieldRef(path=tuple(value.strip().split(".")))
    if isinstance(value, YMap) and set(value) == {"header"} and isinstance(value["header"], str):
        return FieldRef(header=value["header"].strip().lower())
    problems.add(
        node.file,
        node.line_of(key),
        f"{where}: {key}: expected a dotted path such as event_id, or {{header: X-Name}}",
    )
    return None


def _secrets(
    value: Any, amap: YMap, key: str, what: str, problems: Problems
) -> tuple[str, ...] | None:
    values = list(value) if isinstance(value, list) else [value]
    if not values or any(not isinstance(v, str) or not v for v in values):
        problems.add(
            amap.file,
            amap.line_of(key),
            f"{what} must be a non-empty string or a list of them (for rotation)",
        )
        return None
    return tuple(values)


def _read_hmac(value: Any, amap: YMap, where: str, problems: Problems) -> Verifier | None:
    hnode = expect_map(value, amap.file, amap.line_of("hmac"), f"{where}: auth: hmac", problems)
    if hnode is None:
        return None
    what = f"{where}: auth: hmac"
    check_keys(hnode, {"secret", "header", "algorithm", "encoding", "prefix"}, what, problems)
    r = _Reader(hnode, what, problems)
    if "secret" not in hnode:
        problems.add(hnode.file, hnode.line, f"{what}: missing 'secret'")
        return None
    secrets = _secrets(hnode["secret"], hnode, "secret", f"{what}: secret", problems)
    header = r.string("header", required=True)
    algorithm = r.choice("algorithm", ("sha1", "sha256", "sha512")) or "sha256"
    encoding = r.choice("encoding", ("hex", "base64")) or "hex"
    prefix = r.string("prefix", "") or ""
    if secrets is None or header is None:
        return None
    return HmacAuth(secrets, header=header, algorithm=algorithm, encoding=encoding, prefix=prefix)


def _read_auth(node: YMap, where: str, problems: Problems) -> tuple[Verifier | None, str | None]:
    """The source's verifier (None for auth: none) and its scheme name."""
    if "auth" not in node:
        problems.add(
            node.file,
            node.line,
            f"{where}: missing 'auth' (use auth: {{token: ...}}, or auth: none to accept anyone)",
        )
        return None, None
    auth = node["auth"]
    if auth == "none":
        return None, "none"
    amap = expect_map(auth, node.file, node.line_of("auth"), f"{where}: auth", problems)
    if amap is None:
        return None, None
    if len(amap) != 1:
        problems.add(
            amap.file, amap.line, f"{where}: auth must name exactly one scheme, got {len(amap)}"
        )
        return None, None
    ((scheme, value),) = amap.items()
    if scheme not in AUTH_SCHEMES:
        # Never fall back to accepting: an unknown scheme is a config error.
        problems.add(
            amap.file,
            amap.line_of(scheme),
            f"{where}: unknown auth scheme '{scheme}' (known: {', '.join(AUTH_SCHEMES)})"
            f"{did_you_mean(scheme, AUTH_SCHEMES)}",
        )
        return None, None
    if scheme == "hmac":
        return _read_hmac(value, amap, where, problems), scheme
    secrets = _secrets(value, amap, scheme, f"{where}: auth: {scheme}", problems)
    if secrets is None:
        return None, scheme
    if scheme == "standard_webhooks":
        for secret in secrets:
            why = check_standard_secret(secret)
            if why:
                problems.add(amap.file, amap.line_of(scheme), f"{where}: auth: {why}")
                return None, scheme
    makers: dict[str, Callable[[tuple[str, ...]], Verifier]] = {
        "token": TokenAuth,
        "github": GithubAuth,
        "stripe": StripeAuth,
        "standard_webhooks": StandardWebhooksAuth,
    }
    return makers[scheme](secrets), scheme


# What a scheme implies when the source does not say where the type and key are.
_DEFAULT_TYPE = {"github": FieldRef(header="x-github-event")}
_DEFAULT_KEY = {
    "github": FieldRef(header="x-github-delivery"),
    "standard_webhooks": FieldRef(header="webhook-id"),
}


def _read_source(name: str, node: Any, file: str, line: int, problems: Problems) -> Source | None:
    where = f"source '{name}'"
    src = expect_map(node, file, line, where, problems)
    if src is None:
        return None
    check_keys(src, _SOURCE_KEYS, where, problems)
    auth, scheme = _read_auth(src, where, problems)
    event_type = (
        _read_field_ref(src["event_type"], src, "event_type", where, problems)
        if "event_type" in src
        else _DEFAULT_TYPE.get(scheme or "", FieldRef(path=("event_id",)))
    )
    event_key = (
        _read_field_ref(src["event_key"], src, "event_key", where, problems)
        if "event_key" in src
        else _DEFAULT_KEY.get(scheme or "")
    )
    r = _Reader(src, where, problems)
    max_body = r.size("max_body", 1024 * 1024)
    max_depth = r.integer("max_depth", 64, minimum=1)
    allow_ips: tuple[Network, ...] = ()
    if "allow_ips" in src:
        values = src["allow_ips"] if isinstance(src["allow_ips"], list) else [src["allow_ips"]]
        networks, bad = parse_networks(values)
        for value in bad:
            r.fail("allow_ips", f"'{value}' is not an address or CIDR such as 192.0.2.0/24")
        allow_ips = tuple(networks)
    if event_type is None:
        return None
    return Source(
        name=name,
        event_type=event_type,
        event_key=event_key,
        auth=auth,
        max_body=max_body,
        max_depth=max_depth,
        allow_ips=allow_ips,
    )


def _check_apprise_url(url: str) -> bool:
    # Apprise reports unparseable URLs through its logger; our caller reports them instead.
    logger = logging.getLogger("apprise")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return apprise.Apprise.instantiate(url) is not None
    finally:
        logger.setLevel(previous)


def _read_destination(
    name: str,
    node: Any,
    file: str,
    line: int,
    defaults: RetryPolicy,
    concurrency: Concurrency,
    problems: Problems,
) -> Destination | None:
    from relayhook.templating import TemplateError, compile_template

    where = f"destination '{name}'"
    dest = expect_map(node, file, line, where, problems)
    if dest is None:
        return None
    r = _Reader(dest, where, problems)
    retry = (
        _read_retry(
            dest["retry"], dest.file, dest.line_of("retry"), f"{where}: retry", defaults, problems
        )
        if "retry" in dest
        else defaults
    )
    timeout = r.duration("timeout", 10.0)
    conc = r.integer("concurrency", concurrency.per_destination, minimum=1)
    min_interval = r.duration("min_interval", -1.0)
    interval = None if min_interval < 0 else min_interval
    if "webhook" in dest and "url" in dest:
        problems.add(
            dest.file, dest.line, f"{where}: give either url (apprise) or webhook, not both"
        )
        return None
    if "webhook" in dest:
        check_keys(dest, _DEST_KEYS_WEBHOOK, where, problems)
        url = r.string("webhook", required=True)
        if url is not None and not url.startswith(("http://", "https://")):
            r.fail("webhook", f"expected an http:// or https:// URL, got '{redact_url(url)}'")
        method = (r.string("method", "POST") or "POST").upper()
        if method not in ("POST", "PUT", "PATCH"):
            r.fail("method", f"must be POST, PUT or PATCH, got '{method}'")
        sign = r.string("sign")
        if sign is not None and check_standard_secret(sign):
            r.fail("sign", "must be a Standard Webhooks secret: whsec_ followed by base64")
            sign = None
        headers_node = dest.get("headers", {})
        headers: list[tuple[str, str]] = []
        if isinstance(headers_node, dict):
            headers = [(str(k), str(v)) for k, v in headers_node.items()]
        else:
            r.fail("headers", f"expected a mapping, got {_kind(headers_node)}")
        body_src = r.string("body")
        body = None
        if body_src is not None:
            try:
                body = compile_template(body_src)
            except TemplateError as e:
                problems.add(
                    dest.file,
                    dest.value_line("body") + getattr(e, "lineno", 1) - 1,
                    f"{where}: body: template syntax error: {getattr(e, 'message', e)}",
                )
        if url is None:
            return None
        return Destination(
            name=name,
            kind="webhook",
            url=url,
            retry=retry,
            timeout=timeout,
            concurrency=conc,
            method=method,
            headers=tuple(headers),
            body=body,
            min_interval=interval,
            sign=sign,
        )
    check_keys(dest, _DEST_KEYS_APPRISE, where, problems)
    url = r.string("url", required=True)
    fmt = r.choice("format", FORMATS)
    processes = r.integer("processes", 0, minimum=0, maximum=_MAX_PROCESSES)
    if url is None:
        return None
    if not url:
        r.fail("url", "is empty")
        return None
    if not _check_apprise_url(url):
        r.fail("url", f"apprise cannot use URL '{redact_url(url)}'")
        return None
    return Destination(
        name=name,
        kind="apprise",
        url=url,
        retry=retry,
        timeout=timeout,
        concurrency=conc,
        format=fmt,  # type: ignore[arg-type]
        min_interval=interval,
        processes=processes,
    )


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port such as 127.0.0.1:8787, got '{value}'")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def _resolve(base_dir: str, path: str) -> str:
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Load, check and compile the config and its rules; raise ConfigError listing every problem."""
    from relayhook.rules import load_rules

    problems = Problems()
    env = os.environ if env is None else env
    raw = load_yaml(path, problems, env)
    if raw is None and not problems:
        problems.add(path, 0, "the config is empty")
    if problems:
        raise ConfigError(problems)
    top = expect_map(raw, path, 1, "the config", problems)
    if top is None:
        raise ConfigError(problems)
    check_keys(top, _TOP_KEYS, "the config", problems)
    r = _Reader(top, "config", problems)
    base_dir = os.path.dirname(path)

    listen_host, listen_port = "127.0.0.1", 8787
    listen = r.string("listen")
    if listen is not None:
        try:
            listen_host, listen_port = parse_listen(listen)
        except ValueError as e:
            r.fail("listen", str(e))
    database = _resolve(base_dir, r.string("database", "/var/lib/relayhook/relayhook.db") or "")
    rules_dir = _resolve(base_dir, r.string("rules", "/etc/relayhook/rules") or "")

    retry = (
        _read_retry(top["retry"], top.file, top.line_of("retry"), "retry", RetryPolicy(), problems)
        if "retry" in top
        else RetryPolicy()
    )
    admin_token = r.string("admin_token")
    if admin_token is not None and len(admin_token) < 16:
        r.fail("admin_token", "must be at least 16 characters")
    read_timeout = r.duration("read_timeout", 10.0)
    shutdown_timeout = r.duration("shutdown_timeout", 10.0)
    retention = r.duration("retention", 0.0) or None
    trusted_values = top.get("trusted_proxies", [])
    trusted, bad = parse_networks(
        trusted_values if isinstance(trusted_values, list) else [trusted_values]
    )
    for value in bad:
        r.fail("trusted_proxies", f"'{value}' is not an address or CIDR such as 10.0.0.0/8")
    concurrency = Concurrency()
    if "concurrency" in top:
        cnode = expect_map(
            top["concurrency"], top.file, top.line_of("concurrency"), "concurrency", problems
        )
        if cnode is not None:
            check_keys(cnode, _CONCURRENCY_KEYS, "concurrency", problems)
            cr = _Reader(cnode, "concurrency", problems)
            concurrency = Concurrency(
                total=cr.integer("total", concurrency.total, minimum=1),
                per_destination=cr.integer(
                    "per_destination", concurrency.per_destination, minimum=1
                ),
            )

    sources: dict[str, Source] = {}
    snode = expect_map(top.get("sources"), path, top.line_of("sources"), "sources", problems)
    for name, node in (snode or {}).items():
        src = _read_source(str(name), node, path, snode.line_of(name) if snode else 0, problems)
        if src is not None:
            sources[str(name)] = src

    destinations: dict[str, Destination] = {}
    dnode = expect_map(
        top.get("destinations"), path, top.line_of("destinations"), "destinations", problems
    )
    for name, node in (dnode or {}).items():
        dest = _read_destination(
            str(name), node, path, dnode.line_of(name) if dnode else 0, retry, concurrency, problems
        )
        if dest is not None:
            destinations[str(name)] = dest

    rules = load_rules(
        rules_dir,
        sources,
        destinations,
        problems,
        declared_sources=set(snode or ()),
        declared_destinations=set(dnode or ()),
    )

    secrets: set[str] = {admin_token} if admin_token else set()
    for src in sources.values():
        if src.auth is not None:
            secrets.update(src.auth.secrets)
    for dest in destinations.values():
        secrets.update(url_secrets(dest.url))
        secrets.update(v for k, v in dest.headers if k.lower() in {"authorization", "x-api-key"})
        if dest.sign:
            secrets.update((dest.sign, dest.sign.removeprefix("whsec_")))
    redactor = Redactor(secrets)
    if problems:
        raise ConfigError([Problem(p.file, p.line, redactor(p.message)) for p in problems])
    return Config(
        path=path,
        listen_host=listen_host,
        listen_port=listen_port,
        database=database,
        rules_dir=rules_dir,
        sources=sources,
        destinations=destinations,
        retry=retry,
        concurrency=concurrency,
        rules=tuple(rules),
        redactor=redactor,
        admin_token=admin_token,
        trusted_proxies=tuple(trusted),
        read_timeout=read_timeout,
        shutdown_timeout=shutdown_timeout,
        retention=retention,
    )
