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
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import NamedTuple

from hub.errors import HubError
from hub.message import Message
from hub.pipeline import Pipeline, StepContext
from hub.statuses import DeliveryStatus
from hub.store import SearchQuery, Store

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


async def sent_versions(store: Store, set_ids: Iterable[str], *, before: Message) -> dict[str, DocumentVersion]:
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
    pipeline: Pipeline, message: Message, ctx: StepContext, store: Store, executor: Executor | None
) -> Message:
    """Run the route's steps in ``executor``; when one asks for sent documents, look them up and run again."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(executor, pipeline.apply, message, ctx)
    except DocumentsNeeded as need:
        versions = await sent_versions(store, need.set_ids, before=message)
        known = dataclasses.replace(ctx, documents={**(ctx.documents or {}), **versions})
        return await loop.run_in_executor(executor, pipeline.apply, message, known)
