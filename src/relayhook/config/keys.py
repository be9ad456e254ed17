"""Every key of the config file and of rule files: its name, what it takes, its default and
what it is for. The loaders take the names they allow from here, and `relayhook schema`
turns the same catalogue into JSON Schemas, so editors and `check` know the same keys.
"""

from __future__ import annotations

from relayhook.config.keytypes import (
    ByKey,
    Duration,
    Either,
    Flag,
    Key,
    ListOf,
    MapOf,
    Section,
    Size,
    Text,
    Whole,
    Words,
    anycase,
    one_or_list,
)
from relayhook.config.settings import FORMATS, SEVERITIES

__all__ = [
    "CALENDAR",
    "CIRCUIT",
    "CONCURRENCY",
    "DESTINATION",
    "DEST_APPRISE",
    "DEST_WEBHOOK",
    "GROUP",
    "HMAC",
    "RETRY",
    "RULE",
    "RULE_FILE",
    "SOURCE",
    "THROTTLE",
    "TOP",
    "WINDOW",
]

# -- the config file ----------------------------------------------------------------------

_TEXT = Text(numbers=True)
_NAME = Text()  # read as a string only
_METHODS = ("post", "put", "patch")
_CLOCK = r"^\s*[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?\s*$"
_DAY = "(" + "|".join(anycase(d) for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")) + ")"
_DAY_RANGE = rf"^\s*{_DAY}(-{_DAY})?\s*$"
_SECRETS = one_or_list(Text(pattern=r"."), min_items=1)
_FIELD = Either(
    (
        Text(pattern=r"\S"),
        Section(
            "A request header holding the value.",
            (Key("header", _NAME, "The header's name, such as X-Event-Type.", required=True),),
        ),
    )
)

