"""The names adapters and mappings build on are pinned; the envelope never shows its body."""

from __future__ import annotations

import hub
from hub.content_types import ContentType
from hub.message import Message, new_id


def test_public_names_are_pinned() -> None:
    assert hub.__all__ == sorted(hub.__all__)
    assert set(hub.__all__) == {
        "ComponentConfig", "ConfigError", "DeliveryError", "HubError", "MappingError", "Message", "MessageError",
        "NotConnected", "Outcome", "ParseError", "PeerReply", "Rejected", "ReplyKind", "Retryable", "StoreError",
        "TooLarge", "Unreachable", "ValidationError", "new_id", "register",
    }  # fmt: skip
    for name in hub.__all__:
        assert getattr(hub, name) is not None


def test_a_peer_reply_is_cut_to_its_bound_and_hides_its_bytes() -> None:
    reply = hub.PeerReply.of(hub.ReplyKind.HTTP, "422", b"SECRET" * 10, content_type="application/json", max_bytes=8)
    assert (reply.body, reply.size, reply.truncated) == (b"SECRETSE", 60, True)
    assert "SECRET" not in repr(reply) and "422" in repr(reply)
    assert reply.capped(4).body == b"SECR" and reply.capped(4).size == 60 and reply.capped(100) is reply
    whole = hub.PeerReply.of(hub.ReplyKind.SMTP, "250", b"250 ok")
    assert not whole.truncated and whole.size == 6
    error = hub.Rejected("AR", ack_code="AR").with_reply(whole)
    assert error.reply is whole and error.with_reply(reply).reply is whole  # the first one attached stays
    assert "250 ok" not in str(error)


def test_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(i[14] == "7" and i[19] in "89ab" for i in ids[:10])


def test_message_is_frozen_derives_with_lineage_and_hides_its_body() -> None:
    m = Message.new(b"MSH|^~\\&|SECRET", content_type=ContentType.HL7V2, metadata={"message_type": "ADT^A01"})
    assert m.correlation_id == m.id and m.parent_id is None
    d = m.derive(body=b"other", patient_key="X")
    assert (d.parent_id, d.correlation_id) == (m.id, m.id) and d.id != m.id
    assert d.metadata["message_type"] == "ADT^A01" and d.metadata["patient_key"] == "X"
    assert "patient_key" not in m.metadata
    assert "SECRET" not in repr(m) and "ADT^A01" in repr(m)
    try:
        m.body = b""  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("Message must be frozen")
    try:
        m.metadata["x"] = "y"  # type: ignore[index]
    except TypeError:
        pass
    else:
        raise AssertionError("metadata must be read-only")


def test_the_packages_ship_their_type_information() -> None:
    # PEP 561: without py.typed, a type checker in a user's project ignores our annotations.
    import importlib.resources
    import tomllib
    from pathlib import Path

    package_data = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in ("hub", "adapters", "mappings"):
        assert importlib.resources.files(package).joinpath("py.typed").is_file(), package
        assert "py.typed" in package_data["package-data"][package], package
