"""The hub keeps a DMP lot's codes inside the DMP value sets, and derives classCode from ASS_X04."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from hub.errors import MappingError
from mappings.cda.value_sets import value_set
from mappings.xds.dmp_value_sets import TYPE_CLASS_TABLE, class_for_type, is_member
from mappings.xds.jdv import from_fsh_value_set, from_nos_xml, load, load_map
from mappings.xds.metadata import _CONFIDENTIALITY_DISPLAY, _XDS_SD_FORMATS, CONFIDENTIALITY_SCHEME, IHE_FORMAT_SCHEME
from mappings.xds.v2_context import CONTENT_TYPE_SYSTEM, CONTENT_TYPES, DmpContextConfig, check_dmp_lot
from mappings.xds.visibility import VISIBILITY_CODES, VISIBILITY_SCHEME
from tests.conftest import SAMPLES
from tests.unit.test_xds_metadata import build, synthetic_cda, xds_config

TRE_A03 = "1.2.250.1.213.1.1.4.1"
TRE_A05 = "1.2.250.1.213.1.1.4.12"
LOINC = "2.16.840.1.113883.6.1"
PDF_BODY = (
    '<component><nonXMLBody><text mediaType="application/pdf" representation="B64">JVBERi0=</text>'
    "</nonXMLBody></component>"
)


def _code(code: str, scheme: str, display: str = "x") -> dict[str, str]:
    return {"code": code, "coding_scheme": scheme, "display_name": display}


def test_class_code_comes_from_ass_x04_when_the_type_has_no_setting() -> None:
    # 11490-0 is not in the test configuration's document_types; ASS_X04 gives it class 10.
    entry = build(synthetic_cda(type_code="11490-0", body=PDF_BODY)).document_entry
    assert (entry.class_code.code, entry.class_code.scheme, entry.class_code.display) == ("10", TRE_A03, "Compte rendu")


def test_a_configured_class_that_breaks_ass_x04_is_refused_when_the_configuration_loads() -> None:
    with pytest.raises(ValidationError, match=r"document_types\.11490-0\.class_code: 11 is not the class ASS_X04"):
        xds_config(document_types={"11490-0": {"class_code": _code("11", TRE_A03, "Synthèse")}})


def test_a_type_ass_x04_has_no_row_for_needs_a_configured_class() -> None:
    assert is_member("typeCode", "101881-1", LOINC) and class_for_type("101881-1", LOINC) is None
    cda = synthetic_cda(type_code="101881-1", body=PDF_BODY)
    with pytest.raises(MappingError, match="ASS_X04 has no class for typeCode 101881-1") as info:
        build(cda)
    assert info.value.location == "/ClinicalDocument/code"
    config = xds_config(document_types={"101881-1": {"class_code": _code("11", TRE_A03, "Synthèse")}})
    assert build(cda, config).document_entry.class_code.code == "11"


@pytest.mark.parametrize(
    ("cda", "meta", "reason", "location"),
    [
        (synthetic_cda(type_code="18842-5"), {}, "typeCode: 18842-5", "/ClinicalDocument/code"),
        (
            synthetic_cda().replace(b'code="SA25"', b'code="SA62"'),
            {},
            "healthcareFacilityTypeCode: SA62 (1.2.250.1.71.4.2.4) is not in JDV_J61",
            "/ClinicalDocument/componentOf/encompassingEncounter/location/healthCareFacility/code",
        ),
        (
            synthetic_cda().replace(b'code="AMBULATOIRE"', b'code="NOWHERE"'),
            {},
            "practiceSettingCode: NOWHERE",
            "standardIndustryClassCode",
        ),
        (synthetic_cda(), {"xds_content_type_code": "99"}, "contentTypeCode: 99 (1.2.250.1.213.2.2)", "PV1-2"),
    ],
)
def test_a_code_outside_its_dmp_value_set_is_refused_before_sending(
    cda: bytes, meta: dict[str, str], reason: str, location: str
) -> None:
    with pytest.raises(MappingError) as info:
        build(cda, **meta)
    assert reason in info.value.reason and location in (info.value.location or "")


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"content_type_code": _code("07", "1.2.3.4")}, "content_type_code: 07 (1.2.3.4) is not in JDV_J59"),
        ({"healthcare_facility_type_code": _code("SA99", "1.2.250.1.71.4.2.4")}, "is not in JDV_J61"),
        ({"practice_setting_code": _code("NOWHERE", "1.2.250.1.213.1.1.4.9")}, "is not in JDV_J04"),
        (
            {"document_types": {"11502-2": {"class_code": _code("99", TRE_A03)}}},
            "99 (1.2.250.1.213.1.1.4.1) is not in JDV_J57",
        ),
        (
            {"document_types": {"11502-2": {"format_code": _code("urn:unknown:format", "1.3.6.1.4.1.19376.1.2.3")}}},
            "document_types.11502-2.format_code: urn:unknown:format (1.3.6.1.4.1.19376.1.2.3) is not in JDV_J60",
        ),
    ],
)
def test_a_configured_code_outside_its_dmp_value_set_is_refused_when_the_configuration_loads(
    over: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        xds_config(**over)


def test_every_dmp_type_the_table_has_a_row_for_gets_a_dmp_class() -> None:
    # ASS_X04 is the CI-SIS table: its only class outside JDV_J57 is 99 (technical document), for a type
    # outside JDV_J66, which the hub refuses as a typeCode before any class is derived.
    table = load_map(TYPE_CLASS_TABLE)
    assert len(table.rows) > 100 and table.version and table.source
    outside = {source: target for source, target in table.rows.items() if not is_member("classCode", *target)}
    assert outside == {("FEUILLE-DE-STYLE", TRE_A05): ("99", TRE_A03)}
    assert all(is_member("classCode", *t) for s, t in table.rows.items() if is_member("typeCode", *s))
    cda = synthetic_cda(type_code="FEUILLE-DE-STYLE", body=PDF_BODY).replace(LOINC.encode(), TRE_A05.encode(), 1)
    with pytest.raises(
        MappingError, match=r"typeCode: FEUILLE-DE-STYLE \(1\.2\.250\.1\.213\.1\.1\.4\.12\) is not in JDV_J66"
    ):
        build(cda)


def test_the_dmp_types_are_ci_sis_types() -> None:
    # JDV_J66 (DMP) is a subset of JDV_J07 (CI-SIS), both 20240927120000: a J07 type may still be refused.
    j66 = load("JDV_J66-TypeCode-DMP")
    j07 = value_set("JDV_J07_XdsTypeCode_CISIS")
    assert all(code in j07 and system in j07.systems[code] for code, system in j66.concepts if system != "ASTM")
    assert "51851-4" in j07 and not is_member("typeCode", "51851-4", LOINC)


def test_the_formats_and_confidentiality_codes_the_hub_writes_are_dmp_codes() -> None:
    assert all(is_member("formatCode", code, IHE_FORMAT_SCHEME) for code, _ in _XDS_SD_FORMATS.values())
    assert all(is_member("confidentialityCode", code, CONFIDENTIALITY_SCHEME) for code in _CONFIDENTIALITY_DISPLAY)
    assert all(is_member("confidentialityCode", code, VISIBILITY_SCHEME) for code in VISIBILITY_CODES)


@pytest.mark.parametrize(
    "name",
    [
        "JDV_J57-ClassCode-DMP",
        "JDV_J58-ConfidentialityCode-DMP",
        "JDV_J60-FormatCode-DMP",
        "JDV_J59-ContentTypeCode-DMP",
        "JDV_J61-HealthcareFacilityTypeCode-DMP",
        "JDV_J65-SubjectRole-DMP",
    ],
)
def test_shipped_dmp_value_sets_say_their_version_and_origin(name: str) -> None:
    vs = load(name)
    assert vs.oid.startswith("1.2.250.1.213.1.1.5.") and len(vs.version) == 14 and vs.source and vs.concepts


# --------------------------------------------------------------------------- before the ACK (listener check)

LETTER = (SAMPLES / "mdm_t02_letter.hl7").read_bytes()
LETTER_TYPE = "11490-0^Lettre de liaison à la sortie d'un établissement de soins^LN".encode()


def test_the_tour_letter_passes_the_dmp_lot_check() -> None:
    assert check_dmp_lot(LETTER) == {}


@pytest.mark.parametrize(
    ("document_type", "reason"),
    [
        ("18842-5^Lettre^LN", "typeCode: 18842-5 (2.16.840.1.113883.6.1) is not in JDV_J66"),
        ("51851-4^Document administratif^LN", "typeCode: 51851-4 (2.16.840.1.113883.6.1) is not in JDV_J66"),
    ],
)
def test_a_document_type_that_cannot_give_a_dmp_lot_is_refused_before_the_ack(document_type: str, reason: str) -> None:
    message = LETTER.replace(LETTER_TYPE, document_type.encode())
    with pytest.raises(MappingError) as info:
        check_dmp_lot(message)
    assert reason in info.value.reason and info.value.location == "OBX^1^3"


def test_pv1_content_types_must_be_dmp_content_types() -> None:
    with pytest.raises(ValidationError, match=r"content_types\.O: 01 is not a TRE_R209 code of JDV_J59"):
        DmpContextConfig(content_types={"O": ("01", "Hospitalisation complète")})
    assert all(is_member("contentTypeCode", code, CONTENT_TYPE_SYSTEM) for code, _ in CONTENT_TYPES.values())


# --------------------------------------------------------------------------- the generator's readers

_NOS_ASS = b"""<?xml version="1.0" encoding="UTF-8"?>
<RetrieveValueSetResponse xmlns="urn:ihe:iti:svs:2008">
  <ValueSet id="9.9.9" dateMaj="20990101120000" displayName="ASS_TEST">
    <MappedConceptList>
      <MappedConcept><Concept code="T1" codeSystem="1.1"/><Concept code="C1" codeSystem="2.2"/></MappedConcept>
      <!-- a withdrawn row is a comment -->
      <MappedConcept><Concept code="T2" codeSystem="1.1"/><Concept code="C2" codeSystem="2.2"/></MappedConcept>
    </MappedConceptList>
  </ValueSet>
