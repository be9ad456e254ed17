"""Escaping event data for where a message goes, so that data shows as the text it is.

Whoever can put a name into an upstream system must not be able to ping a channel or
plant a link in a trusted bot's message. Only values that templates interpolate
(`{{ ... }}`) are escaped; what the template's own text writes (a deliberate `@here`, a
link, `*bold*`) is kept, and `| safe` lets a value through on purpose.

How, per destination family and rule format (README, "Message safety"):

- Every chat family: broadcast mentions (`@channel`, `@here`, `@all`, `@everyone`) get a
  word joiner after the `@`, so they read the same and notify nobody.
- Slack (mrkdwn): `<`, `>` become entities and `[`, `]` plain brackets, so data can form
  no `<!channel>`, `<@user>` or `<url|label>`; apprise's Slack plugin escapes `&<>` in
  text itself, and turns the backslash escapes below into those entities in markdown.
- Markdown (and chat services that render Markdown whatever the format): CommonMark's
  backslash escapes for the characters that start formatting, links, images, code,
  headings, lists and quotes.
- HTML: Jinja's autoescape, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum

__all__ = [
    "Escaper",
    "Family",
    "escaper_for",
    "family_of",
    "neutralise_mentions",
    "show_controls",
]

Escaper = Callable[[str], str]


class Family(StrEnum):
    """How a destination treats the text it is given."""

    SLACK = "slack"  # mrkdwn; apprise converts Markdown to it
    CHAT = "chat"  # chat that renders Markdown and knows broadcast mentions
    EMAIL = "email"
    TERMINAL = "terminal"  # console://: shown as plain text to a person, never rendered
    OTHER = "other"  # JSON, XML, webhooks and the rest: Markdown may be rendered there


# apprise schemas by family; a schema not listed is OTHER.
_SLACK = frozenset({"slack"})
_CHAT = frozenset(
    {
        "mmost",
        "mmosts",
        "discord",
        "msteams",
        "workflow",
        "workflows",
        "rocket",
        "rockets",
        "zulip",
        "matrix",
        "matrixs",
        "tgram",
        "gchat",
        "ryver",
        "flock",
        "guilded",
        "revolt",
        "twist",
        "wxteams",
        "webex",
        "lark",
        "feishu",
        "dingtalk",
        "nctalk",
        "nctalks",
        "signal",
        "signals",
        "line",
        "kook",
        "pagertree",
        "humhub",
        "humhubs",
        "bluesky",
        "mastodon",
        "toot",
        "misskey",
    }
)
_EMAIL = frozenset(
    {"mailto", "mailtos", "ses", "sendgrid", "mailgun", "sparkpost", "smtp2go", "resend"}
)

# Every @name: broadcast words ping a channel, and a user's name pings that user.
_MENTIONS = re.compile(r"@(?=\w)")
# What a terminal acts on (escape sequences, OSC 8 links): C0 and C1 but newline and tab.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_WORD_JOINER = "\u2060"
# Inline: emphasis, code, links and images, raw HTML and autolinks, tables, strikethrough.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>|~])")
# At the start of a line: headings, quotes (handled inline), lists, setext underlines.
_MD_LINE_START = re.compile(r"^([ \t]*)([#+=-]|\d+[.)])", re.MULTILINE)
_SLACK_SPECIALS = re.compile(r"([<>\[\]])")


def family_of(schema: str) -> Family:
    """The family of an apprise schema (slack, mmost, mailtos, json, ...)."""
    schema = schema.lower()
    if schema == "console":
        return Family.TERMINAL
    if schema in _SLACK:
        return Family.SLACK
    if schema in _CHAT:
        return Family.CHAT
    if schema in _EMAIL:
        return Family.EMAIL
    return Family.OTHER


def neutralise_mentions(text: str) -> str:
    """`@channel`, `@here` and `@someone`, unable to notify: a word joiner after the `@`."""
    return _MENTIONS.sub("@" + _WORD_JOINER, text)


def show_controls(text: str) -> str:
    """Control characters as visible \\xNN, so data cannot drive the operator's terminal."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def escape_markdown(text: str) -> str:
    """CommonMark backslash escapes for whatever could start formatting or a link."""
    text = _MD_INLINE.sub(r"\\\1", text)
    return _MD_LINE_START.sub(lambda m: m.group(1) + _escape_marker(m.group(2)), text)


def _escape_marker(marker: str) -> str:
    # "1." must become "1\." (a backslash before a digit is no escape).
    return marker[:-1] + "\\" + marker[-1]


def escape_slack(text: str) -> str:
    """For apprise's Slack plugin in markdown: it turns `\\<` `\\>` into entities and
    `\\[` `\\]` into plain brackets; `&` it entity-escapes itself."""
    return _SLACK_SPECIALS.sub(r"\\\1", text)


def _chain(*steps: Escaper) -> Escaper:
    def run(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return run


_SLACK_MARKDOWN = _chain(escape_slack, neutralise_mentions)
_CHAT_TEXT = _chain(escape_markdown, neutralise_mentions)


def escaper_for(
    family: Family, fmt: str, *, sent_as: str | None = None, title: bool = False
) -> Escaper | None:
    """How to escape data in a message of format fmt to a destination of this family that
    sends as sent_as (its own `format:`, None for the service's default); None when data
    goes as it is (HTML is escaped by Jinja's autoescape).

    Titles are plain text everywhere but in chat that folds them into a Markdown body
    (Mattermost); apprise's Slack plugin escapes a title itself. Text that apprise turns
    into Markdown or HTML (a text rule to a `format: markdown` destination) it escapes on
    the way: escaping it here too would show the backslashes.
    """
    chat = family in (Family.SLACK, Family.CHAT)
    if family is Family.TERMINAL:
        return show_controls
    if family is Family.CHAT and fmt == "text" and sent_as in ("markdown", "html") and not title:
        return neutralise_mentions
    if title:
        if family is Family.CHAT:
            return _CHAT_TEXT
        return neutralise_mentions if chat else None
    if fmt == "html":
        return neutralise_mentions if chat else None
    if family is Family.SLACK:
        # In text, apprise's Slack plugin escapes & < > itself.
        return _SLACK_MARKDOWN if fmt == "markdown" else neutralise_mentions
    if family is Family.CHAT:
        return _CHAT_TEXT
    if fmt == "markdown":
        return escape_markdown
    return None
