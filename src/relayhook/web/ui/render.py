"""The pages' own Jinja environment: files under web/templates, autoescaping always on,
apart from the sandboxed one that renders notifications."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2

from relayhook.text.units import format_duration

__all__ = ["CSP", "STATIC", "page"]

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static"
# Only the daemon's own script and style; no inline code, no other origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _qs(query: dict[str, Any], **extra: Any) -> str:
    """A query string of the non-empty values (a list repeats its key), encoded."""
    pairs: list[tuple[str, Any]] = []
    for key, value in {**query, **extra}.items():
        for one in value if isinstance(value, list | tuple) else [value]:
            if one not in (None, ""):
                pairs.append((key, one))
    return urlencode(pairs)


def _pretty(text: Any) -> str:
    """Stored JSON laid out for reading (as text: the template escapes it)."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(text)


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["when"] = _when
_env.filters["pretty"] = _pretty
_env.filters["duration"] = format_duration
_env.filters["qs"] = _qs


def page(name: str, **context: Any) -> str:
    return _env.get_template(name).render(**context)
