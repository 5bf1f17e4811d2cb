"""The content-search indexer: writes the searchable text of committed messages after their commit, off the ACK path.

A submit records only that its message awaits indexing (one narrow row in the store's pending table, in the same
transaction as the message); the trigram index itself is written later by :class:`ContentIndexer`, in batches, on a
task of its own. The pending table is the durable half: a message committed but not yet indexed when the process
died is still listed there and is indexed at the next start (the indexer drains the table before waiting for
anything), or by another node sharing the PostgreSQL store at its next sweep. Searches report what is still
pending (:class:`IndexLag`) so that a result missing a message just received says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from hub.errors import StoreError

log = structlog.get_logger("hub.store.content_index")

#: Messages indexed per transaction: large enough to amortise a transaction (FTS5 writes one segment per
#: transaction), small enough that the SQLite writer thread is never held long away from the group commit.
INDEX_BATCH = 128
#: Most pending rows counted when reporting the lag (bounded cost whatever the backlog).
LAG_COUNT_CAP = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class IndexLag:
    """Committed messages whose text is not yet in the content-search index."""

    pending: int
    """How many (counted up to LAG_COUNT_CAP)."""
    oldest_received_at: datetime | None = None
    """When the oldest of them was received; None when nothing is pending."""


class ContentIndexer:
    """Runs `index_batch` (index up to n pending messages, return how many it took) until nothing is pending,
    at start, after each wake-up (a commit) once `delay_secs` let more commits gather, and every `sweep_secs`
    (a PostgreSQL store shared by several nodes: what a node that died left pending is taken by the others)."""

    def __init__(
        self,
        index_batch: Callable[[int], Awaitable[int]],
        *,
        delay_secs: float = 0.05,
        sweep_secs: float = 30.0,
        batch: int = INDEX_BATCH,
    ) -> None:
        self._index_batch = index_batch
        self.delay_secs = delay_secs
        self.sweep_secs = sweep_secs
        self.batch = batch
        self._woken = asyncio.Event()
        self.caught_up = asyncio.Event()
        """Set once what was pending at start has been indexed."""
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._loop(), name="content-indexer")

    def wake(self) -> None:
        """Messages were committed: index them after `delay_secs`."""
        self._woken.set()

    async def close(self) -> None:
        """Stop the indexer; what is still pending stays listed for the next start."""
        # The flag and the wake-up end the loop at its next turn even if a library it awaits swallowed the
        # cancellation (asyncio.wait_for before Python 3.12 returns the result of an awaitable that finished in
        # the same turn as the cancel, CPython gh-86296): close() then never waits for ever.
        self._closing = True
        self._woken.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def drain(self) -> int:
        """Index everything pending now; returns how many messages were indexed."""
        total = 0
        while (n := await self._index_batch(self.batch)) > 0:
            total += n
            if n < self.batch:
                break
        return total

    async def _loop(self) -> None:
        retry = 1.0
        while not self._closing:
            try:
                await self.drain()
                self.caught_up.set()
                retry = 1.0
            except Exception as exc:  # store down (or a fault): the rows stay pending, tried again later
                text = str(exc) if isinstance(exc, StoreError) else type(exc).__name__  # never a payload
                log.warning("content_index_failed", error=text, retry_secs=retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, self.sweep_secs)
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 a wake() in the same turn as close()'s cancel made
            # wait_for return normally and swallow the cancel (CPython gh-86296), and close() waited for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sweep_secs):
                    await self._woken.wait()
            if self._closing:
                return
            if self._woken.is_set():
                await asyncio.sleep(self.delay_secs)
            self._woken.clear()
