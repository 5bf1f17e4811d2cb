"""The shipped configuration carries a Ségur letter (MDM^T02 with a PDF, MASQUE_PS=Y) to the DMP, as the tour shows.

`samples/mdm_t02_letter.hl7` goes over MLLP into the hub running `config/hub.yaml` as shipped (route
`documents_to_dmp`): the DMP sandbox registers it masked, with the lot signed, its author and structure from
the message's PRT SB.
"""

from __future__ import annotations

from pathlib import Path

from hub.store import SearchQuery
from tests.conftest import SAMPLES
from tests.hubkit import MllpClient, ack_fields, running_hub, wait_until
from tests.integration.test_default_config_flows import default_config_in


async def test_the_tour_letter_reaches_the_dmp_masked_and_signed(tmp_path: Path) -> None:
    config, ports = default_config_in(tmp_path)
    async with running_hub(config) as hub:
        client = await MllpClient.connect(ports[2575])
        for name in ("adt_a28.hl7", "adt_a31_qualified.hl7"):
            assert ack_fields(await client.send((SAMPLES / name).read_bytes()))["MSA"][1] == "AA"

        async def qualified() -> bool:
            record = await hub.identity.lookup("000003@CHU-X")
            return record is not None and record.status == "qualifiee"

        await wait_until(qualified, timeout=20)
        assert ack_fields(await client.send((SAMPLES / "mdm_t02_letter.hl7").read_bytes()))["MSA"][1] == "AA"
        dmp = hub.sandboxes["dmp_sandbox"]
        await wait_until(lambda: len(dmp.documents) == 1, timeout=30)
        [doc] = dmp.documents.values()
        assert doc.confidentiality == ["N", "MASQUE_PS"] and doc.type_code == "11490-0"
        assert doc.patient_id == "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
        assert doc.lot_author.startswith("810000000003^") and doc.vihf_structure == "1999000002"
        assert dmp.lot_signatures[doc.submission_set]  # the signed lot's signature document
        await client.close()


async def test_a_letter_whose_flags_cannot_give_a_lot_is_refused_ar_before_the_ack(tmp_path: Path) -> None:
    config, ports = default_config_in(tmp_path)
    bad = (SAMPLES / "mdm_t02_letter.hl7").read_text(encoding="utf-8")
    flag = "MODIF_CONF_CODE^Modification Confidentiality Code^MetaDMPMSS||"
    bad = bad.replace(flag + "N", flag + "Y").replace("|DOC0001|P|", "|DOC0002|P|")
    async with running_hub(config) as hub:
        client = await MllpClient.connect(ports[2575])
        ack = ack_fields(await client.send(bad.encode()))
        assert ack["MSA"][1] == "AR"
        assert "MODIF_CONF_CODE=Y on a creation" in "|".join(ack["ERR"])
        assert hub.store is not None
        [rec] = await hub.store.search(SearchQuery(control_id="DOC0002"))
        assert rec.status == "rejected" and "MODIF_CONF_CODE" in rec.reason
        assert hub.sandboxes["dmp_sandbox"].documents == {}
        await client.close()


async def test_a_letter_whose_type_cannot_give_a_dmp_lot_is_refused_ar_before_the_ack(tmp_path: Path) -> None:
    # 18842-5 (LOINC, a discharge summary code) is not in JDV_J66: the DMP would refuse the lot's typeCode.
    config, ports = default_config_in(tmp_path)
    letter_type = "11490-0^Lettre de liaison à la sortie d'un établissement de soins^LN"
    bad = (SAMPLES / "mdm_t02_letter.hl7").read_text(encoding="utf-8")
    bad = bad.replace(letter_type, "18842-5^Lettre^LN").replace("|DOC0001|P|", "|DOC0003|P|")
    async with running_hub(config) as hub:
        client = await MllpClient.connect(ports[2575])
        ack = ack_fields(await client.send(bad.encode()))
        assert ack["MSA"][1] == "AR"
        assert "typeCode: 18842-5 (2.16.840.1.113883.6.1) is not in JDV_J66" in "|".join(ack["ERR"])
        assert hub.store is not None
        [rec] = await hub.store.search(SearchQuery(control_id="DOC0003"))
        assert rec.status == "rejected" and "JDV_J66" in rec.reason
        assert hub.sandboxes["dmp_sandbox"].documents == {}
        await client.close()
