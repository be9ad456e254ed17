"""Shared parts of the benchmarks: processes on loopback, wrk, a counting sink.

Every figure is printed beside a baseline measured in the same run, because the machine
is noisy: only ratios mean anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BIN = Path(sys.executable).parent
RELAYHOOK = str(BIN / "relayhook")
LUA = BENCH / "lua"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback only
                if response.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return  # it answers
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def process(
    cmd: list[str],
    ready: str | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log or os.devnull, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    out.close()
    try:
        if ready:
            wait_http(ready)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        sys.exit(f"bench needs {tool}: apt-get install {package}")
    return path


def wrk(
    url: str, script: str, seconds: float, connections: int = 32, env: dict[str, str] | None = None
) -> dict[str, float]:
    """Requests/s and non-2xx count from one wrk run."""
    out = subprocess.run(
        [
            need("wrk", "wrk"),
            "-t2",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",  # wrk takes whole seconds only
            "--latency",
            "-s",
            str(LUA / script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rate": rate,
        "non2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
        "requests": float(total.group(1)) if total else 0.0,
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def relayhook_config(
    root: Path,
    destinations: dict[str, Any],
    rules: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> Path:
    (root / "rules").mkdir(parents=True, exist_ok=True)
    (root / "rules" / "bench.yaml").write_text(json.dumps({"event": "*", "rules": rules}))
    config = {
        "database": str(root / "relayhook.db"),
        "rules": str(root / "rules"),
        "sources": {"bench": {"event_key": "delivery_id", "auth": {"token": "bench-token"}}},
        "destinations": destinations,
        **(extra or {}),
    }
    path = root / "config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@contextlib.contextmanager
def relayhook(
    config: Path, port: int, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with process(
        [
            RELAYHOOK,
            "serve",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        ready=f"http://127.0.0.1:{port}/readyz",
        log=log,
    ) as p:
        yield p


def tempdir() -> Any:
    return tempfile.TemporaryDirectory(prefix="relayhook-bench-")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def report(title: str, rows: list[tuple[str, float, float, str]]) -> None:
    """rows: (what, value, baseline, unit); prints value, baseline and their ratio."""
    print(f"\n== {title}")
    for what, value, baseline, unit in rows:
        ratio = value / baseline if baseline else float("nan")
        print(
            f"  {what:<58} {value:>10.1f} {unit:<6} baseline {baseline:>10.1f}   ratio {ratio:5.2f}"
        )


@contextlib.contextmanager
def alertmanager(root: Path, receiver_url: str | None = None) -> Iterator[int]:
    """Prometheus Alertmanager on a free port: no receiver, or a webhook to receiver_url,
    one notification per alert (group_by: ['...'], no waiting)."""
    binary = need("prometheus-alertmanager", "prometheus-alertmanager")
    port = free_port()
    receiver = {"name": "out"}
    if receiver_url:
        receiver["webhook_configs"] = [{"url": receiver_url, "send_resolved": False}]
    config = {
        "route": {
            "receiver": "out",
            "group_by": ["..."],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [receiver],
    }
    folder = Path(tempfile.mkdtemp(dir=root, prefix="am-"))
    (folder / "am.yml").write_text(json.dumps(config))
    cmd = [
        binary,
        f"--config.file={folder / 'am.yml'}",
        f"--storage.path={folder}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    with process(cmd, ready=f"http://127.0.0.1:{port}/-/ready", log=folder / "am.log") as proc:
        yield port
        _ = proc


@contextlib.contextmanager
def sink(delay: float = 0.0) -> Iterator[int]:
    """bench/sink.py on a free port."""
    port = free_port()
    with process(
        [str(BIN / "python"), str(BENCH / "sink.py"), str(port), str(delay)],
        ready=f"http://127.0.0.1:{port}/stats",
    ):
        yield port


def sink_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        return dict(json.loads(response.read()))


def sink_reset(port: int) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/reset", data=b"", method="POST")
    urllib.request.urlopen(request, timeout=10).read()  # noqa: S310 - loopback


def wait_count(port: int, target: int, timeout: float) -> dict[str, Any]:
    """Sink stats once it has counted target notifications (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    stats = sink_stats(port)
    while stats["count"] < target and time.monotonic() < deadline:
        time.sleep(0.1)
        stats = sink_stats(port)
    return stats
