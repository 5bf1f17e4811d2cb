"""INS guardrails end to end over MLLP: the registry fed by PAM FR ADT, holds released in order, reviews."""

from __future__ import annotations

import json
from pathlib import Path

from hub.store import SearchQuery, Store
from tests.hubkit import MllpClient, ack_fields, hub_cli, mllp_port, running_hub, running_peer, wait_until, write_config

INS = "279035121518989"  # the ANS test patient PAT-TROIS DOMINIQUE, INS-NIR test root (DOMAIN.md §2.6)
OID_TEST = "1.2.250.1.213.1.4.10"


def adt(
    control: str,
    event: str,
    *,
    vali: bool,
    ins: bool = True,
    given: str = "DOMINIQUE",
    ipp: str = "000003",
    mrg: str = "",
) -> bytes:
    pid3 = f"{ipp}^^^CHU-X&000897406&N^PI"
    if ins:
        pid3 += f"~{INS}^^^ASIP-SANTE-INS-NIR&{OID_TEST}&ISO^INS"
    structure = {"A40": "ADT_A39", "A47": "ADT_A30"}.get(event, "ADT_A05")
    segs = [
        f"MSH|^~\\&|GAM|CHU-X|HUB|CHU-X|20250301101500||ADT^{event}^{structure}|{control}|P|2.5^FRA^2.11|||||FRA"
        "|UNICODE UTF-8",
        "EVN||20250301101500",
        f"PID|1||{pid3}||PAT-TROIS^{given}^{given}^^^^L||19790328|F|||^^^^^^BDL^^51215|||||||||||||||||||||"
        f"{'VALI' if vali else 'PROV'}",
    ]
    if mrg:
        segs.append(f"MRG|{mrg}^^^CHU-X&000897406&N^PI")
    return ("\r".join(segs) + "\r").encode()


def oru(control: str, *, given: str = "DOMINIQUE", ipp: str = "000003") -> bytes:
    segs = [
        f"MSH|^~\\&|SIL|LABO|HUB|CHU-X|20250301110000||ORU^R01^ORU_R01|{control}|P|2.5|||||FRA|UNICODE UTF-8",
        f"PID|1||{ipp}^^^CHU-X&000897406&N^PI||PAT-TROIS^{given}^^^^^L||19790328|F",
        "OBR|1|C1|F1|2093-3^Cholesterol^LN|||20250301080000",
        "OBX|1|NM|2093-3^Cholesterol^LN||1.85|g/L^g/L^UCUM|1.50-2.00|N|||F",
    ]
    return ("\r".join(segs) + "\r").encode()


ROUTES = [
    {"route": "identity", "from": "mllp_in", "when": {"message_type": ["ADT^A28", "ADT^A31", "ADT^A47", "ADT^A40"]},
     "to": [{"destination": "registry", "ordering_key": "patient_key", "max_in_flight": 1,
             "retry": {"max_attempts": 3, "initial_secs": 0.05}}]},
    {"route": "results", "from": "mllp_in", "when": {"message_type": ["ORU^R01"]}, "steps": ["ins_stamp"],
     "to": [{"destination": "dpi", "ordering_key": "patient_key", "max_in_flight": 4, "require_qualified_ins": True,
             "retry": {"max_attempts": 3, "initial_secs": 0.05}}]},
]  # fmt: skip


async def statuses(store: Store, control_id: str) -> str:
    recs = await store.search(SearchQuery(control_id=control_id))
    return recs[0].status if recs else ""


