"""The audit trail: who viewed which payload and who acted on what, hash-chained in the store.

Every entry's hash covers its own fields and the previous entry's hash
(``hub.store.base.audit_hash``), and ids follow each other without gaps, so
editing, deleting or reordering an entry is detected by :func:`verify_chain`
at the first entry it touches. Removing the *newest* entries cannot be seen
from the table alone: compare the head (id and hash, logged with each action
as ``audit_appended``) with a copy kept elsewhere.

Entries never hold a payload: the action, the message id, a target
(destination, review) and a small detail (filters, counts, ids).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import structlog

from hub.admin.auth import Principal
from hub.store import AuditEvent, AuditRecord, Store
from hub.store.base import AUDIT_GENESIS

__all__ = ["ChainReport", "record", "verify_chain"]

log = structlog.get_logger("hub.audit")


@dataclasses.dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    checked: int
    head_id: int
    head_hash: str
    first_bad_id: int | None = None
    problem: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def record(
    store: Store,
    who: Principal,
    action: str,
    *,
    message_id: str | None = None,
    target: str = "",
    detail: Mapping[str, Any] | None = None,
    outcome: str = "ok",
) -> AuditRecord:
    """Append one entry; raises StoreError when it cannot be kept (callers then refuse to go on)."""
    entry = await store.append_audit(
        AuditEvent(
            actor=who.name, role=who.role, action=action, message_id=message_id, target=target,
            detail=dict(detail or {}), outcome=outcome,
        )
    )  # fmt: skip
    log.info(
        "audit_appended", audit_id=entry.id, head=entry.hash, actor=who.name, action=action,
        message_id=message_id, outcome=outcome,
    )  # fmt: skip
    return entry


async def verify_chain(store: Store, *, page: int = 1000) -> ChainReport:
    """Walk the whole trail in order and check ids, links and hashes."""
    prev, expected_id, checked = AUDIT_GENESIS, 1, 0
    after = 0
    while True:
        batch = await store.audit_chain(after_id=after, limit=page)
        if not batch:
            break
        for entry in batch:
            problem = ""
            if entry.id != expected_id:
                problem = f"entry {expected_id} is missing"
            elif entry.prev_hash != prev:
                problem = "does not follow the previous entry (prev_hash differs)"
            elif entry.hash != entry.expected_hash():
                problem = "altered: its hash does not match its content"
            if problem:
                return ChainReport(False, checked, expected_id - 1, prev, first_bad_id=entry.id, problem=problem)
            prev, expected_id, checked = entry.hash, expected_id + 1, checked + 1
        after = batch[-1].id
    return ChainReport(True, checked, expected_id - 1, prev)
