"""Reading a rule's `group:` and its digest templates (`digest_title`, `digest_body` or
`digest_template`), checked against the names a digest sees."""

from __future__ import annotations

import jinja2

from relayhook.config.keys import GROUP, THROTTLE
from relayhook.config.reader import Reader, check_keys, expect_map
from relayhook.config.settings import GroupPolicy, ThrottlePolicy
from relayhook.config.templates import (
    compile_body,
    read_template_file,
    report_unknown_names,
    syntax_message,
)
from relayhook.config.yamlnodes import Problems, YMap
from relayhook.text.templating import DIGEST_NAMES, compile_template, undeclared_names

__all__ = ["DIGEST_KEYS", "read_digest", "read_group", "read_throttle"]

DIGEST_KEYS = ("digest_title", "digest_body", "digest_template")


def read_group(
    rnode: YMap, where: str, allowed: set[str], problems: Problems
) -> GroupPolicy | None:
    """The rule's group settings, or None when it has none (or they are wrong)."""
    found = _section(rnode, "group", GROUP.names, where, problems)
    if found is None:
        return None
    node, r = found
    key = _key(r, node, allowed, problems)
    wait = r.duration("wait", 30.0)
    interval = r.duration("interval", 0.0) or None
    most = r.integer("max", 0, minimum=1) if "max" in node else None
    return GroupPolicy(key=key, wait=wait, interval=interval, max=most)


def read_throttle(
    rnode: YMap, where: str, allowed: set[str], problems: Problems
) -> ThrottlePolicy | None:
    """The rule's throttle, or None when it has none (or it is wrong)."""
    found = _section(rnode, "throttle", THROTTLE.names, where, problems)
    if found is None:
        return None
    node, r = found
    for required in ("limit", "per"):
        if required not in node:
            problems.add(node.file, node.line, f"{r.where}: missing required key '{required}'")
            return None
    key = _key(r, node, allowed, problems)
    limit = r.integer("limit", 1, minimum=1)
    per = r.duration("per", 0.0)
    if per <= 0:
        r.fail("per", "must be longer than 0s")
        return None
    return ThrottlePolicy(key=key, limit=limit, per=per)


def _section(
    rnode: YMap, name: str, keys: set[str], where: str, problems: Problems
) -> tuple[YMap, Reader] | None:
    """The rule's mapping under name with a reader for it; None when absent or wrong."""
    if name not in rnode:
        return None
    label = f"{where}: {name}"
    node = expect_map(rnode[name], rnode.file, rnode.line_of(name), label, problems)
    if node is None:
        return None
    check_keys(node, keys, label, problems)
    return node, Reader(node, label, problems)


def _key(r: Reader, node: YMap, allowed: set[str], problems: Problems) -> jinja2.Template | None:
    text = r.string("key")
    if text is None:
        return None
    try:
        key = compile_template(text, plain=True)
    except jinja2.TemplateSyntaxError as e:
        r.fail("key", f"template {syntax_message(e)}")
        return None
    report_unknown_names(
        undeclared_names(text), allowed, node.file, node.line_of("key"), r.where, problems
    )
    return key


def read_digest(
    rnode: YMap,
    where: str,
    templates_dir: str,
    html: bool,
    grouped: bool,
    problems: Problems,
) -> tuple[jinja2.Template | None, jinja2.Template | None]:
    """(digest title, digest body), each None for the default."""
    given = [k for k in DIGEST_KEYS if k in rnode]
    if given and not grouped:
        problems.add(
            rnode.file,
            rnode.line_of(given[0]),
            f"{where}: {given[0]} is for digests: give the rule a group, a throttle or quiet hours",
        )
        return None, None
    names = set(DIGEST_NAMES)
    title = None
    if "digest_title" in rnode:
        title = _template(rnode, "digest_title", where, False, names, problems)
    if "digest_body" in rnode and "digest_template" in rnode:
        problems.add(
            rnode.file, rnode.line, f"{where}: give digest_body or digest_template, not both"
        )
        return title, None
    if "digest_body" in rnode:
        return title, _template(rnode, "digest_body", where, html, names, problems)
    if "digest_template" in rnode:
        found = read_template_file(templates_dir, rnode, "digest_template", where, problems)
        if found is not None:
            text, path = found
            label = f"{where}: digest_template"
            return title, compile_body(text, path, 1, label, html, names, problems)
    return title, None


def _template(
    rnode: YMap, key: str, where: str, html: bool, names: set[str], problems: Problems
) -> jinja2.Template | None:
    text = rnode[key]
    if not isinstance(text, str):
        problems.add(rnode.file, rnode.line_of(key), f"{where}: {key} must be a string")
        return None
    return compile_body(
        text, rnode.file, rnode.value_line(key), f"{where}: {key}", html, names, problems
    )