async def test_hold_release_downgrade_merge_and_review(tmp_path: Path) -> None:
    async with running_peer() as peer:
        config = write_config(
            tmp_path,
            peer_port=peer.port,
            routes=ROUTES,
            environment="test",
            endpoints_extra={"registry": {"type": "identity_registry"}},
        )
        async with running_hub(config) as hub:
            store = hub.store
            assert store is not None
            client = await MllpClient.connect(mllp_port(hub))

            async def send(body: bytes) -> None:
                assert ack_fields(await client.send(body))["MSA"][1] == "AA"

            # 1. Provisional identity (PID-32 PROV): the INS sent is not trusted; the result waits.
            await send(adt("A1", "A28", vali=False))
            await send(oru("R1"))
            await send(oru("R2"))
            await wait_until(lambda: statuses(store, "R1"))

            async def held() -> bool:
                return await statuses(store, "R1") == "awaiting_identity"

            await wait_until(held)
            record = await hub.identity.lookup("000003@CHU-X")
            assert record is not None and record.status == "provisoire" and record.ins is None
            assert peer.bodies == []
            assert await statuses(store, "R2") == "pending"  # waits behind R1 (FIFO per patient)

            # 2. A31 qualifies it: both results go out, in order, stamped with the INS.
            await send(adt("A2", "A31", vali=True))
            await wait_until(lambda: len(peer.bodies) == 2)
            assert [b.split(b"|")[9] for b in peer.bodies] == [b"R1", b"R2"]
            pid = next(s for s in peer.bodies[0].split(b"\r") if s.startswith(b"PID"))
            assert f"{INS}^^^ASIP-SANTE-INS-NIR&{OID_TEST}&ISO^INS".encode() in pid
            assert pid.split(b"|")[32] == b"VALI"
            [r1] = await store.search(SearchQuery(control_id="R1"))
            assert r1.status == "delivered"
            [d1] = (await store.deliveries([r1.message.id]))[r1.message.id]
            assert d1.output_metadata["ins_stamped"] == "true" and d1.output_metadata["ins_oid"] == OID_TEST
            assert d1.output_metadata["ins_reason"] == "registry: qualified identity; traits agree"
            # The registry destination's reply says what it did (no identifier, no trait).
            [a2] = await store.search(SearchQuery(control_id="A2"))
            [to_registry] = (await store.deliveries([a2.message.id]))[a2.message.id]
            [applied] = await store.attempts(to_registry.id)
            assert applied.reply is not None and (applied.reply.kind, applied.reply.summary) == (
                "local", "applied 1 update(s)")  # fmt: skip
            assert applied.reply.body.startswith(b"qualifiee v") and INS.encode() not in applied.reply.body

            # 3. A47 downgrade (PID-32 PROV, INS removed): the next result waits again.
            await send(adt("A3", "A47", vali=False, ins=False, mrg="000003"))

            async def downgraded() -> bool:
                rec = await hub.identity.lookup("000003@CHU-X")
                return rec is not None and rec.status != "qualifiee"

            await wait_until(downgraded)
            await send(oru("R3"))

            async def r3_held() -> bool:
                return await statuses(store, "R3") == "awaiting_identity"

            await wait_until(r3_held)

            # 4. A40 merges a duplicate record (IPP 000099) into the qualified survivor: its result goes out.
            await send(adt("A4", "A31", vali=True))
            await wait_until(lambda: len(peer.bodies) == 3)
            await send(oru("R4", ipp="000099"))

            async def r4_held() -> bool:
                return await statuses(store, "R4") == "awaiting_identity"

            await wait_until(r4_held)
            await send(adt("A5", "A40", vali=True, mrg="000099"))
            await wait_until(lambda: len(peer.bodies) == 4)
            absorbed = await store.get_identity("000099@CHU-X")
            assert absorbed is not None and absorbed.merged_into == "000003@CHU-X"

            # 5. A twin's result (same name and birth date, another given name) goes to identity review.
            await send(oru("R5", given="LOU"))

            async def in_review() -> bool:
                return await statuses(store, "R5") == "identity_review"

            await wait_until(in_review)
            listed = await hub_cli("identity", "reviews", "--json", "--config", str(config), hub=hub)
            [review] = [json.loads(line) for line in listed.stdout.splitlines()]
            assert review["reason"] == "traits disagree with the registry: first_birth_given_name"
            assert "LOU" not in listed.stdout and INS not in review["reason"]
            resolved = await hub_cli(
                "identity",
                "resolve",
                str(review["review_id"]),
                "--release",
                "--yes",
                "--config",
                str(config),
                hub=hub,
            )
            assert json.loads(resolved.stdout)["state"] == "released"
            # the decision is in the audit trail with who took it (here the bootstrap token's principal)
            trail = await store.list_audit(limit=50)
            assert [(e.actor, e.outcome) for e in trail if e.action == "resolve_review"] == [("bootstrap", "ok")]
            hub._wake_all()
            await wait_until(lambda: len(peer.bodies) == 5)

            history = await store.identity_history("000003@CHU-X")
            assert [(h.event, h.status) for h in history] == [
                ("A28", "provisoire"),
                ("A31", "qualifiee"),
                ("A47", "provisoire"),
                ("A31", "qualifiee"),
                ("A40", "qualifiee"),
            ]
            listing = await hub_cli("identity", "list", "--json", "--config", str(config), hub=hub)
            rows = {r["patient_key"]: r for r in map(json.loads, listing.stdout.splitlines())}
            assert rows["000003@CHU-X"]["ins"] == INS and rows["000003@CHU-X"]["ins_oid"] == OID_TEST
            assert rows["000003@CHU-X"]["local_id"] == "000003" and rows["000003@CHU-X"]["authority"] == "CHU-X"
            assert rows["000099@CHU-X"]["merged_into"] == "000003@CHU-X"
            await client.close()


def test_ins_stamp_passes_a_fhir_body_without_patient_through_unstamped() -> None:
    from hub.content_types import ContentType
    from hub.pipeline import Pipeline, StepContext
    from hub.store import IdentityRecord

    record = IdentityRecord(
        patient_key="X@Y",
        authority="Y",
        local_id="X",
        status="qualifiee",
        ins=INS,
        ins_oid=OID_TEST,
        traits={
            "birth_name": "PAT-TROIS",
            "first_birth_given_name": "DOMINIQUE",
            "birth_date": "1979-03-28",
            "sex": "F",
            "birthplace_code": "51215",
            "birth_given_names": "DOMINIQUE",
        },
    )
    body = b'{"resourceType": "DocumentReference", "status": "current", "subject": {"reference": "Patient/1"}}'
    from hub.message import Message

    out = Pipeline(["ins_stamp"]).apply(Message.new(body, content_type=ContentType.FHIR), StepContext(identity=record))
    assert out.body == body and out.metadata["ins_stamped"] == "false"
    assert out.metadata["ins_reason"] == "no Patient resource in the FHIR body"
