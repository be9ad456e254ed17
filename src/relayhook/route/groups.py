"""The group stage: sends each due group once, as a digest of its messages.

Groups live in the database with the time each is due (route stage and store fold the
messages in as they are routed), so this stage keeps nothing in memory that a crash
could lose: it reads what is due, renders the digest with the rule in force (a rule
removed since still gets the default digest), and closes the group and adds the digest
delivery in one transaction, which happens once per group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2
from markupsafe import Markup

from relayhook.config.settings import Config, Rule
from relayhook.ops.metrics import Metrics
from relayhook.route.budget import RenderTimeout, budget
from relayhook.route.match import escapers, iso_time
from relayhook.route.quiet import calendars_for, quiet_until
from relayhook.route.templating import ESCAPE, compile_template, describe_error
from relayhook.store.base import Digest, DueGroup, Store
from relayhook.store.rows import shown_key

__all__ = ["SHOWN", "GroupStage", "render_digest"]

logger = logging.getLogger("relayhook.route")
SHOWN = 50  # messages a digest lists; `omitted` counts the rest
_POLL = 1.0
_HELD = {"throttle": "throttled", "quiet": "quiet"}  # reason: the metric's reason
_BATCH = 64
_HOLD = 20.0  # seconds one pass holds the groups lock at most (the server frees it at 60)
_TITLE = compile_template("{{ count }} × {{ rule }}")
_BODY_TEXT = compile_template(
    "{% for m in messages %}- {{ m.title }}\n{% endfor %}"
    "{% if omitted %}… and {{ omitted }} more\n{% endif %}"
)
_BODY_HTML = compile_template(
    "<ul>{% for m in messages %}<li>{{ m.title }}</li>{% endfor %}</ul>"
    "{% if omitted %}<p>… and {{ omitted }} more</p>{% endif %}",
    html=True,
)


def render_digest(config: Config, group: DueGroup, members: Sequence[Mapping[str, Any]]) -> Digest:
    """The digest of a group, escaped for its destination like any message."""
    rule = next((r for r in config.rules if r.name == group.rule), None)
    dest = config.destinations.get(group.destination)
    fmt = group.format
    title_escape, body_escape = escapers(dest, fmt)
    # Each message was escaped for this destination when it was made: as it is where
    # the digest escapes alike, else once more as data (a Slack title is escaped by
    # apprise, not by us, and must not reach a Markdown body raw).
    # A title is never HTML: an HTML digest escapes it like data.
    as_is = fmt != "html" and title_escape is body_escape
    messages = [
        {
            # Escaped already (by the rule's render), so marked as such.
            "title": Markup(m["title"]) if as_is else m["title"],  # noqa: S704
            "body": Markup(m["body"]),  # noqa: S704
            "event_id": m["event_id"],
            "event_type": m["event_type"],
            "source": m["source"],
            "received_at": iso_time(m["received_at"]),
            "item": m["item"],
        }
        for m in members
    ]
    ctx: dict[str, Any] = {
        "messages": messages,
        "count": group.count,
        "omitted": group.count - len(messages),
        "key": shown_key(group.key, group.reason),
        "rule": group.rule,
        "destination": group.destination,
        "first_at": iso_time(group.first_at),
        "last_at": iso_time(group.last_at),
        "reason": group.reason,
    }
    title_t, body_t = _templates(rule, fmt)
    try:
        with budget(config.render_timeout):
            title = title_t.render({**ctx, ESCAPE: title_escape}).strip()
            body = body_t.render({**ctx, ESCAPE: body_escape}).strip()
            if dest is not None:
                first = members[0] if members else {}
                shape_ctx = {
                    **ctx,
                    "severity": group.severity,
                    "event_type": first.get("event_type", ""),
                    "source": first.get("source", ""),
                }
                body, fmt = dest.shape(title, body, fmt, shape_ctx)
    except RenderTimeout:
        error = f"digest of rule '{group.rule}' took longer than render_timeout to render"
        return Digest("", "", fmt, error)
    except Exception as e:  # noqa: BLE001 - a broken digest fails its delivery, not the stage
        return Digest("", "", fmt, f"digest: {describe_error(e)}")
    return Digest(title, body, fmt)


def _templates(rule: Rule | None, fmt: str) -> tuple[jinja2.Template, jinja2.Template]:
    title = rule.digest_title if rule is not None and rule.digest_title is not None else _TITLE
    if rule is not None and rule.digest_body is not None:
        return title, rule.digest_body
    return title, _BODY_HTML if fmt == "html" else _BODY_TEXT


class GroupStage:
    """Sends due groups; sleeps until the next one is due."""

    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        metrics: Metrics,
        sent: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._config = config
        self.metrics = metrics
        self._sent = sent  # told when deliveries may be waiting
        self.clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            next_due = await self.store.next_group_due()
            delay = _POLL if next_due is None else min(_POLL, max(0.0, next_due - self.clock()))
            if next_due is not None and next_due <= self.clock():
                # One instance at a time renders and closes due groups (each closes once
                # in any case; the lock spares the others rendering it for nothing).
                async with self.store.exclusive("groups") as mine:
                    due = await self.store.due_groups(self.clock(), _BATCH) if mine else []
                    began = time.monotonic()
                    for group in due:
                        await self._send(group)
                        if time.monotonic() - began > _HOLD:
                            break  # let go for a moment: another instance may take a turn
                if due:
                    self._sent()
                if mine:
                    continue
                # Another instance is sending them; take over if it stops.
                await asyncio.sleep(_POLL)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()

    async def _send(self, group: DueGroup) -> None:
        if group.reason != "quiet":
            config = self._config()
            rule = next((r for r in config.rules if r.name == group.rule), None)
            until = quiet_until(calendars_for(config, rule, group.destination), self.clock())
            if until is not None:
                # Due in quiet hours: its messages wait for them to end, with the rest.
                held = await self.store.hold_group(group, until, self.clock())
                if held is not None:
                    logger.info(
                        "group %s of rule %s (key %r): %d message%s held for quiet hours"
                        " until %s in group %s",
                        group.id,
                        group.rule,
                        group.key,
                        group.count,
                        "" if group.count == 1 else "s",
                        iso_time(until),
                        held,
                        extra={"rule": group.rule, "destination": group.destination},
                    )
                return
        digest = None
        if group.count > 1:
            members = await self.store.group_members(group.id, SHOWN)
            digest = await asyncio.to_thread(render_digest, self._config(), group, members)
        delivery = await self.store.close_group(group, digest, self.clock())
        if delivery is None:
            return
        if digest is not None:
            why = _HELD.get(group.reason, "grouped")
            self.metrics.suppressed.labels(group.destination, why).inc(group.count)
        logger.info(
            "group %s of rule %s (key %r): %d message%s as delivery %s (%s)",
            group.id,
            group.rule,
            group.key,
            group.count,
            "" if group.count == 1 else "s",
            delivery,
            group.reason,
            extra={"rule": group.rule, "destination": group.destination},
        )
        if digest is not None and digest.error:
            logger.warning("group %s: %s", group.id, digest.error, extra={"rule": group.rule})
