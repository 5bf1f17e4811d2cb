"""The identity_registry destination: what it asks of the hub is AdapterServices, nothing more.

It reads a feed through the identity_feed reader registered for the message's content type and applies the
updates to a real identity registry over a real store; what no reader reads is rejected with its reason.
"""

from __future__ import annotations

import dataclasses

import pytest

from hub import registry
from hub.errors import Rejected
from hub.identity_registry import IdentityRegistry
from hub.identity_sink import IdentityRegistryConfig, IdentityRegistrySink
from hub.message import CONTENT_HL7V2, Message
from hub.ports import IdentityUpdates
from hub.store import Store
from tests.integration.test_identity_flow import adt


@dataclasses.dataclass(frozen=True)
class Services:
    """The whole of what the sink may use (hub.ports.AdapterServices)."""

    environment: str
    identity: IdentityUpdates


async def test_a_feed_updates_the_registry_and_an_unreadable_one_is_rejected(store: Store) -> None:
    identities = IdentityRegistry(store)
    sink = IdentityRegistrySink("registry", IdentityRegistryConfig(), services=Services("test", identities))
    assert registry.get("identity_feed", CONTENT_HL7V2) is not None

    await sink.send(Message.new(adt("S1", "A28", vali=True), content_type=CONTENT_HL7V2))
    record = await identities.lookup("000003@CHU-X")
    assert record is not None and record.status == "qualifiee" and record.ins

    with pytest.raises(Rejected, match="no identity feed reader for application/fhir\\+json"):
        await sink.send(Message.new(b"{}", content_type="application/fhir+json"))
    with pytest.raises(Rejected, match="not a usable identity feed"):
        await sink.send(Message.new(b"MSH|^~\\&|A|B|C|D|20250301||ORU^R01|X|P|2.5\r", content_type=CONTENT_HL7V2))
