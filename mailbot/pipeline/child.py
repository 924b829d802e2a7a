"""The worker in a process of its own, beside the SMTP server: one node on SQLite.

One event loop cannot answer SMTP and work through the pipeline at full speed at once: the
pipeline's CPU delays every RCPT and DATA (measured in benchmarks/throughput.py: acceptance
doubles with the worker elsewhere). On PostgreSQL, nodes with their own ``--role`` do this;
on SQLite, ``mailbot serve`` with ``worker_process`` starts the worker as a child process
sharing the database file (WAL: one writer at a time, readers alongside) and wakes it
through a pipe each time a message is stored; through a second pipe the child says each
time it finished messages, so the parent's live inbox shows them at once (``on_worked``).
The two writers queue for SQLite's write lock on a lock file (mailbot/store/sqlite_driver.py),
so it passes from one to the other at once. The child dies with its parent (even by
SIGKILL), and is started again if it dies on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from mailbot import logs
from mailbot.config import Settings
from mailbot.retry import backoff

log = logging.getLogger(__name__)

STOP_SECONDS = 30.0  # how long a stopping worker may take to finish what it holds
STEADY_SECONDS = 60.0  # up this long, a child has started well: the backoff starts over
# Below the SMTP server on a busy CPU: a sender waits for its 250, a stored message can wait a
# moment for its bot (the worker, and its analysers, which inherit it, catch up after a burst).
NICER = 5


class WorkerChild:
    """``async with WorkerChild(settings, "mailbot.bots.default:app") as child: child.wake()``;
    ``on_worked`` is called (in the parent) each time the child finished messages."""

    def __init__(
        self, settings: Settings, app_spec: str, on_worked: Callable[[], None] = lambda: None
    ) -> None:
        self.settings = settings
        self.app_spec = app_spec
        self.on_worked = on_worked
        self._process: BaseProcess | None = None
        self._wakes: Connection | None = None
        self._worked: Connection | None = None
        self._watch: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self.starts = 0

    async def __aenter__(self) -> WorkerChild:
        self._start()
        self._watch = asyncio.create_task(self._supervise(), name="worker-child")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await asyncio.to_thread(self._stop)
        self._close_pipes()

    def wake(self) -> None:
        """A message was stored: the worker looks now, not at its next poll."""
        if self._wakes is None:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self._wakes.fileno(), b"\0")  # full pipe: it is awake already

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a running event loop
        reader, writer = context.Pipe(duplex=False)
        heard, told = context.Pipe(duplex=False)
        process = context.Process(
            target=_child_main,
            args=(self.settings, self.app_spec, reader, os.getpid(), told),
            name="mailbot-worker",
        )
        process.start()
        reader.close()
        told.close()
        os.set_blocking(writer.fileno(), False)
        os.set_blocking(heard.fileno(), False)
        self._close_pipes()
        asyncio.get_running_loop().add_reader(heard.fileno(), self._heard, heard)
        self._process, self._wakes, self._worked = process, writer, heard
        self._started_at = time.monotonic()
        self.starts += 1
        log.info("worker process %s started", process.pid)

    def _heard(self, heard: Connection) -> None:
        try:
            said = os.read(heard.fileno(), 4096)
        except BlockingIOError:
            return
        if not said:  # the child is gone; its successor gets a pipe of its own
            asyncio.get_running_loop().remove_reader(heard.fileno())
            return
        self.on_worked()

    def _close_pipes(self) -> None:
        if self._worked is not None:
            asyncio.get_running_loop().remove_reader(self._worked.fileno())
            self._worked.close()
            self._worked = None
        if self._wakes is not None:
            self._wakes.close()
            self._wakes = None

    async def _supervise(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(1.0)
            process = self._process
            assert process is not None
            if process.is_alive():
                continue
            # One that died soon after its start (a bad app, a broken config) waits longer
            # each time; one that ran a while starts over from a short wait.
            steady = time.monotonic() - self._started_at >= STEADY_SECONDS
            failures = 1 if steady else failures + 1
            wait = min(backoff(1.0, failures).total_seconds(), 30.0)
            log.error(
                "worker process %s ended (exit code %s); starting another in %.0f s",
                process.pid,
                process.exitcode,
                wait,
            )
            await asyncio.sleep(wait)
            self._start()

    def _stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)  # the node stops in order, as on Ctrl-C
            process.join(STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()


def _child_main(
    settings: Settings, app_spec: str, wakes: Connection, parent: int, told: Connection
) -> None:
    from mailbot.pipeline.memory import die_with_parent

    die_with_parent(parent)
    os.nice(NICER)
    logs.configure(settings.log_level, settings.log_format)
    asyncio.run(_child(settings, app_spec, wakes, told))


async def _child(settings: Settings, app_spec: str, wakes: Connection, told: Connection) -> None:
    from mailbot.app import load_app
    from mailbot.serve import running

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running(settings, load_app(app_spec, settings), smtp=False, http=False) as node:

        def woken() -> None:
            try:
                if not os.read(wakes.fileno(), 4096):  # the parent is gone
                    stop.set()
            except BlockingIOError:
                return
            node.wake_worker.set()

        def worked() -> None:
            # Full pipe: the parent has yet to read what it was told, which says it all.
            with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
                os.write(told.fileno(), b"\0")

        os.set_blocking(wakes.fileno(), False)
        os.set_blocking(told.fileno(), False)
        loop.add_reader(wakes.fileno(), woken)
        node.on_worked.append(worked)
        log.info("worker process %s ready", os.getpid())
        try:
            await stop.wait()
        finally:
            loop.remove_reader(wakes.fileno())
