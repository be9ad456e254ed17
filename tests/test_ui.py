"""The web pages in a real browser: Debian's chromium driven by Playwright against a real
daemon, sink and database. Login, every page with data, filters, replay, silences,
groups, send-test, CSRF, escaping, logout; and no page without a session."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api as playwright

from support import Daemon, HTTPSink, db_rows, free_port, running, wait_for
from test_daemon import make_config

ADMIN = "ui-admin-token-0123456789abcdef"
SECRET = "hunter2-sekrit-pass"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Site:
    daemon: Daemon
    sink: HTTPSink
    config: Path
    db: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.daemon.port}"

    def post(self, event_type: str, n: int, **extra: Any) -> None:
        body = {"event_id": event_type, "delivery_id": f"{event_type}-{n}", "n": n, **extra}
        assert self.daemon.post(body)[0] == 202

    def delivery_ids(self, where: str) -> list[int]:
        sql = f"SELECT id FROM deliveries WHERE {where}"  # noqa: S608 - the tests' own text
        return [r["id"] for r in db_rows(self.db, sql)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("ui")
    sink = HTTPSink().start()

    def rule(name: str, to: list[str], **more: Any) -> dict[str, Any]:
        return {
            "name": name,
            "to": to,
            "title": "{{ event_type }} {{ event.n }}",
            "body": "n={{ event.n }}",
            **more,
        }

    config = make_config(
        root,
        {
            "hook": {"webhook": f"http://127.0.0.1:{sink.port}/hook"},
            "down": {
                "webhook": f"http://127.0.0.1:{free_port()}/x",
                "circuit": "off",
                "retry": {"attempts": 1},
            },
            "vault": {"url": f"json://admin:{SECRET}@127.0.0.1:{sink.port}/vault"},
        },
        {
            "a.yaml": {"event": "customer.*", "rules": [rule("echo", ["hook"])]},
            "b.yaml": {"event": "broken.*", "rules": [rule("to-down", ["down"])]},
            "c.yaml": {
                "event": "meter.*",
                "rules": [rule("meters", ["hook"], group={"wait": "1h"})],
            },
        },
        extra=f"admin_token: {ADMIN}\n",
    )
    try:
        with running(config) as d:
            yield Site(d, sink, config, root / "relayhook.db")
    finally:
        sink.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    """A signed-in page, watching for dialogs (none may ever open)."""
    context = browser.new_context(base_url=site.base)
    p = context.new_page()
    p.dialogs = []
    p.on("dialog", lambda dialog: (p.dialogs.append(dialog.message), dialog.dismiss()))
    login(p)
    yield p
    context.close()


def login(p: Any, token: str = ADMIN) -> None:
    p.goto("/ui/login")
    p.fill("input[name=token]", token)
    p.click("button:has-text('Log in')")


def test_login_refuses_a_wrong_token_and_takes_the_right_one(browser: Any, site: Site) -> None:
    context = browser.new_context(base_url=site.base)
    p = context.new_page()
    p.goto("/ui/deliveries")
    assert p.url.endswith("/ui/login")  # no session: sent to log in
    login(p, "not-the-token-at-all")
    assert p.locator("p.error").inner_text() == "That is not the admin token."
    assert p.url.endswith("/ui/login")
    assert context.cookies() == []
    login(p)
    assert p.url.endswith("/ui/")
    assert p.locator("h1").inner_text() == "Events"
    (cookie,) = context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Strict", False)
    context.close()


def test_every_page_renders_with_data(page: Any, site: Site) -> None:
    site.post("customer.created", 1)
    site.post("broken.thing", 1)
    wait_for(lambda: len(site.delivery_ids("state IN ('delivered', 'dead')")) >= 2, 15, "sends")
    (delivered,) = site.delivery_ids("rule = 'echo' AND title = 'customer.created 1'")
    page.goto("/ui/")
    assert page.locator("td", has_text="customer.created-1").count() == 1
    (row,) = db_rows(site.db, "SELECT event_id FROM deliveries WHERE id = ?", delivered)
    page.click(f"#rows a:text-is('{row['event_id']}')")
    assert page.locator("h1").inner_text().startswith("Event ")
    assert "echo" in page.locator("ul.rules li.matched").inner_text()
    assert (
        "no: event type 'customer.created' does not match 'broken.*'"
        in page.locator("ul.rules").inner_text()
    )
    page.goto(f"/ui/deliveries/{delivered}")
    assert page.locator("p.msg-title").inner_text() == "customer.created 1"
    assert page.locator("table tbody tr").first.inner_text().split("\t")[3] == "delivered"
    for path, heading in (
        ("/ui/deliveries", "Deliveries"),
        ("/ui/silences", "Silences"),
        ("/ui/groups", "Waiting digests"),
        ("/ui/destinations", "Destinations"),
    ):
        page.goto(path)
        assert page.locator("h1").inner_text() == heading, path
    assert page.locator("td", has_text="hook").count() >= 1
    assert page.dialogs == []


def test_the_first_page_refreshes_itself_under_the_csp(page: Any, site: Site) -> None:
    response = page.goto("/ui/deliveries")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    site.post("customer.refreshed", 1)
    # No reload: htmx (from /static/, under the CSP) swaps the rows in within 5 s.
    page.locator("td", has_text="customer.refreshed 1").wait_for(timeout=15_000)
    assert errors == []


def test_filters_narrow_the_list(page: Any, site: Site) -> None:
    site.post("broken.thing", 2)
    site.post("customer.created", 2)
    wait_for(lambda: len(site.delivery_ids("state = 'dead'")) >= 1, 15, "a dead one")
    page.goto("/ui/deliveries")
    everything = page.locator("#rows tr").count()
    page.check("input[name=status][value=dead]")
    page.click("button:has-text('Filter')")
    states = page.locator("#rows span.state").all_inner_texts()
    assert states and set(states) == {"dead"} and len(states) < everything
    page.select_option("select[name=destination]", "hook")
    page.click("button:has-text('Filter')")
    assert page.locator("td.empty").inner_text() == "No deliveries match."
    page.uncheck("input[name=status][value=dead]")
    page.click("button:has-text('Filter')")
    destinations = page.locator("#rows td:nth-child(6)").all_inner_texts()
    assert destinations and set(destinations) == {"hook"}


def test_replay_from_the_delivery_page_arrives_at_the_sink(page: Any, site: Site) -> None:
    site.post("customer.created", 3)
    wait_for(
        lambda: len(site.delivery_ids("title = 'customer.created 3' AND state = 'delivered'")) == 1,
        15,
        "it",
    )
    (first,) = site.delivery_ids("title = 'customer.created 3'")
    before = len([r for r in site.sink.at("/hook") if r.json()["title"] == "customer.created 3"])
    page.goto(f"/ui/deliveries/{first}")
    page.check("input[name=again]")
    page.click("button:has-text('Send again')")
    assert "Replay of" in page.locator("p.flash").inner_text()
    assert page.url != f"{site.base}/ui/deliveries/{first}"
    wait_for(
        lambda: (
            len([r for r in site.sink.at("/hook") if r.json()["title"] == "customer.created 3"])
            == before + 1
        ),
        15,
        "the replayed copy at the sink",
    )


def test_replay_all_matching_counts_first(page: Any, site: Site) -> None:
    site.post("broken.thing", 4)
    wait_for(
        lambda: len(site.delivery_ids("title = 'broken.thing 4' AND state = 'dead'")) == 1,
        15,
        "it to die",
    )
    dead = len(site.delivery_ids("state = 'dead'"))
    page.goto("/ui/deliveries?status=dead")
    page.click("button:has-text('Replay all matching')")
    assert page.locator("h1").inner_text() == f"Replay {dead} deliveries?"
    page.click(f"button:has-text('Replay {dead}')")
    assert page.locator("p.flash").inner_text() == f"Replayed {dead} deliveries."
    assert len(site.delivery_ids("replay_of IS NOT NULL AND destination = 'down'")) >= dead


def test_a_post_without_the_csrf_token_is_refused(page: Any, site: Site) -> None:
    response = page.context.request.post(f"{site.base}/ui/groups/1/send", form={"x": "1"})
    assert response.status == 403
    assert response.text() == "refused: this form has no valid CSRF token"
    response = page.context.request.post(
        f"{site.base}/ui/silences",
        form={"matchers": "rule=echo", "for": "1h", "csrf": "0" * 40},
    )
    assert response.status == 403


def test_event_data_shows_as_text_and_runs_nothing(page: Any, site: Site) -> None:
    evil = {"name": "<script>alert(1)</script>", "bio": "<img src=x onerror=alert(2)>"}
    site.post("customer.created", 5, **evil)
    wait_for(lambda: len(site.delivery_ids("title = 'customer.created 5'")) == 1, 15, "it")
    (event_id,) = [
        r["id"]
        for r in db_rows(site.db, "SELECT id FROM events WHERE event_key = ?", "customer.created-5")
    ]
    page.goto(f"/ui/events/{event_id}")
    body = page.locator("pre.body").inner_text()
    assert '"name": "<script>alert(1)</script>"' in body
    assert '"bio": "<img src=x onerror=alert(2)>"' in body
    assert page.locator("main img").count() == 0
    assert page.locator("main script").count() == 0
    page.wait_for_timeout(300)
    assert page.dialogs == []


def test_a_silence_made_on_the_page_mutes_the_next_matching_event(page: Any, site: Site) -> None:
    page.goto("/ui/silences")
    page.fill("textarea[name=matchers]", "event_type=customer.muted")
    page.fill("input[name=for]", "1h")
    page.fill("input[name=comment]", "from the browser test")
    page.click("button:has-text('Preview')")
    assert "It would have muted 0 of the last 24 hours'" in page.locator("p.preview").inner_text()
    page.click("button:has-text('Add silence')")
    assert page.locator("p.flash").inner_text().endswith("added.")
    assert page.locator("td", has_text="from the browser test").count() == 1
    time.sleep(1.2)  # the daemon reads silences again within a second
    site.post("customer.muted", 1)
    wait_for(
        lambda: len(site.delivery_ids("title = 'customer.muted 1' AND state = 'silenced'")) == 1,
        15,
        "silenced",
    )
    assert not [r for r in site.sink.at("/hook") if r.json()["title"] == "customer.muted 1"]
    page.click("button:has-text('Expire')")
    assert "expired" in page.locator("p.flash").inner_text()


def test_a_waiting_group_goes_when_sent_now(page: Any, site: Site) -> None:
    site.post("meter.read", 1)
    site.post("meter.read", 2)
    wait_for(
        lambda: len(site.delivery_ids("rule = 'meters' AND state = 'grouped'")) == 2, 15, "grouped"
    )
    page.goto("/ui/groups")
    row = page.locator("#rows, tbody tr", has_text="meters").first
    assert "2" in row.inner_text()
    row.locator("button:has-text('Send now')").click()
    assert "goes now" in page.locator("p.flash").inner_text()
    wait_for(
        lambda: any(r.json()["title"] == "2 × meters" for r in site.sink.at("/hook")),
        15,
        "the digest",
    )


def test_send_test_from_the_destinations_page(page: Any, site: Site) -> None:
    page.goto("/ui/destinations")
    page.locator("tr", has_text="hook").locator("button:has-text('Send test')").click()
    assert page.locator("p.flash").inner_text().startswith("send-test hook: delivered in ")
    page.locator("tr", has_text="down").locator("button:has-text('Send test')").click()
    assert page.locator("p.flash").inner_text().startswith("send-test down: not delivered: ")


def test_logout_ends_the_session(browser: Any, site: Site) -> None:
    context = browser.new_context(base_url=site.base)
    p = context.new_page()
    login(p)
    kept = context.storage_state()
    p.click("button:has-text('Log out')")
    assert p.url.endswith("/ui/login")
    p.goto("/ui/deliveries")
    assert p.url.endswith("/ui/login")
    # The old cookie, kept aside, no longer opens anything.
    again = browser.new_context(base_url=site.base, storage_state=kept)
    q = again.new_page()
    q.goto("/ui/deliveries")
    assert q.url.endswith("/ui/login")
    again.close()
    context.close()


PATHS = ["/ui/", "/ui/events/1", "/ui/deliveries", "/ui/deliveries/1", "/ui/silences",
         "/ui/groups", "/ui/destinations"]  # fmt: skip
POSTS = ["/ui/logout", "/ui/deliveries/1/replay", "/ui/deliveries/replay", "/ui/silences",
         "/ui/silences/1/expire", "/ui/groups/1/send", "/ui/destinations/hook/test"]  # fmt: skip


def test_no_page_answers_without_a_session_and_none_shows_a_secret(
    site: Site, browser: Any
) -> None:
    for path in PATHS:
        conn = http.client.HTTPConnection("127.0.0.1", site.daemon.port, timeout=10)
        conn.request("GET", path)
        response = conn.getresponse()
        assert (response.status, response.getheader("location")) == (303, "/ui/login"), path
        conn.close()
    for path in POSTS:
        conn = http.client.HTTPConnection("127.0.0.1", site.daemon.port, timeout=10)
        conn.request(
            "POST",
            path,
            body=b"csrf=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert conn.getresponse().status == 403, path
        conn.close()
    # Signed in, no page shows the admin token or a destination's password.
    context = browser.new_context(base_url=site.base)
    p = context.new_page()
    login(p)
    for path in PATHS:
        p.goto(path)
        html = p.content()
        assert ADMIN not in html and SECRET not in html, path
    context.close()
    assert json.dumps(ADMIN) not in site.daemon.log()
