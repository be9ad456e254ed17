"""Reading `destinations:` and retry policies: an apprise URL or a webhook, each checked."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import apprise

from relayhook.config.keys import CIRCUIT, DEST_APPRISE, DEST_WEBHOOK, RETRY
from relayhook.config.quiet import read_quiet_name
from relayhook.config.reader import Reader, check_keys, expect_map
from relayhook.config.settings import (
    FORMATS,
    AppriseDestination,
    CircuitPolicy,
    Concurrency,
    Destination,
    RetryPolicy,
    WebhookDestination,
)
from relayhook.config.yamlnodes import Problems, YMap
from relayhook.errors import kind_of
from relayhook.ops import console  # noqa: F401 - registers console:// before URLs are checked
from relayhook.ops.redact import redact_url
from relayhook.policy.signatures import check_standard_secret
from relayhook.text.escape import Family, family_of
from relayhook.text.templating import TemplateError, compile_template

__all__ = ["read_destination", "read_retry"]

_MAX_PROCESSES = 64


def read_retry(
    node: Any, file: str, line: int, where: str, base: RetryPolicy, problems: Problems
) -> RetryPolicy:
    retry = expect_map(node, file, line, where, problems)
    if retry is None:
        return base
    check_keys(retry, RETRY.names, where, problems)
    r = Reader(retry, where, problems)
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


def _apprise_family(url: str) -> Family | None:
    """The family of the service apprise would send url to; None when apprise cannot."""
    # Apprise reports unparseable URLs through its logger; our caller reports them instead.
    logger = logging.getLogger("apprise")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        plugin = apprise.Apprise.instantiate(url)
    finally:
        logger.setLevel(previous)
    if plugin is None:
        return None
    # By the plugin's own schemas: an https://hooks.slack.com/... URL is Slack too.
    schemas: list[str] = []
    for attr in ("secure_protocol", "protocol"):
        value = getattr(plugin, attr, None)
        schemas.extend([value] if isinstance(value, str) else list(value or ()))
    families = [family_of(schema) for schema in schemas]
    return next((f for f in families if f is not Family.OTHER), Family.OTHER)


def _read_circuit(dest: YMap, where: str, problems: Problems) -> CircuitPolicy | None:
    """`circuit: off`, or {failures, probe} over the defaults (on when absent)."""
    if "circuit" not in dest:
        policy = CircuitPolicy()
    else:
        value = dest["circuit"]
        if value is False or value == "off":  # YAML 1.1 reads a bare off as false
            return None
        label = f"{where}: circuit"
        node = expect_map(value, dest.file, dest.line_of("circuit"), label, problems)
        if node is None:
            return None
        check_keys(node, CIRCUIT.names, label, problems)
        r = Reader(node, label, problems)
        default = CircuitPolicy()
        policy = CircuitPolicy(
            failures=r.integer("failures", default.failures, minimum=1),
            probe=r.duration("probe", default.probe),
        )
        if policy.probe <= 0:
            r.fail("probe", "must be longer than 0s")
            return None
    return policy


def read_destination(
    name: str,
    node: Any,
    file: str,
    line: int,
    defaults: RetryPolicy,
    concurrency: Concurrency,
    problems: Problems,
    quiet_names: Collection[str] = (),
) -> Destination | None:
    where = f"destination '{name}'"
    dest = expect_map(node, file, line, where, problems)
    if dest is None:
        return None
    r = Reader(dest, where, problems)
    retry = (
        read_retry(
            dest["retry"], dest.file, dest.line_of("retry"), f"{where}: retry", defaults, problems
        )
        if "retry" in dest
        else defaults
    )
    quiet = read_quiet_name(dest, where, quiet_names, problems)
    circuit = _read_circuit(dest, where, problems)
    fallback = r.string("fallback")
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
        check_keys(dest, DEST_WEBHOOK.names, where, problems)
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
            for k, v in headers_node.items():
                if not isinstance(v, str | int | float):  # a bool is an int too
                    r.fail("headers", f"{k}: expected a string, got {kind_of(v)}")
        else:
            r.fail("headers", f"expected a mapping, got {kind_of(headers_node)}")
        body_src = r.string("body")
        body = None
        if body_src is not None:
            try:
                body = compile_template(body_src, plain=True)
            except TemplateError as e:
                problems.add(
                    dest.file,
                    dest.value_line("body") + getattr(e, "lineno", 1) - 1,
                    f"{where}: body: template syntax error: {getattr(e, 'message', e)}",
                )
        if url is None:
            return None
        return WebhookDestination(
            name=name,
            url=url,
            retry=retry,
            timeout=timeout,
            concurrency=conc,
            method=method,
            headers=tuple(headers),
            body=body,
            min_interval=interval,
            sign=sign,
            quiet=quiet,
            circuit=circuit,
            fallback=fallback,
        )
    check_keys(dest, DEST_APPRISE.names, where, problems)
    url = r.string("url", required=True)
    fmt = r.choice("format", FORMATS)
    processes = r.integer("processes", 0, minimum=0, maximum=_MAX_PROCESSES)
    if url is None:
        return None
    if not url:
        r.fail("url", "is empty")
        return None
    family = _apprise_family(url)
    if family is None:
        r.fail("url", f"apprise cannot use URL '{redact_url(url)}'")
        return None
    return AppriseDestination(
        name=name,
        url=url,
        retry=retry,
        timeout=timeout,
        concurrency=conc,
        format=fmt,  # type: ignore[arg-type]
        min_interval=interval,
        processes=processes,
        family=family,
        quiet=quiet,
        circuit=circuit,
        fallback=fallback,
    )
