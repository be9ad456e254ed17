"""The daemon's config: loaded from YAML, checked whole, frozen into typed objects.

Every problem found is collected, so `relayhook check` reports them all in one run;
`load_config` raises ConfigError carrying that list, or returns a Config that is safe
to serve from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from relayhook.config.destinations import read_destination, read_retry
from relayhook.config.keys import CONCURRENCY, TOP
from relayhook.config.quiet import read_quiet_hours
from relayhook.config.reader import Reader, check_keys, did_you_mean, expect_map
from relayhook.config.rules import load_rules
from relayhook.config.settings import (
    Concurrency,
    Config,
    Destination,
    RetryPolicy,
    Source,
    WebhookDestination,
)
from relayhook.config.sources import read_source
from relayhook.config.yamlnodes import Problems, YMap, load_yaml
from relayhook.errors import ConfigError, Problem
from relayhook.ops.redact import Redactor, url_secrets
from relayhook.policy.networks import parse_networks

__all__ = ["load_config", "parse_listen", "resolve_path"]

_SERVER_URLS = ("postgresql://", "postgres://")  # a database that is a server, not a file
_LEASE_MARGIN = 10.0  # seconds a lease outlasts two of the slowest sends


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port such as 127.0.0.1:8787, got '{value}'")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def _declared(top: Mapping[str, object], key: str) -> set[str]:
    """The names under a top-level mapping, right or wrong: a name that is there but broken
    is reported once, where it is, not again where it is used."""
    node = top.get(key)
    return {str(k) for k in node} if isinstance(node, Mapping) else set()


def _check_fallbacks(
    destinations: Mapping[str, Destination], dnode: YMap | None, problems: Problems
) -> None:
    """Each `fallback:` names another destination, and following them never comes back."""
    for name, dest in destinations.items():
        if dest.fallback is None or dnode is None:
            continue
        node = dnode[name]
        where = f"{node.file}", node.line_of("fallback")
        if dest.fallback not in dnode:
            problems.add(
                *where,
                f"destination '{name}': fallback: no destination named '{dest.fallback}'"
                + did_you_mean(dest.fallback, set(dnode) - {name}),
            )
            continue
        seen = [name]
        step: str | None = dest.fallback
        while step is not None and step in destinations and step not in seen:
            seen.append(step)
            step = destinations[step].fallback
        if step == name:
            problems.add(
                *where,
                f"destination '{name}': fallback: a cycle ({' -> '.join([*seen, name])});"
                " a delivery falls back one level only, so one of them must go",
            )


def resolve_path(base_dir: str, path: str) -> str:
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Load, check and compile the config and its rules; raise ConfigError listing every problem."""
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
    check_keys(top, TOP.names, "the config", problems)
    r = Reader(top, "config", problems)
    base_dir = os.path.dirname(path)

    listen_host, listen_port = "127.0.0.1", 8787
    listen = r.string("listen")
    if listen is not None:
        try:
            listen_host, listen_port = parse_listen(listen)
        except ValueError as e:
            r.fail("listen", str(e))
    database = r.string("database", "/var/lib/relayhook/relayhook.db") or ""
    if not database.startswith(_SERVER_URLS):
        database = resolve_path(base_dir, database)
    rules_dir = resolve_path(base_dir, r.string("rules", "/etc/relayhook/rules") or "")

    retry = (
        read_retry(top["retry"], top.file, top.line_of("retry"), "retry", RetryPolicy(), problems)
        if "retry" in top
        else RetryPolicy()
    )
    admin_token = r.string("admin_token")
    if admin_token is not None and len(admin_token) < 16:
        r.fail("admin_token", "must be at least 16 characters")
    read_timeout = r.duration("read_timeout", 10.0)
    shutdown_timeout = r.duration("shutdown_timeout", 10.0)
    render_timeout = r.duration("render_timeout", 2.0)
    if "render_timeout" in top and render_timeout <= 0:
        r.fail("render_timeout", "must be longer than 0s")
        render_timeout = 2.0
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
            check_keys(cnode, CONCURRENCY.names, "concurrency", problems)
            cr = Reader(cnode, "concurrency", problems)
            concurrency = Concurrency(
                total=cr.integer("total", concurrency.total, minimum=1),
                per_destination=cr.integer(
                    "per_destination", concurrency.per_destination, minimum=1
                ),
            )

    quiet_hours = read_quiet_hours(top, problems)
    sources: dict[str, Source] = {}
    snode = expect_map(top.get("sources"), path, top.line_of("sources"), "sources", problems)
    for name, node in (snode or {}).items():
        src = read_source(str(name), node, path, snode.line_of(name) if snode else 0, problems)
        if src is not None:
            sources[str(name)] = src

    destinations: dict[str, Destination] = {}
    dnode = expect_map(
        top.get("destinations"), path, top.line_of("destinations"), "destinations", problems
    )
    for name, node in (dnode or {}).items():
        dest = read_destination(
            str(name),
            node,
            path,
            dnode.line_of(name) if dnode else 0,
            retry,
            concurrency,
            problems,
            quiet_names=_declared(top, "quiet_hours"),
        )
        if dest is not None:
            destinations[str(name)] = dest

    _check_fallbacks(destinations, dnode, problems)
    lease = r.duration("lease", 60.0)
    if database.startswith(_SERVER_URLS) and destinations:
        longest = max(d.timeout for d in destinations.values())
        if lease < 2 * longest + _LEASE_MARGIN:
            r.fail(
                "lease",
                f"{lease:g}s is too short: a send may take {longest:g}s (the longest destination"
                f" timeout), so a lease must be at least twice that plus {_LEASE_MARGIN:g}s"
                f" ({2 * longest + _LEASE_MARGIN:g}s), or two instances could send one delivery",
            )
    orphan_after = r.duration("orphan_after", 7 * 86400.0)
    if orphan_after <= 0:
        r.fail("orphan_after", "must be longer than 0s")

    rules = load_rules(
        rules_dir,
        sources,
        destinations,
        problems,
        declared_sources=set(snode or ()),
        declared_destinations=set(dnode or ()),
        quiet_names=_declared(top, "quiet_hours"),
    )

    secrets: set[str] = {admin_token} if admin_token else set()
    if database.startswith(_SERVER_URLS):
        secrets.update(url_secrets(database))
    for src in sources.values():
        if src.auth is not None:
            secrets.update(src.auth.secrets)
    for dest in destinations.values():
        secrets.update(url_secrets(dest.url))
        if isinstance(dest, WebhookDestination):
            secrets.update(
                v for k, v in dest.headers if k.lower() in {"authorization", "x-api-key"}
            )
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
        render_timeout=render_timeout,
        quiet_hours=quiet_hours,
        orphan_after=orphan_after,
        lease=lease,
        warnings=tuple(Problem(p.file, p.line, redactor(p.message)) for p in problems.warnings),
    )
