"""What the destination answered is kept with each attempt (real MLLP sockets, both stores): an AE then
an AA, each stored with its own attempt; the trace shows their summaries to every role, the `sent`
operation their bytes beside what was sent to operators only (audited); retention deletes them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.content_types import ContentType
from hub.message import utcnow
from tests.admin.adminkit import admin_hub
from tests.conftest import drop_pg_schema, new_pg_schema
from tests.hubkit import FAST_RETRY, MllpClient, adt, default_route, mllp_port, wait_until


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {"kind": "sqlite", "path": str(tmp_path / "hub.db")}
        return
    dsn, schema = await new_pg_schema()
    try:
        yield {"kind": "postgres", "dsn": dsn, "schema": schema, "pool_size": 4}
    finally:
        await drop_pg_schema(dsn, schema)


def _answers(peer: Any) -> list[bytes]:
    """Every ACK the peer writes, in order (the bytes the hub must keep)."""
    seen: list[bytes] = []
    answer = peer._record_and_ack

    def spy(body: bytes) -> bytes:
        ack: bytes = answer(body)
        seen.append(ack)
        return ack

    peer._record_and_ack = spy
    return seen


async def test_each_attempt_keeps_the_peer_reply_shown_beside_what_was_sent(
    tmp_path: Path, store_config: dict[str, Any]
) -> None:
    route = default_route(dest={"retry": {**FAST_RETRY, "max_attempts": 5}, "reply_max_bytes": 40})
    async with admin_hub(tmp_path, routes=[route], peer={"ack": "AE"}, store=store_config) as (hub, peer, apis):
        acks = _answers(peer)
        body = adt("REPLY1")
        client = await MllpClient.connect(mllp_port(hub))
        try:
            assert b"MSA|AA" in await client.send(body)
        finally:
            await client.close()
        await wait_until(lambda: peer.count >= 1, timeout=20)
        peer.ack = "AA"

        async def delivered() -> Any:
            return await hub.store.find_deliveries(status="delivered")

        await wait_until(delivered, timeout=20)
        [d] = await delivered()
        attempts = await hub.store.attempts(d.id)
        assert len(attempts) == d.attempts == len(acks) >= 2
        # Each attempt kept its own reply, cut to the route's 40 bytes: the first AE was not overwritten.
        for attempt, ack in zip(attempts, acks, strict=True):
            assert attempt.reply is not None and attempt.reply.body == ack[:40] and attempt.reply.size == len(ack)
            assert attempt.reply.truncated and attempt.reply.content_type == ContentType.HL7V2
        assert [a.reply.summary for a in attempts if a.reply] == ["AE"] * (len(acks) - 1) + ["AA"]

        # The trace (any role) gives each attempt's reply summary, never its bytes.
        trace = await apis["viewer"].get(f"/api/messages/{d.message_id}")
        log = trace["deliveries"][0]["attempts_log"]
        assert [a["reply"]["summary"] for a in log] == ["AE"] * (len(acks) - 1) + ["AA"]
        assert log[0]["reply"] == {
            "kind": "hl7v2-ack", "summary": "AE", "content_type": ContentType.HL7V2, "size": len(acks[0]),
            "truncated": True, "received_at": log[0]["reply"]["received_at"],
        }  # fmt: skip
        assert "MSA" not in str(trace["deliveries"])

        # The bytes: beside what was sent, for a role that may read payloads, recorded in the audit trail.
        base = f"/api/messages/{d.message_id}/deliveries/{d.id}/sent"
        await apis["viewer"].get(base, expect=403)
        sent = await apis["operator"].get(base)
        assert sent["text"].encode() == body
        assert [(r["number"], r["outcome"], r["summary"]) for r in sent["replies"]] == [
            (a.number, a.outcome, a.reply.summary) for a in attempts if a.reply
        ]
        assert [r["text"].encode() for r in sent["replies"]] == [ack[:40] for ack in acks]
        entries = (await apis["admin"].get("/api/audit", message_id=d.message_id))["items"]
        assert [e["action"] for e in entries] == ["view_sent", "view_sent"]
        assert entries[0]["detail"]["replies"] == len(acks) and "MSA" not in str(entries)

        # Retention deletes them with their message.
        assert await hub.store.purge(before=utcnow() + timedelta(seconds=1), statuses=("delivered",)) == 1
        assert await hub.store.attempts(d.id) == []
        await apis["operator"].get(f"/api/messages/{d.message_id}", expect=404)


async def test_a_refusal_keeps_its_reply_and_a_peer_that_said_nothing_has_none(tmp_path: Path) -> None:
    route = default_route(dest={"retry": {**FAST_RETRY, "max_attempts": 5}})
    async with admin_hub(tmp_path, routes=[route], peer={"ack": "AR", "drop_every": 1}) as (hub, peer, apis):
        acks = _answers(peer)
        client = await MllpClient.connect(mllp_port(hub))
        try:
            assert b"MSA|AA" in await client.send(adt("REPLY2"))
        finally:
            await client.close()
        await wait_until(lambda: peer.count >= 1, timeout=20)  # dropped without an answer: a retry
        peer.drop_every = 0

        async def dead() -> Any:
            return await hub.store.find_deliveries(status="dead")

        await wait_until(dead, timeout=20)
        [d] = await dead()
        first, last = await hub.store.attempts(d.id)
        assert first.reply is None and first.outcome == "retry"  # the connection closed: nothing to keep
        assert last.reply is not None and last.reply.summary == "AR" and last.reply.body == acks[-1]
        sent = await apis["operator"].get(f"/api/messages/{d.message_id}/deliveries/{d.id}/sent")
        assert [(r["number"], r["outcome"]) for r in sent["replies"]] == [(2, "reject")]
        assert "MSA|AR" in sent["replies"][0]["text"] and sent["replies"][0]["encoding"] == "utf-8"
