"""Durations (500ms, 5s, 10m, 1h, 1h30m) and sizes (512KiB, 1MiB) as operators write them."""

from __future__ import annotations

import re
import time

__all__ = [
    "DURATION_PATTERN",
    "SIZE_PATTERN",
    "format_duration",
    "parse_duration",
    "parse_size",
    "since",
]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
# What a duration or a size may look like as text; the JSON Schemas carry the same.
_NUMBER = r"[0-9]+(\.[0-9]+)?"
DURATION_PATTERN = rf"^\s*({_NUMBER}|({_NUMBER}\s*(ms|s|m|h|d|w)\s*)+)\s*$"
SIZE_PATTERN = rf"^\s*{_NUMBER}\s*([Bb]|[KkMmGg][Ii]?[Bb])?\s*$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_SIZE_TEXT_RE = re.compile(SIZE_PATTERN)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_duration(value: object) -> float:
    """Seconds from '500ms', '5s', '1h30m' or a plain number of seconds; ValueError if not."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 5s or 10m, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value!r}")
        return float(value)
    text = str(value).strip()
    if not text:
        raise ValueError("expected a duration such as 5s or 10m, got an empty value")
    if not _DURATION_RE.fullmatch(text):
        raise ValueError(f"expected a duration such as 500ms, 5s, 10m, 1h or 1h30m, got {value!r}")
    parts = list(_DURATION_PART.finditer(text))
    if not parts:
        return float(text)
    return sum(float(m.group(1)) * _DURATION_UNITS[m.group(2)] for m in parts)


def parse_size(value: object) -> int:
    """Bytes from '1MiB', '512KiB', '1MB' or a plain number; ValueError if not."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 1MiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value!r}")
        return value
    m = _SIZE_RE.fullmatch(str(value).strip().lower())
    if not m or m.group(2) not in _SIZE_UNITS or not _SIZE_TEXT_RE.fullmatch(str(value)):
        raise ValueError(f"expected a size such as 512KiB or 1MiB, got {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def format_duration(seconds: float) -> str:
    """'1 d 2 h', '23 h 30 min', '45 s': the two largest units, for people."""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{int(seconds * 1000)} ms"
    whole = round(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        n, whole = divmod(whole, size)
        if n:
            parts.append(f"{n} {unit}")
    return " ".join(parts[:2]) if parts else "0 s"


def since(value: object, now: float | None = None) -> float:
    """The Unix time `value` (a duration such as 24h) before now; ValueError if not one."""
    return (time.time() if now is None else now) - parse_duration(value)
