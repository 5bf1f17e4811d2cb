"""XDS.b metadata for the DMP built from a synthetic CI-SIS CDA, compared slot by slot (DOMAIN.md §5.1)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import re
import string
from typing import Any

import pytest
from lxml import etree

from hub.errors import MappingError
from mappings.xds import (
    DE,
    SS,
    Author,
    Code,
    RegistryErrorInfo,
    Replacement,
    XdsMetadataConfig,
    build_submission,
    entry_uuid_for,
    find_documents_request,
    provide_and_register_request,
    read_find_documents_request,
    read_registry_response,
    read_submission,
    redact_context,
    registry_response,
    submission_set_unique_id,
)
from mappings.xds.ebrim import HAS_MEMBER, RPLC
from mappings.xds.hl7 import cx, hl7_ts_to_dtm, is_dtm, parse_cx, xcn, xon

# Synthetic identities only: INS-NIR *test* authority (.10), invented names and numbers (valid NIR keys).
TEST_INS = "292029955511146"
OTHER_INS = "179036312378935"
INS_TEST_ROOT = "1.2.250.1.213.1.4.10"
MESSAGE_ID = "019a0b0c-0d0e-7f00-8a00-000000000042"
SUBMITTED = dt.datetime(2025, 1, 3, 9, 15, 30, tzinfo=dt.UTC)

_CDA = string.Template("""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <realmCode code="FR"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="2.16.840.1.113883.2.8.2.1"/>
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <templateId root="1.2.250.1.213.1.1.1.55" extension="2024.01"/>
  <id root="1.2.250.1.999.7.1" extension="$doc_ext"/>
  <code code="$type_code" displayName="CR d'examens biologiques" codeSystem="2.16.840.1.113883.6.1"/>
  <title>Compte rendu d'examens biologiques</title>
  <effectiveTime value="20250102103000+0100"/>
  <confidentialityCode code="$confidentiality" displayName="Normal" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <setId root="1.2.250.1.999.7.2" extension="SET-0001"/>
  <versionNumber value="$version"/>
  $related
  <recordTarget>
    <patientRole>
      <id root="$ins_root" extension="$ins"/>
      <id root="1.2.250.1.999.7.3" extension="IPP-7777"/>
      <patient classCode="PSN">
        <name>
          <family qualifier="BR">$family</family>
          <given>JULIE MARIE</given>
          <given qualifier="BR">JULIE</given>
          <family qualifier="CL">TESTUSAGE</family>
        </name>
        <administrativeGenderCode code="F" displayName="Féminin" codeSystem="2.16.840.1.113883.5.1"/>
        <birthTime value="19920229"/>
        <birthplace><place><addr><county>63220</county><city>MAZOIRES</city></addr></place></birthplace>
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="20250102103000+0100"/>
    <assignedAuthor>
      <id root="1.2.250.1.71.4.2.1" extension="810000000002"/>
      <code code="G15_10/SM03" displayName="Médecin - Biologie médicale (SM)" codeSystem="1.2.250.1.213.1.1.4.5"/>
      <assignedPerson><name><given>SACHA</given><family>TESTBIO</family></name></assignedPerson>
      <representedOrganization>
        <id root="1.2.250.1.71.4.2.2" extension="1999000001"/>
        <name>Laboratoire synthétique</name>
      </representedOrganization>
    </assignedAuthor>
  </author>
  <custodian><assignedCustodian><representedCustodianOrganization>
    <id root="1.2.250.1.71.4.2.2" extension="1999000001"/><name>Laboratoire synthétique</name>
  </representedCustodianOrganization></assignedCustodian></custodian>
  $legal
  <documentationOf>
    <serviceEvent>
      <effectiveTime><low value="20250102080000+0100"/><high value="20250102100000+0100"/></effectiveTime>
      <performer typeCode="PRF"><assignedEntity>
        <id root="1.2.250.1.71.4.2.1" extension="810000000002"/>
        <representedOrganization>
          <standardIndustryClassCode code="AMBULATOIRE" displayName="Ambulatoire" codeSystem="1.2.250.1.213.1.1.4.9"/>
        </representedOrganization>
      </assignedEntity></performer>
    </serviceEvent>
  </documentationOf>
  <componentOf><encompassingEncounter>
    <effectiveTime><low value="20250102073000+0100"/></effectiveTime>
    <location><healthCareFacility>
      <code code="SA25" displayName="Laboratoire de biologie médicale" codeSystem="1.2.250.1.71.4.2.4"/>
    </healthCareFacility></location>
  </encompassingEncounter></componentOf>
  $body
