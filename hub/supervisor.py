"""Supervision of the hub's long-running tasks.

Every loop that must outlive a fault (delivery workers, lease recovery, the
wake-up listener, retention, the backlog counter) runs under a
:class:`Supervisor`: when it raises, the crash is logged (its type, never its
text, which may quote a payload) and the loop is started again after a
backoff that doubles up to a cap, and resets once the loop has run cleanly for
a while. Cancellation is the only way to stop a supervised task.

The supervisor also remembers which tasks are between a crash and their
restart, so that ``/healthz`` can tell the truth.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

__all__ = ["Supervisor", "TaskState"]

log = structlog.get_logger("hub.supervisor")


@dataclass
class TaskState:
    """What the supervisor knows of one task."""

    name: str
    crashes: int = 0
    last_error: str = ""
    restarting: bool = False


class Supervisor:
    """Starts named coroutines and restarts them with backoff when they crash."""

    def __init__(self, *, initial_backoff: float = 0.5, max_backoff: float = 30.0, healthy_after: float = 60.0) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self.states: dict[str, TaskState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `run()` under supervision as task `name` (names are unique within a supervisor)."""
        if name in self._tasks and not self._tasks[name].done():
            raise ValueError(f"task {name!r} is already supervised")
        self.states[name] = TaskState(name)
        task = asyncio.create_task(self._keep(name, run), name=name)
        self._tasks[name] = task
        return task

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        state = self.states[name]
        loop = asyncio.get_running_loop()
        delay = self.initial_backoff
        while True:
            started = loop.time()
            try:
                await run()
                return  # a loop that ends on its own has finished its work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.crashes += 1
                state.last_error = type(exc).__name__
                if loop.time() - started >= self.healthy_after:
                    delay = self.initial_backoff
                log.error("task_crashed", task=name, error=state.last_error, crashes=state.crashes, restart_in=delay)
            state.restarting = True
            try:
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
            finally:
                state.restarting = False
            delay = min(self.max_backoff, delay * 2)
            log.info("task_restarted", task=name)

    def unhealthy(self) -> dict[str, str]:
        """The tasks now waiting to be restarted after a crash, with the error type."""
        return {s.name: s.last_error for s in self.states.values() if s.restarting}

    async def stop(self, names: list[str] | None = None) -> None:
        """Cancel the named tasks (all by default) and wait for them to end."""
        chosen = [t for n, t in self._tasks.items() if names is None or n in names]
        for task in chosen:
            task.cancel()
        await asyncio.gather(*chosen, return_exceptions=True)
