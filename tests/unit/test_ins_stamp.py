"""INS stamping in HL7 v2, CDA R2 and FHIR R4 FR Core, checked element by element against DOMAIN.md.

The identity stamped is the ANS test patient PAT-TROIS DOMINIQUE (test INS
279035121518989, OID .10), or synthetic variations of it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient
from lxml import etree

from hub.errors import MappingError, ParseError, ValidationError
from hub.identity import (
    FR_CORE_IDENTITY_STATUS_SYSTEM,
    FR_CORE_STATUS_COMMENT_SYSTEM,
    FR_CORE_V2_0445_SYSTEM,
    INS_NIA_OID,
    INS_NIR_DEMO_OID,
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    IdentityAttribute,
    IdentityStatus,
    InsPolicy,
    Sex,
    StrictTraits,
)
from mappings.cda import read_cda_header, validate_cda_header
from mappings.hl7v2.er7 import Er7Message
from mappings.ins import (
    IdentityFeed,
    InsAction,
    StampIdentity,
    read_identity_feed,
    stamp_cda,
    stamp_fhir,
    stamp_hl7v2,
)
from mappings.ins.stamp_fhir import (
    BIRTH_LIST_GIVEN_NAME_URL,
    BIRTH_PLACE_URL,
    FR_CORE_V2_0203_SYSTEM,
    IDENTITY_RELIABILITY_URL,
    INSEE_CODE_SYSTEM,
    INSEE_CODE_URL,
)
from mappings.xml import parse_xml

TEST_INS = "279035121518989"
CDA_HEADER = Path(__file__).resolve().parent.parent / "data" / "cda" / "minimal_header.xml"
NS = {"h": "urn:hl7-org:v3"}

TRAITS = StrictTraits(
    birth_name="PAT-TROIS",
    first_birth_given_name="DOMINIQUE",
    birth_date=dt.date(1979, 3, 28),
    sex=Sex.FEMALE,
    birthplace_code="51215",
    birth_given_names="DOMINIQUE MARIE-LOUISE",
)
IDENTITY = StampIdentity(ins=TEST_INS, ins_oid=INS_NIR_TEST_OID, status=IdentityStatus.QUALIFIEE, traits=TRAITS)


def with_(identity: StampIdentity = IDENTITY, **changes: Any) -> StampIdentity:
    return dataclasses.replace(identity, **changes)


def assert_masked(text: str) -> None:
    for secret in (TEST_INS, "PAT-TROIS", "DOMINIQUE"):
        assert secret not in text


# --------------------------------------------------------------------------- StampIdentity


def test_stamp_identity_shape_and_repr() -> None:
    assert_masked(repr(IDENTITY))
    assert IDENTITY.authority.hl7_namespace == "ASIP-SANTE-INS-NIR"
    with pytest.raises(ValidationError):
        with_(ins_oid="1.2.250.1.213.1.4.2")  # INS-C is no INS root
    with pytest.raises(ValidationError):
        with_(ins="27903512151898")
    assert with_(used_family_name="  ").used_family_name is None


def test_stamp_identity_from_feed() -> None:
    body = ADT_PROVISIONAL.replace(b"PROV~HOMA", b"VALI~HOMA")
    feed = read_identity_feed(body.replace(b"^NH^^20210506||", b"^NH^^20210506~" + NIR_TEST + b"||"))
    assert isinstance(feed, IdentityFeed) and feed.ins_action is InsAction.SET
    identity = StampIdentity.from_feed(feed)
    assert (identity.ins, identity.ins_oid, identity.status) == (TEST_INS, INS_NIR_TEST_OID, IdentityStatus.QUALIFIEE)
    assert identity.source == "adt" and identity.local_id == feed.local_ids[0]
    assert identity.attributes == {IdentityAttribute.HOMA}
    with pytest.raises(MappingError):
        StampIdentity.from_feed(read_identity_feed(ADT_PROVISIONAL))


# --------------------------------------------------------------------------- refusals (all formats)

NOT_STAMPABLE = [
    pytest.param(with_(status=IdentityStatus.PROVISOIRE), id="provisoire"),
    pytest.param(with_(status=IdentityStatus.RECUPEREE), id="recuperee"),
    pytest.param(with_(status=IdentityStatus.VALIDEE), id="validee"),
    pytest.param(with_(attributes=frozenset({IdentityAttribute.DOUT})), id="douteuse"),
    pytest.param(with_(traits=dataclasses.replace(TRAITS, birth_given_names="")), id="no-given-name-list"),
]


@pytest.mark.parametrize("identity", NOT_STAMPABLE)
@pytest.mark.parametrize("stamper", ["v2", "cda", "fhir"])
def test_only_a_qualified_identity_is_stamped(stamper: str, identity: StampIdentity) -> None:
    body, stamp = {
        "v2": (ADT_PROVISIONAL, stamp_hl7v2),
        "cda": (CDA_HEADER.read_bytes(), stamp_cda),
        "fhir": (json.dumps(TDDUI_PATIENT).encode(), stamp_fhir),
    }[stamper]
    with pytest.raises(MappingError) as err:
        stamp(body, identity)  # type: ignore[operator]
    assert_masked(str(err.value))


def test_policy_refuses_a_test_root_in_production() -> None:
    with pytest.raises(MappingError) as err:
        stamp_hl7v2(ADT_PROVISIONAL, IDENTITY, policy=InsPolicy.for_environment("production"))
    assert "root_refused" in str(err.value)
    assert_masked(str(err.value))
    stamp_hl7v2(ADT_PROVISIONAL, IDENTITY, policy=InsPolicy.for_environment("test"))


# --------------------------------------------------------------------------- HL7 v2

NIR_TEST = f"{TEST_INS}^^^ASIP-SANTE-INS-NIR&{INS_NIR_TEST_OID}&ISO^INS".encode()
ADT_PROVISIONAL = (
    b"MSH|^~\\&|GAM|HOSP|HUB|HOSP|20250102103000||ADT^A28^ADT_A05|MSG-1|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8\r"
    b"EVN||20250102103000\r"
    b"PID|1||000003^^^CHU-X&000897406&N^PI~"
    b"260058815400244^^^ASIP-SANTE-INS-NIA&1.2.250.1.213.1.4.9&ISO^INS~"
    b"279035121518989^^^ASIP-SANTE-NIR&1.2.250.1.213.1.4.8&ISO^NH^^20210506||"
    b"PATTROIS^DOMINIQUE^^^Mme^^L||19790329|M|||28 Av de Breteuil^^PARIS^^75007^FRA^H~^^DOMREMY^^^FRA^BDL^^88154"
    b"|||||S||24000006^^^CHU-X&000897406&M^AN||||||||||||N||PROV~HOMA\r"
    b"PV1|1|N\r"
    b"ZFD|||N|N|SM\r"
)


def pid(body: bytes) -> tuple[Er7Message, int]:
    msg = Er7Message(body)
    index = msg.find("PID")
    assert index is not None
    return msg, index


def reps(msg: Er7Message, index: int, field: int) -> list[list[str]]:
    """Each repetition of a field as its components (unescaped, subcomponents joined by &)."""
    d = msg.delimiters
    return [
        ["&".join(msg.component(rep, c, s) for s in range(1, len(comp.split(d.subcomponent)) + 1))
         for c, comp in enumerate(rep.split(d.component), 1)]
        for rep in msg.repetitions(index, field)
    ]  # fmt: skip


def test_hl7v2_pid_stamped_component_by_component() -> None:
    out = stamp_hl7v2(ADT_PROVISIONAL, with_(attributes=frozenset({IdentityAttribute.HOMA})))
    msg, i = pid(out.body)
    pid3 = reps(msg, i, 3)
    # PI kept first; the NIA (CX-5 INS) replaced in place by the INS; the billing NIR (NH) kept.
    assert pid3[0] == ["000003", "", "", "CHU-X&000897406&N", "PI"]
    assert pid3[1] == [TEST_INS, "", "", f"ASIP-SANTE-INS-NIR&{INS_NIR_TEST_OID}&ISO", "INS"]
    assert pid3[2][4] == "NH" and len(pid3) == 3
    # CX-4 subcomponents one by one (DOMAIN.md §2.2): namespace, OID, ISO; CX-7/CX-8 empty.
    ins_rep = msg.repetitions(i, 3)[1]
    assert [msg.component(ins_rep, 4, s) for s in (1, 2, 3)] == ["ASIP-SANTE-INS-NIR", INS_NIR_TEST_OID, "ISO"]
    assert msg.component(ins_rep, 7) == msg.component(ins_rep, 8) == ""
    # PID-5: L = birth name, first given name, INSi list, civilité kept, XPN-7 L (DOMAIN.md §2.3).
    assert reps(msg, i, 5) == [["PAT-TROIS", "DOMINIQUE", "DOMINIQUE MARIE-LOUISE", "", "Mme", "", "L"]]
    assert msg.raw(i, 7) == "19790328" and msg.raw(i, 8) == "F"
    # PID-11: home address untouched; BDL with the INSEE code in XAD-9 (the old place is dropped).
    pid11 = msg.repetitions(i, 11)
    assert pid11[0] == "28 Av de Breteuil^^PARIS^^75007^FRA^H"
    assert (msg.component(pid11[1], 7), msg.component(pid11[1], 9)) == ("BDL", "51215")
    assert pid11[1] == "^^^^^^BDL^^51215"
    # PID-32: VALI first, the HOMA attribute kept (and not doubled), PROV gone.
    assert msg.repetitions(i, 32) == ["VALI", "HOMA"]
    assert msg.raw(i, 18) == "24000006^^^CHU-X&000897406&M^AN"  # unrelated field kept
    assert out.metadata == {
        "ins_stamped": "true",
        "ins": TEST_INS,
        "ins_oid": INS_NIR_TEST_OID,
        "ins_source": "registry",
        "identity_status": "qualifiee",
    }
    assert_masked(repr(out))


def test_hl7v2_other_segments_untouched_and_idempotent() -> None:
    out = stamp_hl7v2(ADT_PROVISIONAL, IDENTITY).body
    before, after = ADT_PROVISIONAL.split(b"\r"), out.split(b"\r")
    assert len(before) == len(after)
    assert [s for s in before if not s.startswith(b"PID")] == [s for s in after if not s.startswith(b"PID")]
    assert stamp_hl7v2(out, IDENTITY).body == out


def test_hl7v2_stamped_message_reads_back_as_qualified() -> None:
    out = stamp_hl7v2(ADT_PROVISIONAL, IDENTITY).body
    feed = read_identity_feed(out)
    assert feed.ins is not None and (feed.ins.matricule, feed.ins.oid) == (TEST_INS, INS_NIR_TEST_OID)
    assert feed.status is IdentityStatus.QUALIFIEE
    assert feed.traits == TRAITS


def test_hl7v2_used_name_d_repetition() -> None:
    identity = with_(used_family_name="MARTIN", used_given_name="DODO")
    out = stamp_hl7v2(ADT_PROVISIONAL, identity).body
    msg, i = pid(out)
    # D before L, as in the PAM FR examples.
    assert [r[6] for r in reps(msg, i, 5)] == ["D", "L"]
    assert reps(msg, i, 5)[0] == ["MARTIN", "DODO", "", "", "", "", "D"]
    assert stamp_hl7v2(out, identity).body == out
    # An existing D repetition is replaced in place; without a used name it is left alone.
    body = ADT_PROVISIONAL.replace(b"||PATTROIS^", b"||DUPONT^DOMI^^^Mme^^D~PATTROIS^")
    msg, i = pid(stamp_hl7v2(body, identity).body)
    assert reps(msg, i, 5)[0] == ["MARTIN", "DODO", "", "", "Mme", "", "D"]
    msg, i = pid(stamp_hl7v2(body, IDENTITY).body)
    assert reps(msg, i, 5)[0] == ["DUPONT", "DOMI", "", "", "Mme", "", "D"]


@pytest.mark.parametrize(
    ("oid", "namespace"),
    [
        (INS_NIR_OID, "ASIP-SANTE-INS-NIR"),
        (INS_NIA_OID, "ASIP-SANTE-INS-NIA"),
        (INS_NIR_DEMO_OID, "ASIP-SANTE-INS-NIR"),  # .11 is NIR *demonstration*, not NIA test
    ],
)
def test_hl7v2_assigning_authority_per_root(oid: str, namespace: str) -> None:
    msg, i = pid(stamp_hl7v2(ADT_PROVISIONAL, with_(ins_oid=oid)).body)
    assert reps(msg, i, 3)[1][3] == f"{namespace}&{oid}&ISO"


def test_hl7v2_pid_fields_added_when_absent() -> None:
    body = b"MSH|^~\\&|LAB|HOSP|HUB|HOSP|20250102||ORU^R01^ORU_R01|9|P|2.5\rPID|1||X1^^^LAB^PI\rOBR|1\r"
    out = stamp_hl7v2(body, IDENTITY).body
    msg, i = pid(out)
    assert [r[4] for r in reps(msg, i, 3)] == ["PI", "INS"]
    assert msg.repetitions(i, 11) == ["^^^^^^BDL^^51215"]
    assert msg.repetitions(i, 32) == ["VALI"] and len(msg.fields(i)) == 33
    assert out.endswith(b"\rOBR|1\r")
    assert stamp_hl7v2(out, IDENTITY).body == out


def test_hl7v2_longer_birth_ts_with_same_date_is_kept() -> None:
    body = ADT_PROVISIONAL.replace(b"||19790329|M|", b"||197903281045|F|")
    msg, i = pid(stamp_hl7v2(body, IDENTITY).body)
    assert msg.raw(i, 7) == "197903281045"


def test_hl7v2_own_delimiters_escapes_line_endings_and_charset() -> None:
    # Non-default encoding characters ($ component, * repetition, ! escape, # subcomponent), LF line
    # endings, ISO 8859-1 (MSH-18 8859/1) with an accented name in an unrelated segment.
    body = (
        "MSH|$*!#|GAM|HOSP|HUB|HOSP|20250102||ADT$A31$ADT_A05|7|P|2.5$FRA$2.11|||||FRA|8859/1\n"
        "PID|1||42$$$HOSP#1.2.3#ISO$PI||X$Y$$$$$L\n"
        "NK1|1|L\u00c9ON$H\u00c9L\u00c8NE\n"
    ).encode("latin-1")
    identity = with_(traits=dataclasses.replace(TRAITS, birth_name="L\u00c9VY$C#O"), used_given_name="A*B!C")
    out = stamp_hl7v2(body, identity).body
    assert out.endswith("\nNK1|1|L\u00c9ON$H\u00c9L\u00c8NE\n".encode("latin-1"))
    text = out.decode("latin-1")
    assert "L\u00c9VY!S!C!T!O$DOMINIQUE$DOMINIQUE MARIE-LOUISE$$$$L" in text
    assert "$A!R!B!E!C$$$$$D" in text
    assert f"{TEST_INS}$$$ASIP-SANTE-INS-NIR#{INS_NIR_TEST_OID}#ISO$INS" in text
    msg, i = pid(out.decode("latin-1"))
    assert reps(msg, i, 5)[1][0] == "L\u00c9VY$C#O"  # unescaped back
    assert stamp_hl7v2(out, identity).body == out
    # A character the message's character set cannot hold is refused, not mangled.
    with pytest.raises(MappingError):
        stamp_hl7v2(body, with_(traits=dataclasses.replace(TRAITS, birth_name="\u0152DIPE")))


def test_hl7v2_without_pid() -> None:
    with pytest.raises(MappingError) as err:
        stamp_hl7v2(b"MSH|^~\\&|A|B|C|D|20250102||ACK|1|P|2.5\rMSA|AA|1\r", IDENTITY)
    assert err.value.location == "PID"
    with pytest.raises(ParseError):
        stamp_hl7v2(b"not hl7", IDENTITY)


# --------------------------------------------------------------------------- CDA R2


def role(body: bytes) -> etree._Element:
    found = parse_xml(body).find("h:recordTarget/h:patientRole", NS)
    assert found is not None
    return found


def name_parts(body: bytes) -> list[tuple[str, str | None, str]]:
    return [
        (etree.QName(p).localname, p.get("qualifier"), p.text or "")
        for p in role(body).find("h:patient/h:name", NS)
        if isinstance(p.tag, str)
    ]


def without_record_target(body: bytes) -> bytes:
    root = parse_xml(body)
    target = root.find("h:recordTarget", NS)
    root.remove(target)
    return etree.tostring(root, method="c14n")


def test_cda_patient_role_stamped_element_by_element() -> None:
    original = CDA_HEADER.read_bytes()
    out = stamp_cda(original, with_(ins_oid=INS_NIR_OID))
    patient_role = role(out.body)
    ids = patient_role.findall("h:id", NS)
    # INS id in the place of the old one (root = INS OID, extension = INS), the IPP kept (DOMAIN.md §3.2).
    assert [(i.get("root"), i.get("extension")) for i in ids] == [
        (INS_NIR_OID, TEST_INS),
        ("1.2.3.4.5.6.7.8.1", "IPP-424242"),
    ]
    # BR family / list given (no qualifier) / BR given; the document's CL parts kept.
    assert name_parts(out.body) == [
        ("family", "BR", "PAT-TROIS"),
        ("given", None, "DOMINIQUE MARIE-LOUISE"),
        ("given", "BR", "DOMINIQUE"),
        ("family", "CL", "TESTUSAGE"),
        ("given", "CL", "CAMILLE"),
    ]
    gender = patient_role.find("h:patient/h:administrativeGenderCode", NS)
    assert dict(gender.attrib) == {"code": "F", "displayName": "Féminin", "codeSystem": "2.16.840.1.113883.5.1"}
    assert patient_role.find("h:patient/h:birthTime", NS).get("value") == "19790328"
    addr = patient_role.find("h:patient/h:birthplace/h:place/h:addr", NS)
    # A new birthplace code: county only (the old city described another place).
    assert [(etree.QName(c).localname, c.text) for c in addr] == [("county", "51215")]
    # The whole document still passes the CI-SIS header rules, INS required.
    assert validate_cda_header(out.body, require_ins=True, allow_test_ins=False) == []
    assert read_cda_header(out.body)["ins"] == TEST_INS
    assert out.metadata["ins_oid"] == INS_NIR_OID
    # Nothing outside recordTarget changed, and the prolog (declaration, comment) is byte for byte.
    assert without_record_target(out.body) == without_record_target(original)
    prolog = original[: original.index(b"<ClinicalDocument")]
    assert out.body.startswith(prolog)
    assert stamp_cda(out.body, with_(ins_oid=INS_NIR_OID)).body == out.body


def test_cda_used_name_replaces_cl_parts_and_same_birthplace_keeps_city() -> None:
    original = CDA_HEADER.read_bytes()
    identity = with_(
        traits=dataclasses.replace(TRAITS, birthplace_code="75056"),
        used_family_name="MARTIN",
        used_given_name="DODO",
        attributes=frozenset({IdentityAttribute.HOMA}),
    )
    out = stamp_cda(original, identity).body
    assert name_parts(out)[3:] == [("family", "CL", "MARTIN"), ("given", "CL", "DODO")]
    addr = role(out).find("h:patient/h:birthplace/h:place/h:addr", NS)
    assert [(etree.QName(c).localname, c.text) for c in addr] == [("county", "75056"), ("city", "PARIS")]
    assert stamp_cda(out, identity).body == out
    assert validate_cda_header(out, require_ins=True) == []


def test_cda_missing_elements_created_in_schema_order() -> None:
    body = (
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><recordTarget><patientRole>'
        b'<id root="1.2.3.4" extension="IPP-1"/><id root="1.2.250.1.213.1.4.9" extension="260058815400244"/>'
        b'<id root="1.2.250.1.213.1.4.8" extension="260058815400233"/>'
        b"<patient><name><prefix>Mme</prefix><given>X</given></name>"
        b'<guardian><id root="1.2.3.5"/></guardian><languageCommunication/></patient>'
        b"</patientRole></recordTarget></ClinicalDocument>"
    )
    out = stamp_cda(body, IDENTITY).body
    patient_role = role(out)
    # Both old INS ids (NIA and NIR) give way to one, at the first one's place.
    assert [(i.get("root"), i.get("extension")) for i in patient_role.findall("h:id", NS)] == [
        ("1.2.3.4", "IPP-1"),
        (INS_NIR_TEST_OID, TEST_INS),
    ]
    patient = patient_role.find("h:patient", NS)
    assert [etree.QName(c).localname for c in patient] == [
        "name",
        "administrativeGenderCode",
        "birthTime",
        "guardian",
        "birthplace",
        "languageCommunication",
    ]
    assert [etree.QName(c).localname for c in patient.find("h:name", NS)] == ["prefix", "family", "given", "given"]
    assert stamp_cda(out, IDENTITY).body == out


def test_cda_prefixed_latin1_document_keeps_prolog_and_epilog() -> None:
    prolog = b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<?xml-stylesheet type="text/xsl" href="x.xsl"?>\n'
    body = prolog + (
        b'<cda:ClinicalDocument xmlns:cda="urn:hl7-org:v3">\n  <cda:recordTarget>\n    <cda:patientRole>\n'
        b'      <cda:id root="1.2.3" extension="IPP-\xe9"/>\n      <cda:patient>\n'
        b"        <cda:name><cda:given>X</cda:given></cda:name>\n      </cda:patient>\n"
        b"    </cda:patientRole>\n  </cda:recordTarget>\n</cda:ClinicalDocument>\n<!-- trailing -->\n"
    )
    out = stamp_cda(body, IDENTITY).body
    assert out.startswith(prolog) and out.endswith(b"</cda:ClinicalDocument>\n<!-- trailing -->\n")
    assert b'<cda:id root="1.2.250.1.213.1.4.10" extension="279035121518989"/>' in out
    assert b'extension="IPP-\xe9"' in out and "Féminin".encode("latin-1") in out  # still ISO 8859-1
    assert b"<cda:county>51215</cda:county>" in out
    assert stamp_cda(out, IDENTITY).body == out


def test_cda_refusals() -> None:
    with pytest.raises(MappingError):
        stamp_cda(b'<ClinicalDocument xmlns="urn:hl7-org:v3"><recordTarget/></ClinicalDocument>', IDENTITY)
    with pytest.raises(ParseError):
        stamp_cda(b"<Other/>", IDENTITY)
    with pytest.raises(ParseError):
        stamp_cda(b'<!DOCTYPE x [<!ENTITY e "x">]><ClinicalDocument xmlns="urn:hl7-org:v3"/>', IDENTITY)


# --------------------------------------------------------------------------- FHIR R4 FR Core

TDDUI_PATIENT: dict[str, Any] = {
    # The ANS TDDUI example (DOMAIN.md §4.2, FR Core 2.1), plus a billing NIR and a deactivated INS.
    "resourceType": "Patient",
    "extension": [
        {
            "extension": [
                {"url": "identityStatus", "valueCoding": {"system": FR_CORE_V2_0445_SYSTEM, "code": "VALI"}},
                {"url": "validationMode", "valueCoding": {"code": "CN"}},
                {"url": "comment", "valueCodeableConcept": {"coding": [{"code": "DOUT"}]}},
            ],
            "url": IDENTITY_RELIABILITY_URL,
        },
        {
            "url": BIRTH_PLACE_URL,
            "valueAddress": {
                "extension": [{"url": INSEE_CODE_URL, "valueCoding": {"system": INSEE_CODE_SYSTEM, "code": "63220"}}],
                "city": "Mazoires",
                "country": "FRA",
            },
        },
    ],
    "identifier": [
        {
            "use": "official",
            "type": {"coding": [{"system": FR_CORE_V2_0203_SYSTEM, "code": "INS-NIR"}]},
            "system": "urn:oid:1.2.250.1.213.1.4.8",
            "value": "147720425367411",
        },
        {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}]},
            "system": "https://identifiant-medicosocial-localusager.esante.gouv.fr",
            "value": "3480787529/194704032",
        },
        {
            "use": "official",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NH"}]},
            "system": "urn:oid:1.2.250.1.213.1.4.8",
            "value": "147720425367430",
        },
        {"use": "old", "system": "urn:oid:1.2.250.1.213.1.4.9", "value": "147720425367499"},
    ],
    "name": [
        {
            "extension": [{"url": BIRTH_LIST_GIVEN_NAME_URL, "valueString": "Jean Stéphane Patrick"}],
            "use": "official",
            "family": "DUPONT",
            "given": ["Jean"],
            "prefix": ["M."],
        },
        {"use": "usual", "family": "DUPONT"},
    ],
    "gender": "male",
    "birthDate": "1947-04-03",
}


def patient_of(body: bytes) -> dict[str, Any]:
    doc = json.loads(body)
    if doc["resourceType"] == "Bundle":
        [patient] = [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient"]
        return patient  # type: ignore[no-any-return]
    return doc  # type: ignore[no-any-return]


def extension(resource: dict[str, Any], url: str) -> dict[str, Any]:
    [found] = [e for e in resource.get("extension", []) if e["url"] == url]
    return found  # type: ignore[no-any-return]


def test_fhir_patient_stamped_element_by_element() -> None:
    identity = with_(attributes=frozenset({IdentityAttribute.HOMA}))
    out = stamp_fhir(json.dumps(TDDUI_PATIENT).encode(), identity)
    patient = patient_of(out.body)
    # INS slice (DOMAIN.md §4.1): use, type from fr-core-cs-v2-0203, system urn:oid:<OID>, value.
    assert patient["identifier"][0] == {
        "use": "official",
        "type": {"coding": [{"system": FR_CORE_V2_0203_SYSTEM, "code": "INS-NIR-TEST"}]},
        "system": f"urn:oid:{INS_NIR_TEST_OID}",
        "value": TEST_INS,
    }
    # PI, billing NIR (same .8 system, type NH) and the deactivated ("old") INS are kept.
    assert patient["identifier"][1:] == TDDUI_PATIENT["identifier"][1:]
    # Identity reliability, FR Core >= 2.2: QUAL, HOMA as a comment, DOUT gone, validationMode kept.
    reliability = extension(patient, IDENTITY_RELIABILITY_URL)["extension"]
    assert reliability == [
        {"url": "identityStatus", "valueCoding": {"system": FR_CORE_IDENTITY_STATUS_SYSTEM, "code": "QUAL"}},
        {"url": "validationMode", "valueCoding": {"code": "CN"}},
        {
            "url": "comment",
            "valueCodeableConcept": {"coding": [{"system": FR_CORE_STATUS_COMMENT_SYSTEM, "code": "HOMA"}]},
        },
    ]
    # Official name: birth name, first given name only, the INSi list in the extension; prefix kept.
    assert patient["name"][0] == {
        "extension": [{"url": BIRTH_LIST_GIVEN_NAME_URL, "valueString": "DOMINIQUE MARIE-LOUISE"}],
        "use": "official",
        "family": "PAT-TROIS",
        "given": ["DOMINIQUE"],
        "prefix": ["M."],
    }
    assert patient["name"][1] == {"use": "usual", "family": "DUPONT"}  # no used name in the identity: kept
    assert (patient["gender"], patient["birthDate"]) == ("female", "1979-03-28")
    # Birthplace: fr-core-address-insee-code Coding; a new code drops the old city.
    assert extension(patient, BIRTH_PLACE_URL)["valueAddress"] == {
        "extension": [{"url": INSEE_CODE_URL, "valueCoding": {"system": INSEE_CODE_SYSTEM, "code": "51215"}}]
    }
    Patient.model_validate(patient)  # R4 content, R4B models (DOMAIN.md §4.3)
    assert stamp_fhir(out.body, identity).body == out.body
    assert out.metadata["ins"] == TEST_INS


def test_fhir_core_2_1_status_coding_and_same_birthplace() -> None:
    identity = with_(ins_oid=INS_NIR_OID, traits=dataclasses.replace(TRAITS, birthplace_code="63220"))
    out = stamp_fhir(json.dumps(TDDUI_PATIENT).encode(), identity, fr_core="2.1").body
    patient = patient_of(out)
    reliability = extension(patient, IDENTITY_RELIABILITY_URL)["extension"]
    # FR Core 2.1 mirrors table 0445: VALI; DOUT (contradicting a qualified identity) dropped.
    assert reliability == [
        {"url": "identityStatus", "valueCoding": {"system": FR_CORE_V2_0445_SYSTEM, "code": "VALI"}},
        {"url": "validationMode", "valueCoding": {"code": "CN"}},
    ]
    assert patient["identifier"][0]["type"]["coding"][0]["code"] == "INS-NIR"
    assert patient["identifier"][0]["system"] == "urn:oid:1.2.250.1.213.1.4.8"
    assert extension(patient, BIRTH_PLACE_URL) == TDDUI_PATIENT["extension"][1]  # same code: city kept
    assert stamp_fhir(out, identity, fr_core="2.1").body == out


def test_fhir_nia_used_name_and_new_elements_in_order() -> None:
    identity = with_(ins="260058815400233", ins_oid=INS_NIA_OID, used_family_name="MARTIN")
    out = stamp_fhir(b'{"resourceType":"Patient","id":"p1","active":true}', identity).body
    patient = patient_of(out)
    assert list(patient) == ["resourceType", "id", "extension", "identifier", "active", "name", "gender", "birthDate"]
    assert patient["identifier"] == [
        {
            "use": "temp",  # FR Core INS-NIA slice
            "type": {"coding": [{"system": FR_CORE_V2_0203_SYSTEM, "code": "INS-NIA"}]},
            "system": f"urn:oid:{INS_NIA_OID}",
            "value": "260058815400233",
        }
    ]
    assert [n["use"] for n in patient["name"]] == ["official", "usual"]
    assert patient["name"][1] == {"use": "usual", "family": "MARTIN"}
    assert [e["url"] for e in patient["extension"]] == [IDENTITY_RELIABILITY_URL, BIRTH_PLACE_URL]
    Patient.model_validate(patient)
    assert stamp_fhir(out, identity).body == out


def test_fhir_patient_in_a_bundle() -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    patient_entry = {"fullUrl": "urn:uuid:pat", "resource": copy.deepcopy(TDDUI_PATIENT)}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:obs", "resource": observation}, patient_entry],
    }
    out = stamp_fhir(json.dumps(bundle).encode(), IDENTITY).body
    doc = json.loads(out)
    assert doc["entry"][0] == bundle["entry"][0]  # untouched
    assert patient_of(out)["identifier"][0]["value"] == TEST_INS
    Bundle.model_validate(doc)
    assert stamp_fhir(out, IDENTITY).body == out
    # Two patients: say which one.
    bundle["entry"].append({"fullUrl": "urn:uuid:mother", "resource": {"resourceType": "Patient"}})
    with pytest.raises(MappingError):
        stamp_fhir(json.dumps(bundle).encode(), IDENTITY)
    chosen = json.loads(stamp_fhir(json.dumps(bundle).encode(), IDENTITY, full_url="urn:uuid:mother").body)
    assert chosen["entry"][2]["resource"]["identifier"][0]["value"] == TEST_INS
    assert chosen["entry"][1] == bundle["entry"][1]  # the other patient untouched


def test_fhir_refusals() -> None:
    with pytest.raises(ParseError):
        stamp_fhir(b"not json", IDENTITY)
    with pytest.raises(ParseError):
        stamp_fhir(b"[1]", IDENTITY)
    with pytest.raises(MappingError):
        stamp_fhir(b'{"resourceType":"Observation"}', IDENTITY)
    with pytest.raises(MappingError):
        stamp_fhir(b'{"resourceType":"Bundle","type":"collection","entry":[]}', IDENTITY)
