"""YAML loading that remembers where every node came from, with ${VAR} expansion."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

import yaml

from relayhook.errors import Problem

__all__ = ["Problems", "YList", "YMap", "expand_env", "load_yaml"]

_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Problems(list[Problem]):
    """Collects every problem of one load, so a single run can report them all; and the
    warnings, which do not stop a config from loading."""

    def __init__(self) -> None:
        super().__init__()
        self.warnings: list[Problem] = []

    def add(self, file: str, line: int, message: str) -> None:
        self.append(Problem(file, line, message))

    def warn(self, file: str, line: int, message: str) -> None:
        self.warnings.append(Problem(file, line, message))


class YMap(dict[Any, Any]):
    """A mapping that knows its file and the line of each key."""

    file: str = "?"
    line: int = 0
    key_lines: dict[Any, int]
    value_lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)

    def value_line(self, key: Any) -> int:
        """First line of the value's text (the line after `|` for a block scalar)."""
        return self.value_lines.get(key, self.line_of(key))


class YList(list[Any]):
    """A sequence that knows its file and the line of each item."""

    file: str = "?"
    line: int = 0
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


def expand_env(text: str, env: Mapping[str, str], on_missing: Any = None) -> str:
    """Replace ${VAR} and ${VAR:-default}; $${ stays a literal ${."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            if on_missing is not None:
                on_missing(name)
            return ""
        return value

    return _ENV_RE.sub(sub, text)


def _hide_references(text: str) -> tuple[str, list[str], re.Pattern[str]]:
    """Swap each ${...} for a plain-word placeholder before parsing.

    So `auth: {token: ${TOKEN}}` parses (a bare `{` would end a flow mapping), and an
    expanded value is never parsed as YAML.
    """
    originals: list[str] = []
    nonce = secrets.token_hex(4)

    def hide(m: re.Match[str]) -> str:
        originals.append(m.group(0))
        return f"rhenv{nonce}n{len(originals) - 1}x"

    return _ENV_RE.sub(hide, text), originals, re.compile(rf"rhenv{nonce}n(\d+)x")


def _make_loader(
    file: str,
    env: Mapping[str, str] | None,
    problems: Problems,
    originals: list[str],
    placeholder: re.Pattern[str] | None,
) -> type:
    class Loader(yaml.SafeLoader):
        pass

    def construct_str(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
        value = str(loader.construct_scalar(node))
        if env is None or placeholder is None or "rhenv" not in value:
            return value
        line = node.start_mark.line + 1

        def missing(name: str) -> None:
            problems.add(file, line, f"environment variable {name} is not set")

        return placeholder.sub(
            lambda m: expand_env(originals[int(m.group(1))], env, missing), value
        )

    def construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> YMap:
        loader.flatten_mapping(node)
        result = YMap()
        result.file, result.line = file, node.start_mark.line + 1
        result.key_lines, result.value_lines = {}, {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                problems.add(file, key_node.start_mark.line + 1, "a mapping key must be a scalar")
                continue
            if key in result:
                problems.add(file, key_node.start_mark.line + 1, f"duplicate key '{key}'")
            result[key] = loader.construct_object(value_node, deep=True)
            result.key_lines[key] = key_node.start_mark.line + 1
            block = isinstance(value_node, yaml.ScalarNode) and value_node.style in ("|", ">")
            result.value_lines[key] = value_node.start_mark.line + 1 + int(block)
        return result

    def construct_list(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> YList:
        result = YList(loader.construct_object(child, deep=True) for child in node.value)
        result.file, result.line = file, node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result

    Loader.add_constructor("tag:yaml.org,2002:str", construct_str)
    Loader.add_constructor("tag:yaml.org,2002:map", construct_map)
    Loader.add_constructor("tag:yaml.org,2002:seq", construct_list)
    return Loader


def load_yaml(path: str, problems: Problems, env: Mapping[str, str] | None = None) -> Any:
    """Parse one YAML file; syntax errors become problems and the result is None.

    With env given, ${VAR} references in string scalars are expanded from it.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        problems.add(path, 0, f"cannot read file: {e.strerror or e}")
        return None
    except UnicodeDecodeError:
        problems.add(path, 0, "file is not valid UTF-8")
        return None
    originals: list[str] = []
    placeholder = None
    if env is not None:
        text, originals, placeholder = _hide_references(text)
    loader = _make_loader(path, env, problems, originals, placeholder)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        what = e.problem or "invalid YAML"
        problems.add(path, line, f"YAML syntax error: {what}")
        return None
    except yaml.YAMLError as e:
        problems.add(path, 0, f"YAML error: {e}")
        return None
