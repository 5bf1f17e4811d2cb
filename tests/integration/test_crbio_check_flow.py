"""Lab results the CR-BIO cannot be built from are refused before the ACK (listener check crbio_input).

The hub runs config/hub.yaml and routes/*.yaml as shipped, on real sockets. An ORU^R01 of results that
lab_to_dmp can turn into a CR-BIO is acknowledged AA; one whose results break a CR-BIO rule (no LOINC
code in OBX-3, an empty OBX-5, a preliminary result) is answered AR with an ERR at the field and kept as
rejected with the reason, instead of being acknowledged and dying at delivery. A replay runs the check
again: unchanged, the message is refused again; corrected, it is routed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.errors import MappingError
from hub.runtime import replay
from hub.store import SearchQuery
from tests.hubkit import MllpClient, ack_fields, running_hub
from tests.integration.test_default_config_flows import default_config_in
from tests.integration.test_dmp_flow import case

GOOD = case("crbio_chemistry_panel").decode()
CREATININE_CODE = "2160-0^Créatinine [Masse/Volume] Sérum/Plasma^LN"
CREATININE = f"OBX|2|NM|{CREATININE_CODE}||8,5|mg/l|"
POTASSIUM = "OBX|3|NM|2823-3^Potassium [Moles/Volume] Sérum/Plasma^LN||4.1|mmol/l|"
SODIUM_FINAL = "136-145|N|||F|"

# (control id, the edit, the ERR-2 location, words of the stored reason)
UNUSABLE = [
    ("CHEM-NOLOINC", (CREATININE, CREATININE.replace(CREATININE_CODE, "CREA^Créatinine^L")),
     "OBX^2^3", "no LOINC code"),
    ("CHEM-NOVALUE", (POTASSIUM, POTASSIUM.replace("||4.1|", "|||")), "OBX^3^5", "OBX-5 is empty"),
    ("CHEM-PRELIM", (SODIUM_FINAL, SODIUM_FINAL.replace("|F|", "|P|")), "OBX^4^11", "OBX-11 must be F, C or X"),
]  # fmt: skip


def oru(control_id: str, edit: tuple[str, str] | None = None) -> bytes:
    text = GOOD.replace("|CHEM-0001|", f"|{control_id}|")
    if edit is not None:
        assert text.count(edit[0]) == 1
        text = text.replace(*edit)
    return text.encode()


async def test_results_that_cannot_give_a_crbio_are_refused_ar_and_replay_checks_again(tmp_path: Path) -> None:
    config, ports = default_config_in(tmp_path)
    async with running_hub(config) as hub:
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(ports[2575])
        assert ack_fields(await client.send(oru("CHEM-OK")))["MSA"][1:3] == ["AA", "CHEM-OK"]
        [ok] = await store.search(SearchQuery(control_id="CHEM-OK"))
        assert ok.status != "rejected"

        for control_id, edit, location, why in UNUSABLE:
            ack = ack_fields(await client.send(oru(control_id, edit)))
            assert ack["MSA"][1:3] == ["AR", control_id]
            assert ack["ERR"][2] == location and ack["ERR"][3].startswith("207")
            [rec] = await store.search(SearchQuery(control_id=control_id))
            assert rec.status == "rejected" and why in rec.reason
            for value in ("Créatinine", "CREA", "TESTCHIMIE", "4.1"):  # no value of the message in the reason
                assert value not in rec.reason
        await client.close()

        # Replay runs the listener's checks: unchanged it is refused again, and the refusal is kept.
        [bad] = await store.search(SearchQuery(control_id="CHEM-NOVALUE"))
        with pytest.raises(MappingError, match="OBX-5 is empty"):
            await replay(store, hub.settings, bad.message.id)
        rejected = await store.search(SearchQuery(control_id="CHEM-NOVALUE", status="rejected"))
        assert len(rejected) == 2
        # A stored good message replayed with a body the CR-BIO cannot take is refused too.
        with pytest.raises(MappingError, match="no LOINC code"):
            await replay(store, hub.settings, ok.message.id, body=oru("CHEM-OK", UNUSABLE[0][1]))
        # Corrected, it is routed (lab_to_dmp and results_to_dpi).
        result = await hub.replay(bad.message.id, body=oru("CHEM-NOVALUE"))
        assert result.deliveries == 2 and not result.duplicate
