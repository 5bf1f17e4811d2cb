"""The `identity_registry` destination: identity feeds in, the hub's identity registry updated.

A route sends identity messages (IHE PAM France A28, A31, A47, A40, A01, A04,
A05...) here, usually ordered by ``patient_key`` so that a patient's updates
apply in the order the identity server sent them. The destination writes no
wire: it reads the feed with the ``identity_feed`` reader registered for the
message's content type (HL7 v2: ``mappings/ins/feed.py``, where the PAM FR rule
that an INS is trusted only with PID-32 = VALI is applied) and hands each
:class:`~hub.identity_registry.IdentityUpdate` to the registry, which does the
rest (history, merges, releasing messages held for the patient). It reaches the
hub only through :class:`~hub.ports.AdapterServices`.

A feed that cannot update the registry (no PID, no PI identifier, an event
outside PAM FR, a content type with no feed reader...) is rejected and
dead-lettered with its reason.

Its reply (kind ``local``) says what the registry did: records updated, their statuses and versions,
deliveries released; no identifier or trait.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from hub import registry
from hub.environments import ins_environment
from hub.errors import MessageError, Rejected, Retryable, StoreError
from hub.identity.oids import InsPolicy
from hub.message import Message
from hub.ports import AdapterServices
from hub.registry import ComponentConfig, register
from hub.replies import PeerReply, ReplyKind

__all__ = ["IdentityRegistryConfig", "IdentityRegistrySink"]


class IdentityRegistryConfig(ComponentConfig):
    environment: str | None = Field(
        None, description="INS policy environment (production refuses test/demo roots); default: the hub's."
    )


@register("outbound", "identity_registry", config=IdentityRegistryConfig, needs=("services",))
class IdentityRegistrySink:
    """Apply PAM FR identity feeds to the hub's identity registry."""

    def __init__(self, name: str, config: IdentityRegistryConfig, *, services: AdapterServices) -> None:
        self.name = name
        self.config = config
        self.services = services
        env = config.environment or services.environment
        self.policy = InsPolicy.for_environment(ins_environment(env))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, message: Message) -> PeerReply:
        reader = registry.get("identity_feed", message.content_type)
        if reader is None:
            raise Rejected(f"not a usable identity feed: no identity feed reader for {message.content_type}")
        try:
            updates = reader.factory(message.body, policy=self.policy, message_id=message.id)
        except MessageError as exc:
            raise Rejected(f"not a usable identity feed: {exc.reason}") from None
        lines: list[str] = []
        try:
            for update in updates:
                result = await self.services.identity.apply(update)
                lines.append(
                    f"{result.record.status} v{result.record.version}"
                    f"{' qualified' if result.became_qualified else ''} released={result.released}"
                )
        except StoreError as exc:
            raise Retryable(f"identity registry unavailable ({exc})") from None
        summary = f"applied {len(lines)} update(s)"
        return PeerReply.of(ReplyKind.LOCAL, summary, "\n".join(lines).encode(), content_type="text/plain")

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.name, "kind": "identity_registry"}
