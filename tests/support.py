"""Real parts on loopback for end-to-end tests: a daemon process, HTTP and SMTP sinks."""

from __future__ import annotations

import contextlib
import email
import email.policy
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from conftest import RELAYHOOK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HTTPSink:
    """A real HTTP server. `responses[path]` is a list of answers consumed in order (the
    last repeats): a status, (status, {header: value}), or "hang" to sleep past any client
    timeout."""

    port: int = field(default_factory=free_port)
    responses: dict[str, list[Any]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hang_seconds: float = 30.0
    delay: float = 0.0  # every answer waits this long first
    clock: Callable[[], float] = time.time  # what `Received.at` reads (a fake clock in process)

    def __post_init__(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_PUT(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                path = self.path.split("?")[0]
                with sink.lock:
                    sink.received.append(Received(path, dict(self.headers), body, sink.clock()))
                    script = sink.responses.get(path, [200])
                    status = script.pop(0) if len(script) > 1 else script[0]
                extra: dict[str, str] = {}
                if isinstance(status, tuple):
                    status, extra = status
                if status == "hang":
                    time.sleep(sink.hang_seconds)
                    status = 200
                elif sink.delay:
                    time.sleep(sink.delay)
                payload = b'{"ok": true}' if status == 200 else b'{"error": "sink says no"}'
                self.send_response(int(status))
                for name, value in extra.items():
                    self.send_header(name, value() if callable(value) else value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._handler = Handler
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> HTTPSink:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}{path}"


class SMTPSink:
    """A real SMTP server (aiosmtpd) that keeps every message."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[email.message.EmailMessage] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                sink.messages.append(message)  # type: ignore[arg-type]
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> SMTPSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def url(self, to: str = "ops@example.com") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=relayhook@example.com&to={to}"


class Daemon:
    """`relayhook serve` as a real process on a free port."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYHOOK_")}
        self.env.update(env or {})
        self.log_path = config.parent / f"daemon-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Daemon:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process owns it
        self.proc = subprocess.Popen(
            [
                RELAYHOOK,
                "serve",
                "--config",
                str(self.config),
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        if wait:
            wait_for(self.ready, 30, "the daemon to be ready")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
        try:
            status, _ = self.request("GET", "/readyz")
        except OSError:
            return False
        return status == 200

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, data.decode(errors="replace")

    def post(
        self,
        event: Any,
        source: str = "openvolt",
        token: str | None = "test-token",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        query = f"?token={token}" if token is not None else ""
        body = raw if raw is not None else json.dumps(event).encode()
        return self.request(
            "POST",
            f"/hooks/{source}{query}",
            body,
            {"Content-Type": "application/json", **(headers or {})},
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextlib.contextmanager
def running(config: Path, env: dict[str, str] | None = None) -> Iterator[Daemon]:
    daemon = Daemon(config, env).start()
    try:
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(10)


def db_count(database: Path, table: str, where: str = "1") -> int:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}").fetchone()[0])  # noqa: S608


def db_rows(database: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, args).fetchall()
