"""Reading `sources:`: where each event's type and key are, and who may send it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relayhook.config.keys import HMAC, SOURCE
from relayhook.config.reader import Reader, check_keys, did_you_mean, expect_map
from relayhook.config.settings import FieldRef, Source
from relayhook.config.yamlnodes import Problems, YMap
from relayhook.policy.networks import Network, parse_networks
from relayhook.policy.signatures import (
    AUTH_SCHEMES,
    GithubAuth,
    HmacAuth,
    StandardWebhooksAuth,
    StripeAuth,
    TokenAuth,
    Verifier,
    check_standard_secret,
)

__all__ = ["read_source"]


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
    check_keys(hnode, HMAC.names, what, problems)
    r = Reader(hnode, what, problems)
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


def read_source(name: str, node: Any, file: str, line: int, problems: Problems) -> Source | None:
    where = f"source '{name}'"
    src = expect_map(node, file, line, where, problems)
    if src is None:
        return None
    check_keys(src, SOURCE.names, where, problems)
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
    r = Reader(src, where, problems)
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
