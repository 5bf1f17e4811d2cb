"""The identity registry as a hub service: apply ADT-derived updates, look patients up, release held messages.

Fed by IHE PAM France ADT (through the ``identity_registry`` destination,
``hub/identity_sink.py``, which reads the ADT with the ``identity_feed`` reader
of ``mappings/ins/feed.py`` and hands over each :class:`IdentityUpdate`), read by the delivery workers before steps that
need the identity (``ins_stamp``) and for destinations that require a
qualified INS.

Rules kept here (DOMAIN.md §1.4, §2.2, §8.1):

* an identity's INS is kept only while its status is *qualifiée*; an update
  that lowers the status (A47 downgrade, PID-32 ≠ VALI) or deletes the INS
  drops it;
* A40 merges: the absorbed patient key points at the surviving one
  (``merged_into``); look-ups follow that link, and messages held for the
  absorbed key are released with the survivor's;
* when an identity becomes qualified, every delivery held ``awaiting_identity``
  for it (or for a key merged into it) goes back to the queue, in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from hub.errors import StoreError
from hub.identity import IdentityStatus
from hub.store import IdentityRecord, Store

__all__ = ["ApplyResult", "IdentityRegistry", "IdentityUpdate"]

_MAX_MERGE_HOPS = 8


@dataclasses.dataclass(frozen=True, slots=True, repr=False, kw_only=True)
class IdentityUpdate:
    """What one identity message asks of the registry, in the hub's own terms (no parsing here)."""

    patient_key: str
    authority: str
    local_id: str
    event: str
    message_id: str | None
    status: str | None = None
    attributes: tuple[str, ...] = ()
    ins_action: str = "none"  # none | set | change | remove
    ins: str | None = None
    ins_oid: str | None = None
    traits: Mapping[str, str] | None = None
    merged_from: tuple[tuple[str, str, str], ...] = ()  # (patient_key, authority, local_id) absorbed (A40)
    note: str = ""

    def __repr__(self) -> str:
        return f"IdentityUpdate(event={self.event!r}, status={self.status!r}, ins_action={self.ins_action!r})"


@dataclasses.dataclass(frozen=True, slots=True)
class ApplyResult:
    record: IdentityRecord
    became_qualified: bool
    released: int


class IdentityRegistry:
    def __init__(self, store: Store, *, on_release: Callable[[], None] | None = None) -> None:
        self.store = store
        self.on_release = on_release

    async def lookup(self, patient_key: str) -> IdentityRecord | None:
        """The identity for a patient key, following A40 merges to the surviving identity."""
        record = await self.store.get_identity(patient_key)
        hops = 0
        while record is not None and record.merged_into and hops < _MAX_MERGE_HOPS:
            nxt = await self.store.get_identity(record.merged_into)
            if nxt is None:
                break
            record, hops = nxt, hops + 1
        return record

    async def apply(self, update: IdentityUpdate) -> ApplyResult:
        """Apply one update; retried once on a concurrent change (optimistic versioning)."""
        for attempt in range(2):
            try:
                return await self._apply(update)
            except StoreError as exc:
                if "version conflict" not in str(exc) or attempt:
                    raise
        raise AssertionError("unreachable")

    async def _apply(self, update: IdentityUpdate) -> ApplyResult:
        current = await self.store.get_identity(update.patient_key)
        was_qualified = current is not None and current.status == IdentityStatus.QUALIFIEE and current.ins is not None
        record = current or IdentityRecord(
            patient_key=update.patient_key,
            authority=update.authority,
            local_id=update.local_id,
            status=IdentityStatus.PROVISOIRE,
        )
        status = update.status or record.status
        ins, ins_oid = record.ins, record.ins_oid
        if update.ins_action in ("set", "change") and update.ins:
            ins, ins_oid = update.ins, update.ins_oid
        elif update.ins_action == "remove":
            ins, ins_oid = None, None
        if status != IdentityStatus.QUALIFIEE:
            # An INS is carried only by a qualified identity (PAM FR §6.6.15, DOMAIN.md §2.5).
            ins, ins_oid = None, None
        elif ins is None:
            document_checked = record.status in (IdentityStatus.VALIDEE, IdentityStatus.QUALIFIEE)
            status = IdentityStatus.VALIDEE if document_checked else record.status
        traits = dict(update.traits) if update.traits else dict(record.traits)
        new = dataclasses.replace(
            record, status=status, ins=ins, ins_oid=ins_oid, traits=traits,
            attributes=tuple(update.attributes) if update.status else record.attributes, merged_into=None,
        )  # fmt: skip
        saved = await self.store.save_identity(new, event=update.event, message_id=update.message_id, note=update.note)
        absorbed = [await self._absorb(key, auth, local, update) for key, auth, local in update.merged_from]
        is_qualified = saved.status == IdentityStatus.QUALIFIEE and saved.ins is not None
        released = 0
        if is_qualified and (not was_qualified or absorbed):
            keys = [saved.patient_key, *[k for k in absorbed if k]]
            keys += [r.patient_key for r in await self.store.identities_merged_into(saved.patient_key)]
            released = await self.store.release_held(sorted(set(keys)))
            if released and self.on_release:
                self.on_release()
        return ApplyResult(saved, is_qualified and not was_qualified, released)

    async def _absorb(self, key: str, authority: str, local_id: str, update: IdentityUpdate) -> str:
        """Point an absorbed identity (A40 MRG-1) at the surviving one."""
        if key == update.patient_key:
            return ""
        old = await self.store.get_identity(key) or IdentityRecord(
            patient_key=key, authority=authority, local_id=local_id, status=IdentityStatus.PROVISOIRE
        )
        merged = dataclasses.replace(old, merged_into=update.patient_key, ins=None, ins_oid=None)
        await self.store.save_identity(
            merged, event=update.event, message_id=update.message_id, note=f"merged into {update.patient_key}"
        )
        return key
