"""Reading YAML nodes into typed values; every wrong value becomes a located problem."""

from __future__ import annotations

import difflib
from typing import Any

from relayhook.config.yamlnodes import Problems, YMap
from relayhook.errors import kind_of
from relayhook.text.units import parse_duration, parse_size

__all__ = ["Reader", "check_keys", "did_you_mean", "expect_map"]


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
    problems.add(file, line, f"{what} must be a mapping, got {kind_of(value)}")
    return None


class Reader:
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
            self.fail(key, f"expected a string, got {kind_of(value)}")
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
