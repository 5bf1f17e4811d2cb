"""PAM FR identity feeds in the hub's terms: an HL7 v2 ADT -> the identity registry's updates.

Registered as the ``identity_feed`` reader of HL7 v2 (:mod:`hub.registry`): the
``identity_registry`` destination (``hub/identity_sink.py``) reads a feed through it
and applies the updates; the PAM FR rule that an INS is trusted only with
PID-32 = VALI is applied by :func:`mappings.ins.read_identity_feed`.
"""

from __future__ import annotations

from hub.content_types import ContentType
from hub.identity.insi import traits_to_json
from hub.identity.oids import InsPolicy
from hub.identity_registry import IdentityUpdate
from hub.registry import register
from mappings.ins.pam import IdentityFeed, read_identity_feed

__all__ = ["hl7v2_identity_updates", "updates_from_feed"]


def updates_from_feed(feed: IdentityFeed, message_id: str | None) -> list[IdentityUpdate]:
    """One update per local identifier (PID-3 PI) the feed names."""
    traits = traits_to_json(feed.traits) if feed.traits is not None else None
    merged = tuple((p.patient_key, p.authority.key, p.value) for p in feed.prior_ids)
    note = f"INS ignored: {feed.ins_ignored.value}" if feed.ins_ignored else ""
    return [
        IdentityUpdate(
            patient_key=pid.patient_key,
            authority=pid.authority.key,
            local_id=pid.value,
            event=feed.event,
            message_id=message_id,
            status=feed.status.value if feed.status else None,
            attributes=tuple(a.value for a in feed.pid32.attributes),
            ins_action=feed.ins_action.value,
            ins=feed.ins.matricule if feed.ins else None,
            ins_oid=feed.ins.oid if feed.ins else None,
            traits=traits,
            merged_from=tuple(m for m in merged if m[0] != pid.patient_key),
            note=note,
        )
        for pid in feed.local_ids
    ]


@register("identity_feed", ContentType.HL7V2)
def hl7v2_identity_updates(body: bytes, *, policy: InsPolicy, message_id: str | None) -> list[IdentityUpdate]:
    """The updates an IHE PAM France ADT asks of the registry; MessageError when it cannot feed one."""
    return updates_from_feed(read_identity_feed(body, policy=policy), message_id)