RETRY = Section(
    "How often and how long a failed send is tried again (exponential back-off).",
    (
        Key("attempts", Whole(minimum=1), "Attempts in all, the first included.", 10),
        Key("first_delay", Duration(), "Wait before the second attempt; doubles each time.", "5s"),
        Key("max_delay", Duration(), "The longest wait between two attempts.", "1h"),
    ),
)
CONCURRENCY = Section(
    "How many sends run at once.",
    (
        Key("total", Whole(minimum=1), "Sends at once, over all destinations.", 64),
        Key("per_destination", Whole(minimum=1), "Sends at once to one destination.", 8),
    ),
)
HMAC = Section(
    "An HMAC of the raw body in a header.",
    (
        Key("secret", _SECRETS, "The shared secret (a list during a rotation).", required=True),
        Key("header", _TEXT, "The header carrying the signature.", required=True),
        Key("algorithm", Words(("sha1", "sha256", "sha512")), "The hash.", "sha256", nullable=True),
        Key(
            "encoding",
            Words(("hex", "base64")),
            "How the signature is written.",
            "hex",
            nullable=True,
        ),
        Key("prefix", _TEXT, "Text before the signature, such as sha256=.", "", nullable=True),
    ),
)
_SCHEMES = Section(
    "Exactly one scheme and its secret.",
    (
        Key("token", _SECRETS, "A token in ?token= or an Authorization: Bearer header."),
        Key("hmac", HMAC, "An HMAC of the body, in a header you name."),
        Key("github", _SECRETS, "GitHub's X-Hub-Signature-256."),
        Key("stripe", _SECRETS, "Stripe's Stripe-Signature."),
        Key("standard_webhooks", _SECRETS, "Standard Webhooks (whsec_ secrets)."),
    ),
    {"minProperties": 1, "maxProperties": 1},
)
SOURCE = Section(
    "A sender of webhooks, posting to /hooks/NAME.",
    (
        Key(
            "auth",
            Either((Words(("none",)), _SCHEMES)),
            "How requests prove they come from the sender; none accepts anyone.",
            required=True,
        ),
        Key("event_type", _FIELD, "Where the event type is: a path or a header.", "event_id"),
        Key("event_key", _FIELD, "Where the dedupe key is: a dotted path or a header."),
        Key("max_body", Size(), "The largest body accepted.", "1MiB"),
        Key("max_depth", Whole(minimum=1), "The deepest JSON nesting accepted.", 64),
        Key("allow_ips", one_or_list(_TEXT), "Addresses or CIDRs allowed to post."),
    ),
)
CIRCUIT = Section(
    "When to stop sending to a failing destination, and how often to probe it.",
    (
        Key("failures", Whole(minimum=1), "Failed attempts in a row that open the circuit.", 5),
        Key("probe", Duration(), "Wait before a probe while open; doubles while it fails.", "30s"),
    ),
)
_DEST_COMMON = (
    Key("retry", RETRY, "This destination's retries (over the top-level retry)."),
    Key("timeout", Duration(), "How long one send may take.", "10s"),
    Key("concurrency", Whole(minimum=1), "Sends at once to it (concurrency.per_destination)."),
    Key("min_interval", Duration(), "The least time between two sends (pacing)."),
    Key("quiet", _TEXT, "A quiet_hours calendar: messages wait while it is quiet.", nullable=True),
    Key(
        "circuit",
        Either((Words((False, "off")), CIRCUIT)),
        "The circuit breaker: off, or its settings (on by default).",
    ),
    Key(
        "fallback", _TEXT, "A destination that gets a delivery this one gave up on.", nullable=True
    ),
)
DEST_APPRISE = Section(
    "A destination apprise sends to (Slack, email, ...).",
    (
        Key("url", _TEXT, "The apprise URL, such as slack://... or mailtos://...", required=True),
        Key(
            "format",
            Words(FORMATS),
            "The body format apprise is told (the rule's by default).",
            nullable=True,
        ),
        Key("processes", Whole(minimum=0, maximum=64), "apprise worker processes; 0: threads.", 0),
        *_DEST_COMMON,
    ),
)
DEST_WEBHOOK = Section(
    "A plain webhook, with a body of your shape.",
    (
        Key("webhook", _TEXT, "The http:// or https:// URL.", required=True),
        Key(
            "method",
            Text(numbers=True, pattern="^(" + "|".join(map(anycase, _METHODS)) + ")$"),
            "The HTTP method.",
            "POST",
            nullable=True,
        ),
        Key("headers", MapOf(Either((_TEXT, Flag()))), "Headers to send."),
        Key(
            "body",
            _TEXT,
            "A Jinja template of the body (the message as JSON by default).",
            nullable=True,
        ),
        Key(
            "sign",
            _TEXT,
            "A whsec_ secret: sign each send the Standard Webhooks way.",
            nullable=True,
        ),
        *_DEST_COMMON,
    ),
)
DESTINATION = ByKey("webhook", DEST_WEBHOOK, DEST_APPRISE)
WINDOW = Section(
    "A quiet window: days, and from/to clock times (both or neither).",
    (
        Key(
            "days",
            one_or_list(Text(pattern=_DAY_RANGE)),
            "mon-fri, sat, fri-mon or a list of them; every day when absent.",
        ),
        Key("from", Text(pattern=_CLOCK), 'Start, "HH:MM" (quoted).'),
        Key("to", Text(pattern=_CLOCK), 'End, "HH:MM" (quoted); at or before from: next day.'),
    ),
    {"dependentRequired": {"from": ["to"], "to": ["from"]}},
)
CALENDAR = Section(
    "A named quiet-hours calendar.",
    (
        Key("timezone", _TEXT, "An IANA zone such as Europe/London.", required=True),
        Key("times", ListOf(WINDOW, 1), "The quiet windows.", required=True),
    ),
)
TOP = Section(
    "The relayhook config file.",
    (
        Key("listen", _TEXT, "host:port the daemon listens on.", "127.0.0.1:8787", nullable=True),
        Key(
            "database",
            _TEXT,
            "A SQLite file, or a postgresql:// URL for several instances.",
            "/var/lib/relayhook/relayhook.db",
            nullable=True,
        ),
        Key("rules", _TEXT, "The folder of rule files.", "/etc/relayhook/rules"),
        Key("sources", MapOf(SOURCE), "Who sends webhooks, by name.", required=True),
        Key("destinations", MapOf(DESTINATION), "Where messages go, by name.", required=True),
        Key("retry", RETRY, "Retries of every destination unless it says otherwise."),
        Key("concurrency", CONCURRENCY, "Sends at once."),
        Key(
            "admin_token",
            _TEXT,
            "Bearer token of /api/ and the pages (16+ characters).",
            nullable=True,
        ),
        Key("trusted_proxies", one_or_list(_TEXT), "Proxies whose X-Forwarded-For is believed."),
        Key("read_timeout", Duration(), "How long a request body may take to arrive.", "10s"),
        Key("retention", Duration(), "Finished events older than this are pruned; off if absent."),
        Key("shutdown_timeout", Duration(), "How long sends in flight may take at a stop.", "10s"),
        Key("render_timeout", Duration(), "How long one message may take to render.", "2s"),
        Key("quiet_hours", MapOf(CALENDAR), "Named quiet-hours calendars."),
        Key("orphan_after", Duration(), "Deliveries to a removed destination go dead after.", "7d"),
        Key("lease", Duration(), "How long a PostgreSQL instance holds a claimed delivery.", "60s"),
    ),
)