</ClinicalDocument>
""")

_LEGAL = """<legalAuthenticator>
    <time value="20250102103000+0100"/><signatureCode code="S"/>
    <assignedEntity>
      <id root="1.2.250.1.71.4.2.1" extension="810000000002"/>
      <assignedPerson><name><given>SACHA</given><family>TESTBIO</family></name></assignedPerson>
    </assignedEntity>
  </legalAuthenticator>"""

_STRUCTURED = """<component><structuredBody><component><section>
    <title>Hématologie</title><text>Résultats synthétiques.</text>
  </section></component></structuredBody></component>"""


def synthetic_cda(**over: Any) -> bytes:
    """A small CI-SIS CR-BIO-like CDA; ``replaces="root^ext"`` adds a relatedDocument RPLC."""
    values = {
        "doc_ext": "DOC-1",
        "type_code": "11502-2",
        "confidentiality": "N",
        "version": "1",
        "ins": TEST_INS,
        "ins_root": INS_TEST_ROOT,
        "family": "TESTNAISSANCE",
        "legal": _LEGAL,
        "body": _STRUCTURED,
        "related": "",
    }
    replaces = over.pop("replaces", None)
    values.update(over)
    if replaces:
        root, _, ext = replaces.partition("^")
        values["related"] = (
            f'<relatedDocument typeCode="RPLC"><parentDocument><id root="{root}" extension="{ext}"/>'
            "</parentDocument></relatedDocument>"
        )
    return _CDA.substitute(values).encode("utf-8")


def xds_config(**over: Any) -> XdsMetadataConfig:
    """Metadata configuration of a synthetic laboratory feeding the DMP test environment."""
    data: dict[str, Any] = {
        "source_id": "1.2.250.1.999.7.100",
        "structure": {"id_nat": "1999000001", "name": "Laboratoire synthétique"},
        "submitter": {"id": "LPS-HUB-01", "family": "InteropHub", "given": "1.0", "device": True},
        "content_type_code": {"code": "07", "coding_scheme": "1.2.250.1.213.2.2", "display_name": "Consultation"},
        "document_types": {
            "11502-2": {
                "class_code": {"code": "10", "coding_scheme": "1.2.250.1.213.1.1.4.1", "display_name": "Compte rendu"},
                "format_code": {
                    "code": "urn:ihe:lab:xd-lab:2008",
                    "coding_scheme": "1.3.6.1.4.1.19376.1.2.3",
                    "display_name": "Compte rendu structuré d'examens de biologie médicale",
                },
            },
            "34133-9": {
                "class_code": {"code": "11", "coding_scheme": "1.2.250.1.213.1.1.4.1", "display_name": "Synthèse"}
            },
        },
        "environment": "test",
    }
    data.update(over)
    return XdsMetadataConfig.model_validate(data)


def build(cda: bytes | None = None, config: XdsMetadataConfig | None = None, **meta: str) -> Any:
    cda, config = cda or synthetic_cda(), config or xds_config()
    return build_submission(cda, config, submission_id=MESSAGE_ID, submission_time=SUBMITTED, metadata=meta)


def read_back(sub: Any) -> Any:
    """Serialise the ITI-41 body, parse it again (as a registry would) and read the ebRIM."""
    xml = etree.tostring(provide_and_register_request(sub))
    return read_submission(etree.fromstring(xml))


# --------------------------------------------------------------------------- DocumentEntry


def test_document_entry_slots_match_the_cda_and_the_dmp_conventions() -> None:
    cda = synthetic_cda()
    parsed = read_back(build(cda))
    [entry] = parsed.entries
    patient = f"{TEST_INS}^^^&{INS_TEST_ROOT}&ISO^NH"

    assert entry.object_type == DE.OBJECT_TYPE_STABLE
    assert entry.mime_type == "text/xml"
    assert entry.id == entry_uuid_for("1.2.250.1.999.7.1^DOC-1")
    assert entry.slots == {
        # CDA times are +0100: XDS DTM is UTC (ITI TF-3 §4.2.3.1.7)
        "creationTime": ["20250102093000"],
        "languageCode": ["fr-FR"],
        "legalAuthenticator": ["810000000002^TESTBIO^SACHA^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"],
        "serviceStartTime": ["20250102070000"],
        "serviceStopTime": ["20250102090000"],
        "sourcePatientId": ["IPP-7777^^^&1.2.250.1.999.7.3&ISO^PI"],
        "sourcePatientInfo": [
            "PID-5|TESTNAISSANCE^JULIE^JULIE MARIE^^^^L",
            "PID-7|19920229",
            "PID-8|F",
            "PID-11|^^^^^^BDL^^63220",
        ],
        "hash": [hashlib.sha1(cda).hexdigest()],
        "size": [str(len(cda))],
    }
    assert entry.title == "Compte rendu d'examens biologiques"
    assert entry.identifiers == {DE.PATIENT_ID: patient, DE.UNIQUE_ID: "1.2.250.1.999.7.1^DOC-1"}

    [author] = entry.codes(DE.AUTHOR)
    assert author.code == ""  # ITI TF-3 §4.2.3.1.4: nodeRepresentation="" for an author
    assert author.slots == {
        "authorPerson": ["810000000002^TESTBIO^SACHA^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"],
        "authorInstitution": ["Laboratoire synthétique^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1999000001"],
        "authorSpecialty": ["G15_10/SM03^Médecin - Biologie médicale (SM)^1.2.250.1.213.1.1.4.5"],
    }
    coded = {(c.scheme, c.code): (c.coding_scheme, c.display) for c in entry.classifications if c.scheme != DE.AUTHOR}
    assert coded == {
        (DE.CLASS_CODE, "10"): ("1.2.250.1.213.1.1.4.1", "Compte rendu"),
        (DE.TYPE_CODE, "11502-2"): ("2.16.840.1.113883.6.1", "CR d'examens biologiques"),
        (DE.FORMAT_CODE, "urn:ihe:lab:xd-lab:2008"): (
            "1.3.6.1.4.1.19376.1.2.3",
            "Compte rendu structuré d'examens de biologie médicale",
        ),
        (DE.HEALTHCARE_FACILITY_TYPE_CODE, "SA25"): ("1.2.250.1.71.4.2.4", "Laboratoire de biologie médicale"),
        (DE.PRACTICE_SETTING_CODE, "AMBULATOIRE"): ("1.2.250.1.213.1.1.4.9", "Ambulatoire"),
        (DE.CONFIDENTIALITY_CODE, "N"): ("2.16.840.1.113883.5.25", "Normal"),
    }
    assert parsed.documents[entry.id].text  # inline base64 when no XOP href is given


def test_document_bytes_round_trip_inline_and_as_xop_reference() -> None:
    cda = synthetic_cda()
    sub = build(cda)
    inline = provide_and_register_request(sub)
    doc = inline.find("{urn:ihe:iti:xds-b:2007}Document")
    assert doc is not None and doc.get("id") == sub.document_entry.entry_uuid
    assert base64.b64decode(doc.text or "") == cda
    xop = provide_and_register_request(sub, xop_href="cid:doc-1@hub")
    include = xop.find("{urn:ihe:iti:xds-b:2007}Document/{http://www.w3.org/2004/08/xop/include}Include")
    assert include is not None and include.get("href") == "cid:doc-1@hub"


def test_submission_set_and_has_member() -> None:
    sub = build()
    parsed = read_back(sub)
    [lot] = parsed.submission_sets
    assert lot.slots == {"submissionTime": ["20250103091530"]}
    assert lot.identifiers == {
        SS.UNIQUE_ID: submission_set_unique_id(MESSAGE_ID),
        SS.SOURCE_ID: "1.2.250.1.999.7.100",
        SS.PATIENT_ID: f"{TEST_INS}^^^&{INS_TEST_ROOT}&ISO^NH",
    }
    assert lot.identifiers[SS.UNIQUE_ID] == f"2.25.{int(MESSAGE_ID.replace('-', ''), 16)}"
    [content] = lot.codes(SS.CONTENT_TYPE_CODE)
    assert (content.code, content.coding_scheme, content.display) == ("07", "1.2.250.1.213.2.2", "Consultation")
    [author] = lot.codes(SS.AUTHOR)
    # No PRT SB in the message: the document's author, a person, and the structure he writes for.
    assert author.slots == {
        "authorPerson": ["810000000002^TESTBIO^SACHA^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"],
        "authorInstitution": ["Laboratoire synthétique^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1999000001"],
        "authorSpecialty": ["G15_10/SM03^Médecin - Biologie médicale (SM)^1.2.250.1.213.1.1.4.5"],
    }
    [member] = parsed.associations
    assert (member.type, member.source, member.target) == (HAS_MEMBER, lot.id, sub.document_entry.entry_uuid)
    assert member.slots == {"SubmissionSetStatus": ["Original"]}
    # A retried delivery of the same hub message resends the same lot.
    again = build()
    assert again.submission_set.unique_id == sub.submission_set.unique_id
    assert again.submission_set.entry_uuid == sub.submission_set.entry_uuid


def test_lot_author_defaults_to_the_document_author_and_content_type_can_come_from_the_message() -> None:
    sub = build(config=xds_config(submitter=None), xds_content_type_code="03", xds_content_type_display="Hospi")
    assert sub.submission_set.author.person == sub.document_entry.authors[0].person
    code = sub.submission_set.content_type_code
    assert (code.code, code.scheme, code.display) == ("03", "1.2.250.1.213.2.2", "Hospi")


def test_lot_author_is_the_prt_sb_sender_then_the_document_author_then_the_settings() -> None:
    # PRT SB (mappings.xds.v2_context keys): its own structure, even another one than the settings'.
    sub = build(
        xds_lot_author_id="810000000003",
        xds_lot_author_family="TESTSECR",
        xds_lot_author_given="ALIX",
        xds_lot_institution_id="1999000002",
        xds_lot_institution_name="Clinique synthétique",
    )
    lot = sub.submission_set.author
    assert lot.person == "810000000003^TESTSECR^ALIX^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    assert lot.institutions == ("Clinique synthétique^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1999000002",)
    # The sender is also the document's author: that author's specialty comes with him (VIHF role).
    same = build(xds_lot_author_id="810000000002").submission_set.author
    assert same.person.startswith("810000000002^TESTBIO^SACHA^") and same.specialties
    # An automated feed: the configured submitter, the configured structure.
    auto = build(config=xds_config(lot_author="submitter")).submission_set.author
    assert auto.person == "LPS-HUB-01^InteropHub^1.0^^^^^^&1.2.250.1.71.4.2.1&ISO^U^^^EI"
    with pytest.raises(MappingError, match="submitter"):
        build(config=xds_config(lot_author="submitter", submitter=None))
    # A structure the hub does not submit for is refused before anything is sent.
    with pytest.raises(MappingError, match="not one this hub submits for"):
        build(config=xds_config(allowed_structures=["1999000001"]), xds_lot_institution_id="1999000002")


def test_service_times_from_pv1_when_the_message_carried_them() -> None:
    entry = build(xds_service_start_time="20250101230000", xds_service_stop_time="20250102110000").document_entry
    assert (entry.service_start_time, entry.service_stop_time) == ("20250101230000", "20250102110000")


def test_replacement_from_the_cda_related_document_gives_an_rplc_association() -> None:
    previous = "1.2.250.1.999.7.1^DOC-1"
    sub = build(synthetic_cda(doc_ext="DOC-2", version="2", replaces=previous))
    assert sub.replaces is not None
    assert sub.replaces.unique_id == previous and sub.replaces.entry_uuid == entry_uuid_for(previous)
    parsed = read_back(sub)
    rplc = [a for a in parsed.associations if a.type == RPLC]
    assert [(a.source, a.target) for a in rplc] == [(sub.document_entry.entry_uuid, entry_uuid_for(previous))]
    # Or declared by the message when the CDA does not say it, with a known entryUUID.
    sub = build(synthetic_cda(doc_ext="DOC-3"), xds_replaces_unique_id=previous, xds_replaces_entry_uuid="urn:uuid:x")
    assert sub.replaces is not None and sub.replaces.entry_uuid == "urn:uuid:x"


def test_visibility_codes_from_config_and_message() -> None:
    sub = build(config=xds_config(visibility=["MASQUE_PS"]), xds_visibility="INVISIBLE_REP_LEGAUX, invisible_patient")
    codes = [(c.code, c.scheme) for c in sub.document_entry.confidentiality_codes]
    assert codes == [
        ("N", "2.16.840.1.113883.5.25"),
        ("MASQUE_PS", "1.2.250.1.213.1.1.4.13"),
        ("INVISIBLE_REPRESENTANTS_LEGAUX", "1.2.250.1.213.1.1.4.13"),
        ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13"),
    ]
    with pytest.raises(MappingError, match="visibility"):
        build(xds_visibility="SECRET")


def test_metadmpmss_flags_from_the_hl7v2_reader_become_confidentiality_codes() -> None:
    # The keys mappings.cda.hl7v2_documents writes (FLAG_KEYS), not a separate xds_ key.
    sub = build(mask_ps="Y", invisible_patient="N", invisible_legal_reps="Y")
    codes = [(c.code, c.scheme) for c in sub.document_entry.confidentiality_codes]
    assert codes == [
        ("N", "2.16.840.1.113883.5.25"),
        ("MASQUE_PS", "1.2.250.1.213.1.1.4.13"),
        ("INVISIBLE_REPRESENTANTS_LEGAUX", "1.2.250.1.213.1.1.4.13"),
    ]
    assert [c.code for c in build(mask_ps="N", invisible_patient="N").document_entry.confidentiality_codes] == ["N"]
    # What is written is what a registry reads back.
    [entry] = read_back(build(invisible_patient="Y")).entries
    assert [c.code for c in entry.codes(DE.CONFIDENTIALITY_CODE)] == ["N", "INVISIBLE_PATIENT"]


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ({"mask_ps": "O"}, "mask_ps must be Y or N"),
        ({"invisible_patient": "yes"}, "invisible_patient must be Y or N"),
        ({"confidentiality_update": "Y", "document_action": "create"}, "MODIF_CONF_CODE=Y on a creation"),
        ({"dest_mss_patient": "Y", "invisible_patient": "Y"}, "DESTMSSANTEPAT=Y with INVISIBLE_PATIENT=Y"),
        ({"dest_dmp": "N"}, "DESTDMP=N"),
    ],
)
def test_flags_that_cannot_give_a_valid_lot_are_refused(meta: dict[str, str], reason: str) -> None:
    with pytest.raises(MappingError, match=reason):
        build(**meta)


def test_a_masking_change_is_a_replacement() -> None:
    sub = build(
        synthetic_cda(doc_ext="DOC-2", replaces="1.2.250.1.999.7.1^DOC-1"),
        confidentiality_update="Y",
        document_action="replace",
        mask_ps="Y",
    )
    assert sub.replaces is not None
    assert [c.code for c in sub.document_entry.confidentiality_codes] == ["N", "MASQUE_PS"]


def test_level_one_cda_gets_the_xds_sd_format_of_its_body() -> None:
    body = (
        '<component><nonXMLBody><text mediaType="application/pdf" representation="B64">JVBERi0=</text>'
        "</nonXMLBody></component>"
    )
    sub = build(synthetic_cda(type_code="34133-9", body=body))
    fc = sub.document_entry.format_code
    assert (fc.code, fc.scheme) == ("urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3")
    with pytest.raises(MappingError, match="formatCode"):
        build(synthetic_cda(type_code="34133-9"))  # structured, and no format configured for that type


def test_config_codes_override_the_cda() -> None:
    facility = {"code": "SA01", "coding_scheme": "1.2.250.1.71.4.2.4", "display_name": "Etablissement public"}
    sub = build(config=xds_config(healthcare_facility_type_code=facility))
    assert sub.document_entry.healthcare_facility_type_code.code == "SA01"


# --------------------------------------------------------------------------- refusals (PHI-free)


def _refusal(cda: bytes, config: XdsMetadataConfig | None = None) -> str:
    with pytest.raises(MappingError) as info:
        build(cda, config)
    text = f"{info.value} {info.value.location}"
    for phi in (TEST_INS, OTHER_INS, "TESTNAISSANCE", "JULIE", "IPP-7777", "19920229", "63220"):
        assert phi not in text
    return text


def test_refuses_a_patient_without_an_ins_root() -> None:
    text = _refusal(synthetic_cda(ins_root="1.2.250.1.999.7.4"))
    assert "INS" in text and "patientRole/id" in text
    # INS-C (legacy, computed) is never an INS.
    _refusal(synthetic_cda(ins_root="1.2.250.1.213.1.4.2"))


def test_refuses_test_roots_in_production_and_bad_matricules() -> None:
    text = _refusal(synthetic_cda(), xds_config(environment="production"))
    assert "root_refused" in text
    text = _refusal(synthetic_cda(ins="29202995551114"))  # 14 characters
    assert "length" in text


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"type_code": "18842-5"}, "typeCode: 18842-5 (2.16.840.1.113883.6.1) is not in JDV_J66"),
        ({"legal": ""}, "legalAuthenticator is required"),
        ({"confidentiality": "U"}, "confidentialityCode must be N, R or V"),
        ({"family": "A^B"}, None),  # not a refusal: escaped, see below
    ],
)
def test_refusals_name_the_element(over: dict[str, str], expected: str | None) -> None:
    if expected is None:
        sub = build(synthetic_cda(**over))
        assert sub.document_entry.source_patient_info[0].startswith("PID-5|A\\S\\B^JULIE")
        return
    assert expected in _refusal(synthetic_cda(**over))


def test_not_a_cda_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="not a usable CDA"):
        build(b"<notcda/>")
    with pytest.raises(MappingError, match="not a usable CDA"):
        build(b"\x00garbage")


def test_repr_shows_no_patient_data() -> None:
    sub = build()
    assert TEST_INS not in repr(sub) and "TESTNAISSANCE" not in repr(sub)


# --------------------------------------------------------------------------- HL7 datatypes and registry side


def test_hl7_datatypes() -> None:
    assert cx("A^B", "1.2.3", "PI") == "A\\S\\B^^^&1.2.3&ISO^PI"
    assert parse_cx(f"{TEST_INS}^^^&{INS_TEST_ROOT}&ISO^NH") == (TEST_INS, INS_TEST_ROOT, "ISO", "NH")
    assert parse_cx("nothing") is None
    assert xcn("1", "F", "G", "1.2") == "1^F^G^^^^^^&1.2&ISO^D^^^IDNPS"
    assert xon("Org & Co", "1.2", "9") == "Org \\T\\ Co^^^^^&1.2&ISO^IDNST^^^9"


@pytest.mark.parametrize(
    ("ts", "dtm"),
    [
        ("20250102103000+0100", "20250102093000"),
        ("20250101003000+0200", "20241231223000"),
        ("202501021030-0500", "202501021530"),
        ("20250102", "20250102"),
        ("20250102+0100", "20250102"),
        ("20250102103000.123+0000", "20250102103000"),
        ("20250102103000", "20250102103000"),
    ],
)
def test_ts_to_utc_dtm(ts: str, dtm: str) -> None:
    assert hl7_ts_to_dtm(ts) == dtm
    assert is_dtm(dtm)


def test_dtm_validation() -> None:
    assert not is_dtm("2025-01-02") and not is_dtm("202513") and not is_dtm("2025010")
    with pytest.raises(ValueError):
        hl7_ts_to_dtm("2025-01-02")


def test_registry_response_round_trip_and_redaction() -> None:
    errors = [
        RegistryErrorInfo("XDSUnknownPatientId", f"patient {TEST_INS}^^^&{INS_TEST_ROOT}&ISO^NH unknown"),
        RegistryErrorInfo("XDSExtraMetadataNotSaved", "", "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"),
    ]
    xml = etree.tostring(registry_response("Failure", errors))
    result = read_registry_response(etree.fromstring(xml))
    assert result.status == "Failure"
    assert result.codes() == ["XDSUnknownPatientId", "XDSExtraMetadataNotSaved"]
    assert [e.is_error for e in result.errors] == [True, False]
    redacted = redact_context(result.errors[0].context)
    assert TEST_INS not in redacted and "unknown" in redacted
    assert redact_context("document 1.2.250.1.999 already there") == "document … already there"
    assert read_registry_response(registry_response("PartialSuccess")).status == "PartialSuccess"


def test_find_documents_request_round_trip() -> None:
    pid = f"{TEST_INS}^^^&{INS_TEST_ROOT}&ISO^NH"
    query = etree.fromstring(etree.tostring(find_documents_request(pid, return_type="ObjectRef")))
    qid, rtype, params = read_find_documents_request(query)
    assert (qid, rtype) == ("urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", "ObjectRef")
    assert params == {
        "$XDSDocumentEntryPatientId": [pid],
        "$XDSDocumentEntryStatus": ["urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"],
    }


def test_author_institution_and_legal_authenticator_come_from_the_cda_header_settings_as_fallback() -> None:
    # The CDA names another structure than the settings: the document's own wins.
    other = synthetic_cda().replace(
        b'extension="1999000001"/>\n        <name>Laboratoire', b'extension="1999000042"/>\n        <name>Laboratoire'
    )
    entry = build(other).document_entry
    assert entry.authors[0].institutions == ("Laboratoire synthétique^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1999000042",)
    assert entry.legal_authenticator.startswith("810000000002^TESTBIO^SACHA^")
    # No representedOrganization: the configured structure.
    bare = re.sub(
        rb"<representedOrganization>\s*<id[^>]*/>\s*<name>[^<]*</name>\s*</representedOrganization>", b"", other
    )
    assert build(bare).document_entry.authors[0].institutions == (
        "Laboratoire synthétique^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1999000001",
    )
    # No legalAuthenticator: the submitter when it is a person, refused when it is a device.
    person = xds_config(submitter={"id": "810000000099", "family": "RESPONSABLE", "given": "ALEX"})
    legal = build(synthetic_cda(legal=""), person).document_entry.legal_authenticator
    assert legal.startswith("810000000099^RESPONSABLE^ALEX^") and legal.endswith("IDNPS")
    with pytest.raises(MappingError, match="legalAuthenticator is required"):
        build(synthetic_cda(legal=""))


@pytest.mark.parametrize("value", ['a "quoted" & <tagged> ]]>', "line\nbreak\ttab\rcr", "", "Été, ñ, 中文, 'single'"])
def test_every_value_reads_back_as_written(value: str) -> None:
    """The ITI-41 ebRIM is written as text: quotes, markup characters, white space and empty values survive."""
    sub = build()
    de = dataclasses.replace(
        sub.document_entry,
        title=value,
        legal_authenticator=value,
        source_patient_info=(value, f"PID-5|{value}"),
        authors=(Author(person=value, institutions=(value,), roles=(value,), specialties=(value,)),),
        class_code=Code(value, value, value),
    )
    lot = dataclasses.replace(sub.submission_set, title=value)
    sub = dataclasses.replace(sub, document_entry=de, submission_set=lot, replaces=Replacement("1.2.3", value))
    parsed = read_back(sub)
    [entry] = parsed.entries
    assert entry.title == value and entry.slots["legalAuthenticator"] == [value]
    assert entry.slots["sourcePatientInfo"] == [value, f"PID-5|{value}"]
    [author] = entry.codes(DE.AUTHOR)
    assert author.slots == {k: [value] for k in ("authorPerson", "authorInstitution", "authorRole", "authorSpecialty")}
    klass = entry.code(DE.CLASS_CODE)
    assert klass is not None and (klass.code, klass.coding_scheme, klass.display) == (value, value, value)
    assert parsed.submission_sets[0].title == value
    assert [a.target for a in parsed.associations if a.type == RPLC] == [value]


def test_is_dtm_refuses_what_strptime_refuses() -> None:
    # The calendar check is datetime() on the two-digit fields; strptime with the DTM's format was the reference.
    def by_strptime(value: str) -> bool:
        fmt = "%Y%m%d%H%M%S"[: len(value) - 2]
        try:
            dt.datetime.strptime(value, fmt)
        except ValueError:
            return False
        return True

    pairs = [f"{i:02d}" for i in range(100)]
    for year in ("0000", "0001", "2024", "2025", "9999"):
        assert is_dtm(year) == by_strptime(year)
        for month in pairs:
            assert is_dtm(year + month) == by_strptime(year + month)
            for day in pairs:
                assert is_dtm(year + month + day) == by_strptime(year + month + day), year + month + day
    for tail in (a + b + c for a in pairs[::3] for b in pairs[55:65] for c in pairs[55:65]):
        assert is_dtm("20240229" + tail) == by_strptime("20240229" + tail), tail
    assert not is_dtm("2025030") and not is_dtm("2025x301") and not is_dtm("202503011015000")
