"""Apprise sends in worker processes: off the daemon's GIL, and killable when they hang.

apprise's per-call Python (~0.8 ms here) competes with ingest for the one GIL when it
runs in threads; in `processes: N` workers it runs beside the daemon instead. Each
worker is `python -m relayhook.deliver.senders.apprise_worker`, speaking JSON lines on
its stdin and stdout (apprise_worker holds both ends of that wire). The parent keeps at
most _DEPTH jobs at a worker, so the next is waiting when one ends. A job's timeout
starts when the worker begins it (when the previous outcome arrives), not while it
waits; a worker past a timeout is killed and replaced, and the jobs it had not begun go
to another. Workers ignore the signals meant for the daemon (systemd signals the whole
unit) and leave when their stdin closes: on shutdown, or when the daemon dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from relayhook.config.settings import AppriseDestination
from relayhook.deliver.senders.apprise import apprise_for
from relayhook.deliver.senders.apprise_worker import (
    WORKER_MODULE,
    describe,
    read_outcome,
    write_job,
)
from relayhook.model import TIMEOUT, Delivery, Outcome

__all__ = ["ProcessAppriseSender"]

logger = logging.getLogger("relayhook.deliver")
_DEPTH = 2  # jobs handed to one worker at a time: the one it runs and the next
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 5.0


@dataclass(eq=False, slots=True)
class _Job:
    line: bytes
    future: asyncio.Future[Outcome]
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False, slots=True)
class _Worker:
    proc: asyncio.subprocess.Process
    jobs: deque[_Job] = field(default_factory=deque)  # sent, in order; the first is running
    ready: bool = False
    killed: bool = False


class ProcessAppriseSender:
    """Sends for one apprise destination from `dest.processes` worker processes."""

    def __init__(self, dest: AppriseDestination) -> None:
        self.dest = dest
        # Built here as well so that a URL apprise refuses fails the config, not a worker.
        _, self.min_interval = apprise_for(dest)
        self._waiting: deque[_Job] = deque()
        self._workers: list[_Worker] = []
        self._starting = 0
        self._failures = 0  # workers in a row that died before they were ready
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def open(self) -> None:
        """Start the workers now, so that the first notification does not wait for them."""
        self._dispatch(spawn=True)

    async def send(self, delivery: Delivery) -> Outcome:
        line = write_job(delivery)
        job = _Job(line, asyncio.get_running_loop().create_future())
        self._waiting.append(job)
        self._dispatch()
        try:
            return await asyncio.shield(job.future)
        finally:
            if not job.future.done():  # our caller gave up (shutdown): never start it
                job.future.cancel()

    def _dispatch(self, spawn: bool = False) -> None:
        if self._closed:
            return
        while self._waiting and self._waiting[0].future.done():
            self._waiting.popleft()
        missing = self.dest.processes - len(self._workers) - self._starting
        if (spawn or self._waiting) and missing > 0:
            for _ in range(missing):
                self._spawn()
        while self._waiting:
            # Each job to the least busy worker: two idle workers get one job each.
            open_ = [w for w in self._workers if w.ready and not w.killed and len(w.jobs) < _DEPTH]
            if not open_:
                return
            worker = min(open_, key=lambda w: len(w.jobs))
            job = self._waiting.popleft()
            if job.future.done():
                continue
            assert worker.proc.stdin is not None
            worker.proc.stdin.write(job.line)
            worker.jobs.append(job)
            if len(worker.jobs) == 1:
                self._begin(worker)

    def _begin(self, worker: _Worker) -> None:
        """The worker's first job is running from now: time it."""
        job = worker.jobs[0]
        job.timer = asyncio.get_running_loop().call_later(
            self.dest.timeout, self._timed_out, worker, job
        )

    def _timed_out(self, worker: _Worker, job: _Job) -> None:
        if not job.future.done():
            job.future.set_result(TIMEOUT)
        logger.warning(
            "destination %s: a send passed its %gs timeout; replacing its worker process",
            self.dest.name,
            self.dest.timeout,
            extra={"destination": self.dest.name},
        )
        self._kill(worker)

    def _kill(self, worker: _Worker) -> None:
        worker.killed = True
        with contextlib.suppress(ProcessLookupError):
            worker.proc.kill()

    def _spawn(self) -> None:
        self._starting += 1
        self._track(self._run_worker())

    def _track(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_worker(self) -> None:
        """Start one worker, read its outcomes until it exits, then settle its jobs."""
        if self._failures:
            await asyncio.sleep(min(10.0, 0.1 * 2**self._failures))
        if self._closed:
            self._starting -= 1
            return
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                WORKER_MODULE,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            self._starting -= 1
            self._cannot_start(f"{type(e).__name__}: {e}")
            return
        worker = _Worker(proc)
        self._starting -= 1
        self._workers.append(worker)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            # The URL may hold secrets: it goes through the pipe, never the command line.
            proc.stdin.write(json.dumps(describe(self.dest)).encode() + b"\n")
            async with asyncio.timeout(_START_TIMEOUT):
                hello = await proc.stdout.readline()
            if hello.strip() != b'"ready"':
                raise RuntimeError(f"said {hello[:200]!r} instead of ready")
        except (OSError, RuntimeError, TimeoutError) as e:
            self._kill(worker)
            self._cannot_start(f"{type(e).__name__}: {e}")
        else:
            self._failures = 0
            worker.ready = True
            self._dispatch()
            try:
                await self._read_outcomes(worker)
            except Exception:  # never strand the sends this worker holds
                logger.exception("destination %s: reading a worker failed", self.dest.name)
                self._kill(worker)
        code = await proc.wait()
        self._workers.remove(worker)
        self._settle(worker, code)
        self._dispatch()

    def _cannot_start(self, why: str) -> None:
        """Fail what waits rather than hold it: the scheduler retries it later."""
        self._failures += 1
        logger.error("destination %s: a worker process did not start: %s", self.dest.name, why)
        while self._waiting:
            job = self._waiting.popleft()
            if not job.future.done():
                job.future.set_result(Outcome(False, f"no worker process to send from: {why}"))

    async def _read_outcomes(self, worker: _Worker) -> None:
        assert worker.proc.stdout is not None
        while line := await worker.proc.stdout.readline():
            if not worker.jobs:
                logger.error("destination %s: a worker answered unasked", self.dest.name)
                self._kill(worker)
                return
            job = worker.jobs.popleft()
            if job.timer is not None:
                job.timer.cancel()
            if not job.future.done():
                job.future.set_result(read_outcome(line))
            if worker.jobs:
                self._begin(worker)
            self._dispatch()

    def _settle(self, worker: _Worker, code: int) -> None:
        """A worker is gone: its running job may have gone out; the rest had not begun."""
        if worker.jobs:
            running = worker.jobs.popleft()
            if running.timer is not None:
                running.timer.cancel()
            if not running.future.done():
                running.future.set_result(
                    Outcome(
                        False,
                        f"the worker process exited (code {code}) during the send"
                        " (may have been delivered)",
                    )
                )
        self._waiting.extendleft(reversed(worker.jobs))
        worker.jobs.clear()
        if not worker.killed and not self._closed:
            logger.error(
                "destination %s: worker process exited (code %s); starting another",
                self.dest.name,
                code,
            )

    async def close(self) -> None:
        self._closed = True
        for job in self._waiting:
            if not job.future.done():
                job.future.set_result(Outcome(False, "relayhook stopped before the send"))
        self._waiting.clear()
        for worker in self._workers:
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=_STOP_TIMEOUT)
            for worker in list(self._workers):
                self._kill(worker)
            if pending:
                await asyncio.wait(pending, timeout=_STOP_TIMEOUT)