# -- rule files -----------------------------------------------------------------------------

GROUP = Section(
    "Fold messages with the same key into one digest.",
    (
        Key("key", _TEXT, "A template: messages with the same key share a group.", nullable=True),
        Key("wait", Duration(), "How long a group collects before it goes.", "30s"),
        Key("interval", Duration(), "The least time between two digests of one key."),
        Key("max", Whole(minimum=1), "A group this full goes at once."),
    ),
)
THROTTLE = Section(
    "Send at most `limit` messages per key in `per`; fold the rest into a digest.",
    (
        Key("key", _TEXT, "A template: messages with the same key share a limit.", nullable=True),
        Key("limit", Whole(minimum=1), "Messages sent per window.", required=True),
        Key("per", Duration(), "The window.", required=True),
    ),
)
_TEMPLATE = Text()
# Exactly one of body and body_template (an empty body_template reads as left out).
_TEMPLATE_GIVEN = {
    "required": ["body_template"],
    "properties": {"body_template": {"not": {"type": "null"}}},
}
_ONE_BODY = {
    "anyOf": [{"required": ["body"]}, _TEMPLATE_GIVEN],
    "not": {**_TEMPLATE_GIVEN, "required": ["body", "body_template"]},
}
RULE = Section(
    "A rule: when it matches, one message to each destination in `to`.",
    (
        Key("name", Text(pattern=r"\S"), "A name unique over every rule file.", required=True),
        Key(
            "when",
            one_or_list(Text(pattern=r"\S")),
            "Jinja expressions that must all be true.",
            nullable=True,
        ),
        Key("for_each", Text(pattern=r"\S"), "An expression giving a list: one message per item."),
        Key("to", one_or_list(_NAME, min_items=1), "Destination names.", required=True),
        Key("title", _TEMPLATE, "Jinja template of the title."),
        Key("body", _TEMPLATE, "Jinja template of the body (or body_template)."),
        Key(
            "body_template", _TEXT, "A file under rules/templates/ holding the body.", nullable=True
        ),
        Key(
            "format",
            Words(FORMATS),
            "The body's format (from body_template's name if absent).",
            nullable=True,
        ),
        Key("stop", Flag(), "Later rules do not see an event this rule matched.", False),
        Key(
            "severity",
            # The words for completion; spaced words and templates are taken too.
            Either(
                (
                    Words(SEVERITIES),
                    Text(pattern=r"^\s*(" + "|".join(SEVERITIES) + r")\s*$|\{[{%]"),
                )
            ),
            "info, success, warning or failure, or a template giving one.",
            "info",
        ),
        Key("group", GROUP, "Fold messages into digests by key."),
        Key("throttle", THROTTLE, "Limit messages per key and time."),
        Key("digest_title", _TEMPLATE, "Jinja template of a digest's title."),
        Key("digest_body", _TEMPLATE, "Jinja template of a digest's body."),
        Key("digest_template", _TEXT, "A file under rules/templates/ holding the digest body."),
        Key(
            "quiet",
            _TEXT,
            "A quiet_hours calendar: messages wait while it is quiet.",
            nullable=True,
        ),
        Key("urgent", Flag(), "Pass quiet hours.", False),
    ),
    _ONE_BODY,
)
RULE_FILE = Section(
    "A relayhook rule file: rules for one event type (or glob).",
    (
        Key(
            "event",
            Text(pattern=r"\S"),
            "The event type or a glob, such as meter_data.*",
            required=True,
        ),
        Key("source", _NAME, "Only events from this source.", nullable=True),
        Key("rules", ListOf(RULE), "The rules, tried in order.", required=True),
    ),
)
