"""Templates in rule files: compiled at load, their names checked, files read safely."""

from __future__ import annotations

import os

import jinja2

from relayhook.config.reader import did_you_mean
from relayhook.config.yamlnodes import Problems, YMap
from relayhook.text.templating import compile_template, undeclared_names, uses_safe

__all__ = ["compile_body", "read_template_file", "report_unknown_names", "syntax_message"]


def syntax_message(e: jinja2.TemplateSyntaxError) -> str:
    return f"syntax error: {e.message}"


def report_unknown_names(
    names: set[str], allowed: set[str], file: str, line: int, label: str, problems: Problems
) -> None:
    for name in sorted(names - allowed):
        hint = did_you_mean(name, allowed)
        problems.add(
            file,
            line,
            f"{label}: '{name}' is undefined{hint} (available: {', '.join(sorted(allowed))})",
        )


def compile_body(
    text: str, file: str, line: int, label: str, html: bool, allowed: set[str], problems: Problems
) -> jinja2.Template | None:
    try:
        template = compile_template(text, html=html)
    except jinja2.TemplateSyntaxError as e:
        problems.add(file, line + (e.lineno or 1) - 1, f"{label}: template {syntax_message(e)}")
        return None
    report_unknown_names(undeclared_names(text), allowed, file, line, label, problems)
    if uses_safe(text):
        problems.warn(
            file,
            line,
            f"{label}: '| safe' lets event data through unescaped: it can mention"
            " @channel or plant links in chat; keep it for values you trust",
        )
    return template


def read_template_file(
    templates_dir: str, node: YMap, key: str, where: str, problems: Problems
) -> tuple[str, str] | None:
    """(text, path) of the file node[key] names under templates_dir; None after a problem."""
    path = os.path.normpath(os.path.join(templates_dir, str(node[key])))
    if not path.startswith(os.path.normpath(templates_dir) + os.sep):
        problems.add(
            node.file, node.line_of(key), f"{where}: {key} must name a file under {templates_dir}"
        )
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except (OSError, UnicodeDecodeError) as e:
        why = str(getattr(e, "strerror", None) or e)
        problems.add(node.file, node.line_of(key), f"{where}: {key}: cannot read {path}: {why}")
        return None