</RetrieveValueSetResponse>"""

_FSH = """ValueSet: JDV_TEST
* ^identifier.value = "urn:oid:9.9.8"
* ^version = "20990101120000"
* $TRE-R02-SecteurActivite#SA07 "Cabinet individuel"
* $TRE-A10-NomenclatureURN#urn:oid:1.2.3 "Un URN"
"""


def test_the_generator_reads_a_nos_association_table_and_an_fsh_value_set() -> None:
    ass = from_nos_xml(_NOS_ASS, "ASS_TEST", "here")
    assert ass == {
        "name": "ASS_TEST",
        "oid": "9.9.9",
        "version": "20990101120000",
        "source": "here",
        "rows": [["T1", "1.1", "C1", "2.2"], ["T2", "1.1", "C2", "2.2"]],
    }
    vs = from_fsh_value_set(_FSH, "JDV_TEST", "there")
    assert vs["oid"] == "9.9.8" and vs["version"] == "20990101120000"
    assert vs["concepts"] == [["SA07", "1.2.250.1.71.4.2.4", "Cabinet individuel"], ["urn:oid:1.2.3", "URN", "Un URN"]]
    with pytest.raises(ValueError, match="unknown code system alias"):
        from_fsh_value_set(_FSH.replace("TRE-R02-SecteurActivite", "TRE-R99-Inconnu"), "JDV_TEST", "there")
