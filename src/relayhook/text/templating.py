"""The sandboxed Jinja environment: filters for this domain, compiled at load time.

Templates come from operators; event payloads are data and are never rendered as
templates. The sandbox is immutable so a template cannot change the event it reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from relayhook.text.units import format_duration

__all__ = [
    "CONTEXT_NAMES",
    "DIGEST_NAMES",
    "ESCAPE",
    "Expression",
    "TemplateError",
    "compile_expression",
    "compile_template",
    "describe_error",
    "undeclared_names",
    "uses_safe",
]

# The context key under which the renderer hands message templates their escaper.
ESCAPE = "__relayhook_escape"
# Names a digest template sees (a group's messages, folded into one).
DIGEST_NAMES = frozenset(
    {
        "messages",
        "count",
        "omitted",
        "key",
        "rule",
        "destination",
        "first_at",
        "last_at",
        "reason",
    }
)
# Names every template sees; `item` is added for rules with for_each.
CONTEXT_NAMES = frozenset({"event", "payload", "event_type", "source", "received_at", "headers"})
# Bounds for operations a hostile or careless template could blow up with.
_MAX_REPEAT = 100_000
_MAX_POWER = 10_000

TemplateError = jinja2.TemplateError
Expression = Callable[..., Any]


def isoparse(value: Any) -> datetime:
    """An aware datetime from an ISO-8601 string (a trailing Z is UTC); naive input is UTC."""
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}") from None


def localtime(value: Any, tz: str = "Europe/London") -> datetime:
    """The timestamp in the given IANA time zone."""
    return isoparse(value).astimezone(_zone(tz))


def datetimeformat(value: Any, fmt: str = "%Y-%m-%d %H:%M %Z", tz: str | None = None) -> str:
    """Format a timestamp (ISO string or datetime), converted to tz first when given."""
    moment = isoparse(value)
    if tz is not None:
        moment = moment.astimezone(_zone(tz))
    return moment.strftime(fmt)


def duration(value: Any, end: Any = None) -> str:
    """Humanized span: `start | duration(end)`, or a timedelta / number of seconds alone."""
    if end is not None:
        seconds = (isoparse(end) - isoparse(value)).total_seconds()
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        seconds = float(value)
    return format_duration(seconds)


def tojson(value: Any, indent: int | None = None) -> str:
    """JSON text of a value: for webhook bodies and for showing data in messages."""
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > _MAX_POWER:
            raise jinja2.exceptions.SecurityError("exponent too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > _MAX_REPEAT
                ):
                    raise jinja2.exceptions.SecurityError("repeated sequence too long")
        return super().call_binop(context, operator, left, right)


@jinja2.pass_context
def _escape_data(context: jinja2.runtime.Context, value: Any) -> Any:
    """Every `{{ ... }}` of a message template passes here; the template's own text not.

    The renderer puts the escaper for the message's format and destination in the
    context (ESCAPE); a value marked safe (`| safe`) and an undefined one (an error to
    come) pass as they are.
    """
    escape = context.get(ESCAPE)
    if escape is None or isinstance(value, Markup | jinja2.Undefined):
        return value
    return escape(str(value))


def _as_data(value: Any) -> str:
    return str(value)


def _environment(autoescape: bool, messages: bool = True) -> jinja2.Environment:
    env = _Sandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_escape_data if messages else None,
    )
    env.filters.update(
        isoparse=isoparse,
        localtime=localtime,
        datetimeformat=datetimeformat,
        duration=duration,
        tojson=tojson,
    )
    env.tests["list"] = _is_list
    if messages and not autoescape:
        # Jinja's HTML escape returns Markup, which the finalize lets through untouched:
        # in a text or Markdown message `| e` would have undone the escaping for chat.
        # Here it means what every value gets anyway: escaping for the destination.
        for name in ("e", "escape", "forceescape"):
            env.filters[name] = _as_data
    return env


_TEXT = _environment(autoescape=False)
_HTML = _environment(autoescape=True)
_PLAIN = _environment(autoescape=False, messages=False)


def compile_template(source: str, *, html: bool = False, plain: bool = False) -> jinja2.Template:
    """Compile once at load; raises jinja2.TemplateSyntaxError with a line number.

    A message template escapes the data it interpolates for where the message goes
    (text.escape; HTML by autoescape); a plain one (a webhook's JSON body, a severity)
    leaves data as it is.
    """
    return (_PLAIN if plain else _HTML if html else _TEXT).from_string(source)


def compile_expression(source: str) -> Expression:
    """Compile a `when` / `for_each` expression; raises jinja2.TemplateSyntaxError."""
    return _PLAIN.compile_expression(source, undefined_to_none=False)


def uses_safe(source: str) -> bool:
    """Whether a template lets data through unescaped with `| safe`."""
    return any(f.name == "safe" for f in _TEXT.parse(source).find_all(jinja2.nodes.Filter))


def undeclared_names(source: str, *, expression: bool = False) -> set[str]:
    """Names a template or expression reads that are neither set in it nor globals."""
    text = "{{ " + source + " }}" if expression else source
    return set(jinja2.meta.find_undeclared_variables(_TEXT.parse(text))) - set(_TEXT.globals)


def describe_error(exc: BaseException) -> str:
    """One line naming what went wrong while rendering, never a traceback."""
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return f"sandbox: {str(exc).rstrip('.')}"
    if isinstance(exc, jinja2.UndefinedError):
        text = str(exc)
        if "unsafe" in text:
            return f"sandbox: {text.rstrip('.')}"
        return f"undefined: {text}"
    if isinstance(exc, jinja2.TemplateError):
        return f"template error: {exc}"
    return f"{type(exc).__name__}: {exc}"
