"""The listener check crbio_input refuses exactly what v2_oru_to_cda_crbio refuses from the results.

Each unusable ORU is refused by the check and by the mapping at the same HL7 location, with the
same reason (one implementation, :func:`mappings.cda.crbio._read_input`); messages that are not an
ORU of results pass the check untouched.
"""

from __future__ import annotations

import pytest

from hub.errors import MappingError
from mappings.cda.crbio import CrBioConfig, check_crbio_input, oru_to_crbio
from tests.mappings.test_volet_documents import case

CONFIG = CrBioConfig(
    document_id_root="1.2.250.1.999.7.1",
    author={"id": "810000000001", "family": "BIOLOGISTE"},
    custodian={"id": "1999000001", "name": "Laboratoire"},
    practice_setting={"code": "AMBULATOIRE", "display_name": "Ambulatoire", "code_system": "1.2.250.1.213.1.1.4.9"},
    healthcare_facility={"code": "SA25", "display_name": "LBM", "code_system": "1.2.250.1.71.4.2.4"},
)
GOOD = case("crbio_chemistry_panel")

# (what is wrong, text in the good ORU, its replacement, the HL7 location of the refusal)
UNUSABLE = [
    ("OBX-3 local code only", "2823-3^Potassium [Moles/Volume] Sérum/Plasma^LN", "K^Potassium^L", "OBX^3^3"),
    ("empty OBX-5", "||8,5|mg/l|", "|||mg/l|", "OBX^2^5"),
    ("preliminary result", "136-145|N|||F|", "136-145|N|||P|", "OBX^4^11"),
    ("NM value not a number", "||139|", "||cent trente-neuf|", "OBX^4^5"),
    ("unit without UCUM", "|mmol/l|3.5-5.0|", "|furlong|3.5-5.0|", "OBX^3^6"),
    ("flag outside CI-SIS", "|0.70-1.10|N|", "|0.70-1.10|ZZ|", "OBX^1^8"),
    ("OBX-14 not a timestamp", "|||20250314093000\rOBX|2|", "|||demain\rOBX|2|", "OBX^1^14"),
    ("SPM-18 not a timestamp", "|20250314083000\rPRT", "|hier\rPRT", "SPM^1^18"),
    ("OBX before any OBR", "\rOBR|1|", "\rNTE|1|", "OBX^1^1"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "location"), [u[1:] for u in UNUSABLE], ids=[u[0] for u in UNUSABLE])
def test_check_and_mapping_refuse_at_the_same_field(old: str, new: str, location: str) -> None:
    assert GOOD.count(old) == 1
    body = GOOD.replace(old, new).encode()
    with pytest.raises(MappingError) as by_check:
        check_crbio_input(body)
    with pytest.raises(MappingError) as by_mapping:
        oru_to_crbio(body, config=CONFIG)
    assert by_check.value.location == by_mapping.value.location == location
    assert by_check.value.reason == by_mapping.value.reason
    assert new.strip("|\r") not in by_check.value.reason  # the refused value is not quoted


def test_a_good_oru_and_other_messages_pass() -> None:
    assert check_crbio_input(GOOD.encode()) == {}
    oru_to_crbio(GOOD.encode(), config=CONFIG)  # the mapping takes what the check lets through
    for other in ("document_oru_embedded_cda", "document_mdm_t02_pdf_letter"):
        assert check_crbio_input(case(other).encode()) == {}  # volet documents: the v2_documents check
    adt = GOOD.replace("ORU^R01^ORU_R01", "ADT^A01^ADT_A01").replace("||8,5|", "|||")
    assert check_crbio_input(adt.encode()) == {}
