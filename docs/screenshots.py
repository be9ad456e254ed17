"""Screenshots of the web pages for the README: a real daemon on the example rules, fed the
Openvolt samples, photographed in Debian's chromium. Run: .venv/bin/python docs/screenshots.py"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO.parent / "shared" / "samples" / "openvolt"
TOKEN = "screenshot-admin-token-0123456789"  # noqa: S105 - a throwaway daemon's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sink_port, port = free_port(), free_port()
        sink = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "sink.py"), str(sink_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        config = {
            "database": str(root / "relayhook.db"),
            "rules": str(REPO / "rules"),
            "admin_token": TOKEN,
            "sources": {"openvolt": {"event_type": "event_id", "event_key": "delivery_id",
                                     "auth": {"token": "t"}}},
            "destinations": {
                "ops-slack": {"url": f"json://127.0.0.1:{sink_port}/slack"},
                "ops-email": {"webhook": f"http://127.0.0.1:{free_port()}/down",
                              "circuit": "off", "retry": {"attempts": 2, "first_delay": "100ms"}},
                "security-email": {"url": f"json://127.0.0.1:{sink_port}/security"},
            },
        }  # fmt: skip
        (root / "c.yaml").write_text(json.dumps(config))
        daemon = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "relayhook"), "serve", "--config", str(root / "c.yaml"),
             "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(2.5)
            for sample in sorted(SAMPLES.glob("*.json")):
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/hooks/openvolt?token=t",
                    data=sample.read_bytes(),
                    headers={"Content-Type": "application/json"},
                )
                urllib.request.urlopen(request, timeout=10).read()  # noqa: S310 - loopback
            time.sleep(12)  # the meter group's wait (10 s) and the dead ones' retries
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page(viewport={"width": 1280, "height": 720})
                page.goto(f"http://127.0.0.1:{port}/ui/login")
                page.fill("input[name=token]", TOKEN)
                page.click("button:has-text('Log in')")
                page.goto(f"http://127.0.0.1:{port}/ui/deliveries")
                page.screenshot(path=str(REPO / "docs" / "ui-deliveries.png"), full_page=True)
                page.goto(f"http://127.0.0.1:{port}/ui/events/2")
                page.screenshot(path=str(REPO / "docs" / "ui-event.png"), full_page=False)
                browser.close()
        finally:
            daemon.terminate()
            sink.terminate()
            daemon.wait()
            sink.wait()


if __name__ == "__main__":
    main()
