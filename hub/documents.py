"""The documents the hub registered earlier for a patient: what a correction replaces.

A corrected lab report (ORU with OBX-11 ``C``) or a replacing document must name the
uniqueId of the version it replaces (CDA relatedDocument/parentDocument/id, CI-SIS header
rule CI-SISRelatedDocument: never a nullFlavor). HL7 v2 does not carry it: the hub does. Every
delivery records what its route's steps added to the metadata (``output_metadata``: ``set_id``,
``unique_id``, ``version_number`` for a CDA), so the versions already sent for a set of documents
are found among the patient's earlier messages (an index scan on ``patient_key``), newest first.

Steps that declare ``needs=("documents",)`` receive the result in
:attr:`hub.pipeline.StepContext.documents`.
"""

from __future__ import annotations

from typing import NamedTuple

from hub.message import Message
from hub.store import SearchQuery, Store

__all__ = ["DocumentVersion", "earlier_documents"]

#: How many of the patient's earlier messages are read (a bound on the cost of one look-up).
MAX_MESSAGES = 200


class DocumentVersion(NamedTuple):
    """The newest version of a set of documents the hub sent."""

    unique_id: str
    version: int


async def earlier_documents(store: Store, message: Message, *, limit: int = MAX_MESSAGES) -> dict[str, DocumentVersion]:
    """setId -> newest version delivered before ``message``, among the same patient's messages.

    Only delivered deliveries count (a version the destination refused was never registered).
    Without a ``patient_key`` nothing can be looked up: empty.
    """
    key = message.metadata.get("patient_key", "")
    if not key:
        return {}
    records = await store.search(SearchQuery(patient_key=key, before_id=message.id, limit=limit))
    found: dict[str, DocumentVersion] = {}
    if not records:
        return found
    deliveries = await store.deliveries([r.message.id for r in records])
    for record in records:
        for delivery in deliveries.get(record.message.id, []):
            out = delivery.output_metadata
            set_id, unique_id, version = out.get("set_id"), out.get("unique_id"), out.get("version_number", "")
            if delivery.status != "delivered" or not set_id or not unique_id or not version.isdigit():
                continue
            if set_id not in found or int(version) > found[set_id].version:
                found[set_id] = DocumentVersion(unique_id, int(version))
    return found
