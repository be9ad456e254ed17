"""Exceptions a user can cause, and the located problems they carry.

RelayhookError
 ├── ConfigError      one or more located problems in config, rules or templates
 └── EventError       an inbound event the relay cannot take (bad JSON, no type, ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "EventError", "Problem", "RelayhookError", "kind_of"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong, at a place in a file."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.message}"
            if self.line
            else f"{self.file}: {self.message}"
        )


class RelayhookError(Exception):
    """Base of every error relayhook raises on purpose."""


class ConfigError(RelayhookError):
    """The config, a rule file or a template is wrong."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class EventError(RelayhookError):
    """The inbound event cannot be taken."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


_YAML_WORDS = {dict: "a mapping", list: "a list", tuple: "a list", str: "a string"}
_JSON_WORDS = {dict: "an object", list: "an array", str: "a string"}


def kind_of(value: Any, *, json: bool = False) -> str:
    """What kind of value this is, in a user's words: YAML's for config, JSON's for events."""
    if value is None:
        return "null" if json else "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    words = _JSON_WORDS if json else _YAML_WORDS
    for kind, word in words.items():
        if isinstance(value, kind):
            return word
    return type(value).__name__
