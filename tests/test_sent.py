"""What was sent is kept: a delivery's steps run once, its retries resend the stored bytes (real MLLP
sockets, a user step that counts its calls and writes the count into the message), the admin API shows
them; an identity change or a requeue runs the steps again."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.store import IdentityRecord, SearchQuery
from tests.admin.adminkit import admin_hub
from tests.hubkit import FAST_RETRY, MllpClient, adt, default_route, mllp_port, wait_until

COUNTING_STEP = '''
from hub.message import Message

CALLS = []


def count(message: Message) -> Message:
    """A step whose output differs at every call: NTE|<n> appended, n its call count."""
    CALLS.append(message.id)
    return message.derive(body=message.body + f"NTE|{len(CALLS)}\\r".encode())
'''


@pytest.fixture
def counting(tmp_path: Path) -> Iterator[str]:
    """The module name of a fresh counting step under tmp_path/steps."""
    name = f"sent_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / f"{name}.py").write_text(COUNTING_STEP)
    yield name
    sys.modules.pop(name, None)
    folder = str((tmp_path / "steps").resolve())
    if folder in sys.path:
        sys.path.remove(folder)


def _route(module: str, *steps: Any) -> dict[str, Any]:
    retry = {**FAST_RETRY, "max_attempts": 10}
    return default_route(steps=[*steps, {"python": f"{module}:count"}], dest={"retry": retry})


def _every_body(peer: Any) -> list[bytes]:
    """Every frame the peer reads, refused ones included (it lists only those it accepted)."""
    seen: list[bytes] = []
    accept = peer._record_and_ack

    def spy(body: bytes) -> bytes:
        seen.append(body)
        return accept(body)  # type: ignore[no-any-return]

    peer._record_and_ack = spy
    return seen


async def _send_one(hub: Any, body: bytes) -> None:
    client = await MllpClient.connect(mllp_port(hub))
    try:
        assert b"MSA|AA" in await client.send(body)
    finally:
        await client.close()


async def _delivery(hub: Any, status: str) -> Any:
    async def found() -> Any:
        return await hub.store.find_deliveries(status=status)

    await wait_until(found, timeout=20)
    [d] = await found()
    return d


async def test_retries_resend_the_stored_bytes_and_the_api_shows_them(tmp_path: Path, counting: str) -> None:
    async with admin_hub(
        tmp_path, routes=[_route(counting)], peer={"ack": "AE"}, python_path=["steps"]
    ) as (hub, peer, apis):
        calls = importlib.import_module(counting).CALLS
        bodies = _every_body(peer)
        await _send_one(hub, adt("SENT1"))
        await wait_until(lambda: peer.count >= 3, timeout=20)  # three refusals: two retries
        peer.ack = "AA"
        d = await _delivery(hub, "delivered")
        assert d.attempts >= 4 and len(calls) == 1  # the step ran once, at the first attempt
        assert len(bodies) == d.attempts and len(set(bodies)) == 1 and bodies[0].endswith(b"NTE|1\r")

        base = f"/api/messages/{d.message_id}/deliveries/{d.id}"
        await apis["viewer"].get(f"{base}/sent", expect=403)
        sent = await apis["operator"].get(f"{base}/sent")
        assert sent["text"].encode() == bodies[0] and sent["changed"] and sent["size"] == len(bodies[0])
        assert (sent["route"], sent["destination"], sent["encoding"]) == ("adt", "dpi", "utf-8")
        await apis["operator"].get(f"/api/messages/{d.message_id}/deliveries/{d.id + 1000}/sent", expect=404)
        trace = await apis["viewer"].get(f"/api/messages/{d.message_id}")
        [traced] = trace["deliveries"]
        assert traced["sent"]["size"] == len(bodies[0]) and traced["sent"]["changed"] is True
        assert traced["sent"]["sent_id"] == sent["sent_id"] != d.message_id
        entries = (await apis["admin"].get("/api/audit", message_id=d.message_id))["items"]
        assert [(e["action"], e["outcome"]) for e in entries] == [("view_sent", "ok"), ("view_sent", "denied")]
        detail = {"delivery_id": d.id, "size": len(bodies[0]), "content_type": sent["content_type"],
                  "replies": d.attempts}  # fmt: skip
        assert entries[0]["detail"] == detail  # what was looked at, never the bytes

        # An operator's requeue runs today's steps again (the cause of a dead letter was fixed).
        assert (await apis["operator"].post("/api/dead/requeue", {"delivery_ids": [d.id]}))["requeued"] == 1
        await wait_until(lambda: peer.count > d.attempts, timeout=20)
        await _delivery(hub, "delivered")
        assert len(calls) == 2 and bodies[-1].endswith(b"NTE|2\r")
        assert (await apis["operator"].get(f"{base}/sent"))["text"].encode() == bodies[-1]


async def test_steps_that_read_the_identity_run_again_once_it_changed(tmp_path: Path, counting: str) -> None:
    routes = [_route(counting, "ins_stamp")]  # ins_stamp reads the patient's registry record
    async with admin_hub(tmp_path, routes=routes, peer={"ack": "AE"}, python_path=["steps"]) as (hub, peer, _apis):
        calls = importlib.import_module(counting).CALLS
        bodies = _every_body(peer)
        await _send_one(hub, adt("SENT2", patient="P42"))
        await wait_until(lambda: peer.count >= 2, timeout=20)
        assert len(calls) == 1  # no record yet: the output stays while nothing changes
        [rec] = await hub.store.search(SearchQuery(control_id="SENT2"))
        key = rec.message.metadata["patient_key"]
        await hub.store.save_identity(
            IdentityRecord(patient_key=key, authority=key.split("@")[1], local_id="P42", status="provisoire"),
            event="test", message_id=None,
        )  # fmt: skip
        seen = peer.count
        await wait_until(lambda: peer.count >= seen + 2, timeout=20)
        peer.ack = "AA"
        await _delivery(hub, "delivered")
        # once for "no record", once for version 1 of the record: not once per attempt
        assert len(calls) == 2
        ends = [b[-6:] for b in bodies]
        first = ends.index(b"NTE|2\r")  # every attempt before the change sent call 1's bytes, every one after call 2's
        assert ends == [b"NTE|1\r"] * first + [b"NTE|2\r"] * (len(ends) - first)
        assert first >= 2 and len(ends) - first >= 2


async def test_a_route_without_steps_keeps_nothing_and_shows_the_inbound_message(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as (hub, peer, apis):
        body = adt("SENT3")
        await _send_one(hub, body)
        d = await _delivery(hub, "delivered")
        assert await hub.store.sent_payloads([d.id]) == {}  # nothing stored twice
        sent = await apis["operator"].get(f"/api/messages/{d.message_id}/deliveries/{d.id}/sent")
    assert sent["text"].encode() == body == peer.bodies[0] and not sent["changed"] and sent["sent_id"] == d.message_id
