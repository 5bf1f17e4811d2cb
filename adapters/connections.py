"""The open connections of an asyncio stream server, closed together on stop."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Connections"]


class Connections:
    """Tracks each connection's handler task and writer; `close_all` ends them on shutdown."""

    def __init__(self) -> None:
        self._open: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(self, writer: asyncio.StreamWriter) -> asyncio.Task[Any]:
        """Register the calling handler task with its writer; returns the task."""
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        return task

    def discard(self, task: asyncio.Task[Any]) -> None:
        self._open.pop(task, None)

    async def close_all(self, timeout: float = 5.0) -> None:
        """Abort the sockets, then wait for the handlers; cancel only those still running.

        Aborting rather than cancelling: Python 3.11's stream protocol logs a spurious error for a
        cancelled client_connected_cb task. A handler waiting on the store finishes its frame
        (its reply then fails harmlessly).
        """
        for writer in list(self._open.values()):
            writer.transport.abort()
        if self._open:
            _, pending = await asyncio.wait(list(self._open), timeout=timeout)
            for task in pending:
                task.cancel()
