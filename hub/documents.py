"""The documents the hub registered earlier: what a correction replaces.

A corrected lab report (ORU with OBX-11 ``C``) or a replacing document must name the
uniqueId of the version it replaces (CDA relatedDocument/parentDocument/id, CI-SIS header
rule CI-SISRelatedDocument: never a nullFlavor). HL7 v2 does not carry it: the hub does. Every
delivery records what its route's steps added to the metadata (``output_metadata``: ``set_id``,
``unique_id``, ``version_number`` for a CDA), and the store indexes ``set_id`` as a business key
(``hub.store.KEY_SOURCES``), so the versions already sent of one document are an index look-up.

Steps stay pure: a step that needs the sent versions of a set (declared ``needs=("documents",)``)
raises :class:`DocumentsNeeded` when :attr:`hub.pipeline.StepContext.documents` is None;
:func:`apply_steps` looks those sets up and runs the steps again with the answer (an empty
answer meaning: never sent). Only corrections pay for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import NamedTuple

from hub.errors import HubError
from hub.message import Message
from hub.pipeline import Pipeline, StepContext
from hub.statuses import DeliveryStatus
from hub.store import SearchQuery, SearchStore

__all__ = ["DocumentVersion", "DocumentsNeeded", "apply_steps", "sent_versions"]

#: Messages read for one set: far more versions than any document has.
MAX_MESSAGES = 100


class DocumentVersion(NamedTuple):
    """The newest version of a set of documents the hub sent."""

    unique_id: str
    version: int


class DocumentsNeeded(HubError):
    """A step needs the versions the hub sent of these document sets (setIds); not an outcome."""

    def __init__(self, set_ids: Iterable[str]) -> None:
        self.set_ids = tuple(set_ids)
        super().__init__(f"needs the sent versions of {len(self.set_ids)} document set(s)")


async def sent_versions(store: SearchStore, set_ids: Iterable[str], *, before: Message) -> dict[str, DocumentVersion]:
    """setId -> its newest version delivered by a message received before ``before``.

    Only delivered deliveries count (a version the destination refused was never registered);
    a set the hub never sent is absent from the answer.
    """
    found: dict[str, DocumentVersion] = {}
    for set_id in set_ids:
        records = await store.search(SearchQuery(set_id=set_id, before_id=before.id, limit=MAX_MESSAGES))
        if not records:
            continue
        deliveries = await store.deliveries([r.message.id for r in records])
        for record in records:
            for delivery in deliveries.get(record.message.id, []):
                out = delivery.output_metadata
                unique_id, version = out.get("unique_id"), out.get("version_number", "")
                if delivery.status != DeliveryStatus.DELIVERED or out.get("set_id") != set_id or not unique_id:
                    continue
                if version.isdigit() and (set_id not in found or int(version) > found[set_id].version):
                    found[set_id] = DocumentVersion(unique_id, int(version))
    return found


async def apply_steps(
    pipeline: Pipeline, message: Message, ctx: StepContext, store: SearchStore, executor: Executor | None
) -> Message:
    """Run the route's steps (in ``executor``, or on the event loop when they are known to be short: see
    :func:`runs_inline`); when one asks for sent documents, look them up and run again."""
    try:
        return await _apply(pipeline, message, ctx, executor)
    except DocumentsNeeded as need:
        versions = await sent_versions(store, need.set_ids, before=message)
        known = dataclasses.replace(ctx, documents={**(ctx.documents or {}), **versions})
        return await _apply(pipeline, message, known, executor)


#: Steps run on the event loop's own thread when a recent run of the route's chain took less CPU than this.
INLINE_MAX_CPU_SECS = 0.010
#: ... and the message is no larger than this (a route's cost grows with its messages' size).
INLINE_MAX_BYTES = 64 * 1024
#: Weight of the newest run in the decaying cost (a slower run counts whole at once).
_COST_DECAY = 0.1


def runs_inline(pipeline: Pipeline, message: Message) -> bool:
    """Whether the steps run on the event loop instead of a worker thread.

    Why: handing a short chain to a worker thread costs more than the chain saves the loop. The thread
    and the loop take the GIL in turn at every call that releases it (an lxml parse or XPath, os.urandom,
    a socket, SQLite), each turn a pair of context switches with cold caches; for the DMP route
    (``bench/documents.py``) that was ~1 to 3 ms of CPU a document on ~4 ms of steps, 10 to 25 % of the
    hub's CPU. Nor does the thread keep the loop free: while it runs Python the loop waits for the GIL (up to
    the interpreter's switch interval, 5 ms). So a chain whose recent runs took under
    ``INLINE_MAX_CPU_SECS`` runs inline, on messages up to ``INLINE_MAX_BYTES``; the first run, a slow
    chain, a large message and any route with a ``python`` user step (user code may wait on I/O) run in
    the worker thread, as before.
    """
    cost = pipeline.cpu_secs
    return (
        pipeline.builtin_only
        and cost is not None
        and cost < INLINE_MAX_CPU_SECS
        and len(message.body) <= INLINE_MAX_BYTES
    )


def _timed(pipeline: Pipeline, message: Message, ctx: StepContext) -> Message:
    """``pipeline.apply``, noting the CPU time of the run (this thread's, so waits for the GIL do not count)."""
    started = time.thread_time()
    try:
        return pipeline.apply(message, ctx)
    finally:
        spent = time.thread_time() - started
        before = pipeline.cpu_secs
        pipeline.cpu_secs = spent if before is None else max(spent, before + _COST_DECAY * (spent - before))


async def _apply(pipeline: Pipeline, message: Message, ctx: StepContext, executor: Executor | None) -> Message:
    if runs_inline(pipeline, message):
        return _timed(pipeline, message, ctx)
    return await asyncio.get_running_loop().run_in_executor(executor, _timed, pipeline, message, ctx)
