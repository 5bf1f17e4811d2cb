"""The `identity_registry` destination: IHE PAM France ADT in, identity registry updated.

A route sends identity messages (A28, A31, A47, A40, A01, A04, A05...) here,
usually ordered by ``patient_key`` so that a patient's updates apply in the
order the identity server sent them. The ADT is read by
``mappings.ins.read_identity_feed``; the PAM FR rule that an INS is trusted
only with PID-32 = VALI is applied there. The hub's registry service does
the rest (history, merges, releasing messages held for the patient).

An ADT that cannot feed the registry (no PID, no PI identifier, an event
outside PAM FR...) is rejected and dead-lettered with its reason.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from hub.environments import ins_environment
from hub.errors import MessageError, Rejected, Retryable, StoreError
from hub.identity.insi import traits_to_json
from hub.identity.oids import InsPolicy
from hub.identity_registry import IdentityUpdate
from hub.message import Message
from hub.registry import ComponentConfig, register
from mappings.ins import IdentityFeed, read_identity_feed

__all__ = ["IdentityRegistryConfig", "IdentityRegistrySink", "updates_from_feed"]



class IdentityRegistryConfig(ComponentConfig):
    environment: str | None = Field(
        None, description="INS policy environment (production refuses test/demo roots); default: the hub's."
    )


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


@register("outbound", "identity_registry", config=IdentityRegistryConfig, needs=("services",))
class IdentityRegistrySink:
    """Apply PAM FR identity feeds to the hub's identity registry."""

    def __init__(self, name: str, config: IdentityRegistryConfig, *, services: Any) -> None:
        self.name = name
        self.config = config
        self.services = services
        env = config.environment or services.config.environment
        self.policy = InsPolicy.for_environment(ins_environment(env))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, message: Message) -> None:
        try:
            feed = read_identity_feed(message.body, policy=self.policy)
        except MessageError as exc:
            raise Rejected(f"not a usable identity feed: {exc.reason}") from None
        try:
            for update in updates_from_feed(feed, message.id):
                await self.services.identity.apply(update)
        except StoreError as exc:
            raise Retryable(f"identity registry unavailable ({exc})") from None

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.name, "kind": "identity_registry"}
