"""Reading rule files: which events a rule takes, and the templates it renders, compiled."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2

from relayhook.config.grouping import read_digest, read_group, read_throttle
from relayhook.config.keys import RULE, RULE_FILE
from relayhook.config.quiet import read_quiet_name
from relayhook.config.reader import check_keys, did_you_mean, expect_map
from relayhook.config.settings import FORMATS, SEVERITIES, Check, Destination, Rule, Source
from relayhook.config.templates import (
    compile_body,
    read_template_file,
    report_unknown_names,
    syntax_message,
)
from relayhook.config.yamlnodes import Problems, YList, YMap, load_yaml
from relayhook.text.templating import (
    CONTEXT_NAMES,
    compile_expression,
    compile_template,
    undeclared_names,
)

__all__ = ["load_rules"]

_EVENT_PATTERN = re.compile(r"[A-Za-z0-9_.:/*?!\[\]-]+")


def _check_glob(pattern: str) -> str | None:
    """Why a glob is bad, or None."""
    if not pattern:
        return "is empty"
    if not _EVENT_PATTERN.fullmatch(pattern):
        return f"'{pattern}' has characters an event type cannot have"
    depth = 0
    for ch in pattern:
        depth += ch == "["
        depth -= ch == "]"
        if depth not in (0, 1):
            return f"'{pattern}' has unbalanced brackets"
    if depth:
        return f"'{pattern}' has an unclosed '['"
    return None


def _compile_check(
    text: Any, node: YMap | YList, key: Any, label: str, allowed: set[str], problems: Problems
) -> Check | None:
    line = node.value_line(key) if isinstance(node, YMap) else node.line_of(key)
    if not isinstance(text, str) or not text.strip():
        problems.add(
            node.file, line, f"{label}: expected a Jinja expression as a string, got {text!r}"
        )
        return None
    try:
        fn = compile_expression(text)
    except jinja2.TemplateSyntaxError as e:
        problems.add(node.file, line, f"{label}: {syntax_message(e)}")
        return None
    report_unknown_names(
        undeclared_names(text, expression=True), allowed, node.file, line, label, problems
    )
    return Check(text=text.strip(), line=line, fn=fn)


def _read_severity(
    rnode: YMap, where: str, allowed: set[str], problems: Problems
) -> jinja2.Template | None:
    """A fixed severity checked now; a template (by payload) checked when it renders."""
    value = rnode.get("severity", "info")
    line = rnode.line_of("severity") if "severity" in rnode else rnode.line
    if not isinstance(value, str):
        problems.add(rnode.file, line, f"{where}: severity must be one of {', '.join(SEVERITIES)}")
        return None
    if "{{" not in value and "{%" not in value and value.strip() not in SEVERITIES:
        problems.add(
            rnode.file,
            line,
            f"{where}: severity must be one of {', '.join(SEVERITIES)} (or a template"
            f" giving one), got '{value}'{did_you_mean(value, SEVERITIES)}",
        )
        return None
    try:
        template = compile_template(value, plain=True)
    except jinja2.TemplateSyntaxError as e:
        problems.add(rnode.file, line, f"{where}: severity: template {syntax_message(e)}")
        return None
    report_unknown_names(
        undeclared_names(value), allowed, rnode.file, line, f"{where}: severity", problems
    )
    return template


@dataclass(frozen=True, slots=True)
class _Quiet:
    """The quiet_hours names, and the destinations that have quiet hours."""

    names: Collection[str]
    destinations: set[str]


def _load_rule(
    node: Any,
    file_node: YList,
    index: int,
    event: str,
    source: str | None,
    templates_dir: str,
    destinations: set[str],
    seen: dict[str, str],
    problems: Problems,
    quiet: _Quiet,
) -> Rule | None:
    rnode = expect_map(node, file_node.file, file_node.line_of(index), "a rule", problems)
    if rnode is None:
        return None
    file = rnode.file
    name = rnode.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.add(file, rnode.line, "rule has no name (every rule needs a unique name)")
        name = f"#{index + 1}"
    where = f"rule '{name}'"
    check_keys(rnode, RULE.names, where, problems)
    if name in seen:
        problems.add(
            file,
            rnode.line_of("name"),
            f"duplicate rule name '{name}' (first defined at {seen[name]})",
        )
    else:
        seen[name] = f"{file}:{rnode.line_of('name')}"

    allowed = set(CONTEXT_NAMES)
    for_each = None
    if "for_each" in rnode:
        for_each = _compile_check(
            rnode["for_each"], rnode, "for_each", f"{where}: for_each", allowed, problems
        )
        allowed.update(("item", "item_number", "item_count"))

    when_node = rnode.get("when")
    when: list[Check] = []
    if isinstance(when_node, YList):
        for i, text in enumerate(when_node):
            check = _compile_check(text, when_node, i, f"{where}: when", allowed, problems)
            if check:
                when.append(check)
    elif when_node is not None:
        check = _compile_check(when_node, rnode, "when", f"{where}: when", allowed, problems)
        if check:
            when.append(check)

    to_node = rnode.get("to")
    to: list[str] = []
    if isinstance(to_node, str):
        to = [to_node]
    elif isinstance(to_node, list) and to_node and all(isinstance(t, str) for t in to_node):
        to = list(to_node)
    else:
        problems.add(
            file,
            rnode.line_of("to") if "to" in rnode else rnode.line,
            f"{where}: 'to' must name one destination or a list of them",
        )
    for i, dest in enumerate(to):
        if dest not in destinations:
            line = to_node.line_of(i) if isinstance(to_node, YList) else rnode.line_of("to")
            problems.add(
                file,
                line,
                f"{where}: unknown destination '{dest}'{did_you_mean(dest, destinations)}",
            )

    body_template = rnode.get("body_template")
    fmt = rnode.get("format")
    if fmt is None:
        fmt = (
            "html"
            if str(body_template).endswith((".html.j2", ".html"))
            else ("markdown" if str(body_template).endswith((".md.j2", ".md")) else "text")
        )
    elif fmt not in FORMATS:
        problems.add(
            file,
            rnode.line_of("format"),
            f"{where}: format must be one of {', '.join(FORMATS)}, got '{fmt}'"
            + did_you_mean(fmt, FORMATS),
        )
        fmt = "text"
    html = fmt == "html"

    title = None
    if "title" in rnode:
        if isinstance(rnode["title"], str):
            title = compile_body(
                rnode["title"],
                file,
                rnode.value_line("title"),
                f"{where}: title",
                False,
                allowed,
                problems,
            )
        else:
            problems.add(file, rnode.line_of("title"), f"{where}: title must be a string")

    body = None
    if ("body" in rnode) == (body_template is not None):
        problems.add(file, rnode.line, f"{where}: give exactly one of 'body' or 'body_template'")
    elif "body" in rnode:
        if isinstance(rnode["body"], str):
            body = compile_body(
                rnode["body"],
                file,
                rnode.value_line("body"),
                f"{where}: body",
                html,
                allowed,
                problems,
            )
        else:
            problems.add(file, rnode.line_of("body"), f"{where}: body must be a string")
    else:
        found = read_template_file(templates_dir, rnode, "body_template", where, problems)
        if found is not None:
            text, tpath = found
            body = compile_body(text, tpath, 1, f"{where}: body_template", html, allowed, problems)

    stop = rnode.get("stop", False)
    if not isinstance(stop, bool):
        problems.add(file, rnode.line_of("stop"), f"{where}: stop must be true or false")
        stop = False
    severity = _read_severity(rnode, where, allowed, problems)
    group = read_group(rnode, where, allowed, problems)
    throttle = read_throttle(rnode, where, allowed, problems)
    quiet_name = read_quiet_name(rnode, where, quiet.names, problems)
    digested = (
        "group" in rnode
        or "throttle" in rnode
        or quiet_name is not None
        or not quiet.destinations.isdisjoint(to)
    )
    digest_title, digest_body = read_digest(rnode, where, templates_dir, html, digested, problems)
    urgent = rnode.get("urgent", False)
    if not isinstance(urgent, bool):
        problems.add(file, rnode.line_of("urgent"), f"{where}: urgent must be true or false")
        urgent = False
    if urgent and quiet_name is not None:
        problems.add(
            file,
            rnode.line_of("urgent"),
            f"{where}: urgent rules are never held by quiet hours; drop quiet or urgent",
        )
    if body is None or severity is None or (title is None and "title" in rnode):
        return None
    return Rule(
        name=name,
        file=file,
        line=rnode.line,
        event=event,
        source=source,
        when=tuple(when),
        for_each=for_each,
        to=tuple(to),
        title=title,
        body=body,
        format=fmt,
        stop=stop,
        severity=severity,
        group=group,
        throttle=throttle,
        digest_title=digest_title,
        digest_body=digest_body,
        quiet=quiet_name,
        urgent=urgent,
    )


def load_rules(
    rules_dir: str,
    sources: Mapping[str, Source],
    destinations: Mapping[str, Destination],
    problems: Problems,
    *,
    declared_sources: set[str] | None = None,
    declared_destinations: set[str] | None = None,
    quiet_names: Collection[str] = (),
) -> list[Rule]:
    """Every rule from rules_dir/*.yaml, files in name order, rules in file order."""
    known_sources = declared_sources if declared_sources is not None else set(sources)
    known_dests = declared_destinations if declared_destinations is not None else set(destinations)
    if not os.path.isdir(rules_dir):
        problems.add(rules_dir, 0, "rules folder not found")
        return []
    files = sorted(
        glob.glob(os.path.join(rules_dir, "*.yaml")) + glob.glob(os.path.join(rules_dir, "*.yml"))
    )
    templates_dir = os.path.join(rules_dir, "templates")
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for path in files:
        doc = load_yaml(path, problems)
        if doc is None:
            continue
        fnode = expect_map(doc, path, 1, "a rule file", problems)
        if fnode is None:
            continue
        check_keys(fnode, RULE_FILE.names, "a rule file", problems)
        event = fnode.get("event")
        if not isinstance(event, str):
            problems.add(
                path,
                fnode.line_of("event") if "event" in fnode else fnode.line,
                "'event' must name an event type or a glob such as meter_data.*",
            )
            continue
        bad = _check_glob(event)
        if bad:
            problems.add(path, fnode.line_of("event"), f"event: bad glob: {bad}")
            continue
        source = fnode.get("source")
        if source is not None and (not isinstance(source, str) or source not in known_sources):
            problems.add(
                path,
                fnode.line_of("source"),
                f"unknown source '{source}'{did_you_mean(source, known_sources)}",
            )
        rule_list = fnode.get("rules")
        if not isinstance(rule_list, YList):
            problems.add(
                path,
                fnode.line_of("rules") if "rules" in fnode else fnode.line,
                "'rules' must be a list of rules",
            )
            continue
        for i, node in enumerate(rule_list):
            rule = _load_rule(
                node,
                rule_list,
                i,
                event,
                source,
                templates_dir,
                known_dests,
                seen,
                problems,
                _Quiet(quiet_names, {d.name for d in destinations.values() if d.quiet is not None}),
            )
            if rule is not None:
                rules.append(rule)
    return rules
