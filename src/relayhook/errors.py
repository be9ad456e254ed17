"""Exceptions a user can cause, and the located problems they carry.

RelayhookError
 ├── ConfigError      one or more located problems in config, rules or templates
 └── EventError       an inbound event the relay cannot take (bad JSON, no type, ...)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigError", "EventError", "Problem", "RelayhookError"]


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
