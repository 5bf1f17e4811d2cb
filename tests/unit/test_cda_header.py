"""CI-SIS CDA header: metadata reader and validator, on a synthetic minimal header.

tests/data/cda/minimal_header.xml is a valid header (synthetic patient, INS
from the *test* authority). Each validator test breaks one rule and checks
the exact list of (rule, location) the validator returns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from hub.errors import ParseError
from mappings.cda import Violation, read_cda_header, validate_cda_header
from mappings.xml import parse_xml

DATA = Path(__file__).resolve().parent.parent / "data" / "cda" / "minimal_header.xml"
NS = {"h": "urn:hl7-org:v3"}
DOC = "/ClinicalDocument"
ROLE = DOC + "/recordTarget/patientRole"
PATIENT = ROLE + "/patient"
NAME = PATIENT + "/name"
EVENT = DOC + "/documentationOf[1]/serviceEvent"
ENCOUNTER = DOC + "/componentOf/encompassingEncounter"
CUSTODIAN_ORG = DOC + "/custodian/assignedCustodian/representedCustodianOrganization"


def load() -> etree._Element:
    return parse_xml(DATA.read_bytes())


def node(root: etree._Element, xpath: str) -> etree._Element:
    found = root.xpath(xpath, namespaces=NS)
    assert len(found) == 1, xpath
    return found[0]


def rm(xpath: str) -> Callable[[etree._Element], None]:
    def apply(root: etree._Element) -> None:
        el = node(root, xpath)
        el.getparent().remove(el)

    return apply


def attr(xpath: str, name: str, value: str | None) -> Callable[[etree._Element], None]:
    def apply(root: etree._Element) -> None:
        el = node(root, xpath)
        if value is None:
            del el.attrib[name]
        else:
            el.set(name, value)

    return apply


def add(xpath: str, snippet: str, index: int | None = None) -> Callable[[etree._Element], None]:
    """Insert an HL7-namespaced snippet under the element at xpath (at index, else last)."""

    def apply(root: etree._Element) -> None:
        parent = node(root, xpath)
        for el in etree.fromstring(f'<x xmlns="urn:hl7-org:v3">{snippet}</x>'):
            if index is None:
                parent.append(el)
            else:
                parent.insert(index, el)

    return apply


def both(*steps: Callable[[etree._Element], None]) -> Callable[[etree._Element], None]:
    def apply(root: etree._Element) -> None:
        for step in steps:
            step(root)

    return apply


def pairs(violations: list[Violation]) -> list[tuple[str, str]]:
    return [(v.rule, v.location) for v in violations]


# --------------------------------------------------------------------------- reader


def test_read_header_extracts_every_key() -> None:
    assert read_cda_header(load()) == {
        "ins": "285077512345655",
        "ins_oid": "1.2.250.1.213.1.4.10",
        "ipp": "IPP-424242",
        "ipp_oid": "1.2.3.4.5.6.7.8.1",
        "patient_ids": "285077512345655^^^&1.2.250.1.213.1.4.10&ISO~IPP-424242^^^&1.2.3.4.5.6.7.8.1&ISO",
        "type_code": "11502-2",
        "type_code_system": "2.16.840.1.113883.6.1",
        "type_display_name": "CR d'examens biologiques",
        "unique_id": "1.2.3.4.5.6.7.8.100.1^DOC-0001-V1",
        "set_id": "1.2.3.4.5.6.7.8.100.2^DOC-0001",
        "version_number": "1",
        "effective_time": "20250102103000+0100",
        "confidentiality_code": "N",
        "language_code": "fr-FR",
        "title": "Compte rendu d'examens biologiques",
        "template_ids": "2.16.840.1.113883.2.8.2.1 1.2.250.1.213.1.1.1.1 1.2.250.1.213.1.1.1.55",
        "author_id": "810000000001",
        "author_id_root": "1.2.250.1.71.4.2.1",
        "custodian_id": "1000000001",
        "custodian_id_root": "1.2.250.1.71.4.2.2",
        "legal_authenticator_id": "810000000001",
        "legal_authenticator_id_root": "1.2.250.1.71.4.2.1",
        "facility_code": "SA25",
        "facility_code_system": "1.2.250.1.71.4.2.4",
        "practice_setting_code": "AMBULATOIRE",
        "practice_setting_code_system": "1.2.250.1.213.1.1.4.9",
        "service_start_time": "20250102080000+0100",
        "service_stop_time": "20250102100000+0100",
    }


def test_read_header_accepts_bytes_tree_and_element() -> None:
    data = DATA.read_bytes()
    root = load()
    assert read_cda_header(data) == read_cda_header(root) == read_cda_header(root.getroottree())


def test_read_header_without_ins_keeps_the_local_id() -> None:
    root = load()
    rm("h:recordTarget/h:patientRole/h:id[1]")(root)
    header = read_cda_header(root)
    assert "ins" not in header and "ins_oid" not in header
    assert (header["ipp"], header["ipp_oid"]) == ("IPP-424242", "1.2.3.4.5.6.7.8.1")
    assert header["patient_ids"] == "IPP-424242^^^&1.2.3.4.5.6.7.8.1&ISO"


def test_read_header_leaves_out_what_is_missing() -> None:
    root = load()
    for xpath in ("h:title", "h:setId", "h:componentOf", "h:documentationOf"):
        rm(xpath)(root)
    attr("h:id", "extension", None)(root)
    header = read_cda_header(root)
    assert header["unique_id"] == "1.2.3.4.5.6.7.8.100.1"
    for key in ("title", "set_id", "facility_code", "practice_setting_code", "service_start_time"):
        assert key not in header


def test_read_header_refuses_a_non_cda_root() -> None:
    with pytest.raises(ParseError) as info:
        read_cda_header(b"<ClinicalDocument/>")  # no HL7 namespace
    assert info.value.location == "/"


def test_read_header_refuses_unsafe_bytes() -> None:
    with pytest.raises(ParseError):
        read_cda_header(b'<!DOCTYPE r [<!ENTITY a "b">]><ClinicalDocument xmlns="urn:hl7-org:v3"/>')


# --------------------------------------------------------------------------- validator: passing documents


def test_minimal_header_is_valid() -> None:
    assert validate_cda_header(load()) == []
    assert validate_cda_header(DATA.read_bytes(), require_ins=True) == []


def test_level1_document_with_xds_sd_template_is_valid() -> None:
    root = load()
    attr("h:templateId[3]", "root", "1.3.6.1.4.1.19376.1.2.20")(root)
    attr("h:templateId[3]", "extension", None)(root)
    rm("h:component")(root)
    add(
        ".",
        '<component><nonXMLBody><text mediaType="application/pdf" representation="B64">JVBERg==</text>'
        "</nonXMLBody></component>",
    )(root)
    assert validate_cda_header(root) == []


def test_valid_replacement_document() -> None:
    root = load()
    attr("h:versionNumber", "value", "2")(root)
    attr("h:id", "extension", "DOC-0001-V2")(root)
    add(
        ".",
        '<relatedDocument typeCode="RPLC"><parentDocument><id root="1.2.3.4.5.6.7.8.100.1" '
        'extension="DOC-0001-V1"/><setId root="1.2.3.4.5.6.7.8.100.2" extension="DOC-0001"/>'
        '<versionNumber value="1"/></parentDocument></relatedDocument>',
        index=18,
    )(root)
    assert validate_cda_header(root) == []


def test_without_ins_the_birth_traits_are_not_required() -> None:
    root = load()
    for xpath in (
        "h:recordTarget/h:patientRole/h:id[1]",
        "h:recordTarget/h:patientRole/h:patient/h:birthplace",
        "h:recordTarget/h:patientRole/h:patient/h:name/h:given[1]",
    ):
        rm(xpath)(root)
    assert validate_cda_header(root) == []


def test_ins_nia_and_corsican_nir_are_accepted() -> None:
    root = load()
    attr("h:recordTarget/h:patientRole/h:id[1]", "root", "1.2.250.1.213.1.4.9")(root)
    assert validate_cda_header(root, allow_test_ins=False) == []
    attr("h:recordTarget/h:patientRole/h:id[1]", "extension", "18507" + "2A" + "12345678")(root)
    assert validate_cda_header(root) == []


# --------------------------------------------------------------------------- validator: one rule each

PID = "h:recordTarget/h:patientRole/h:id"
PNAME = "h:recordTarget/h:patientRole/h:patient/h:name"
PPAT = "h:recordTarget/h:patientRole/h:patient"
AUTHOR = "h:author/h:assignedAuthor"
LEGAL = "h:legalAuthenticator"
PERF = "h:documentationOf/h:serviceEvent/h:performer"
ENC = "h:componentOf/h:encompassingEncounter"

CASES: list[tuple[str, Callable[[etree._Element], None], list[tuple[str, str]]]] = [
    ("class-code", attr(".", "classCode", "OBS"), [("class-code", DOC + "/@classCode")]),
    ("mood-code", attr(".", "moodCode", "INT"), [("mood-code", DOC + "/@moodCode")]),
    ("realm-code-missing", rm("h:realmCode"), [("realm-code", DOC + "/realmCode")]),
    ("realm-code-not-fr", attr("h:realmCode", "code", "DE"), [("realm-code", DOC + "/realmCode")]),
    ("realm-code-twice", add(".", '<realmCode code="FR"/>', 0), [("realm-code", DOC + "/realmCode")]),
    ("type-id", attr("h:typeId", "extension", "POCD_MT000040"), [("type-id", DOC + "/typeId")]),
    (
        "template-hl7-france",
        rm("h:templateId[1]"),
        [("template-hl7-france", DOC + "/templateId[@root='2.16.840.1.113883.2.8.2.1']")],
    ),
    (
        "template-cisis-twice",
        add(".", '<templateId root="1.2.250.1.213.1.1.1.1"/>', 3),
        [("template-cisis", DOC + "/templateId[@root='1.2.250.1.213.1.1.1.1']")],
    ),
    ("template-volet-missing", rm("h:templateId[3]"), [("template-volet", DOC + "/templateId")]),
    (
        "template-volet-bad-root",
        attr("h:templateId[3]", "root", "not an oid"),
        [("template-volet", DOC + "/templateId[3]/@root")],
    ),
    ("body", rm("h:component"), [("body", DOC + "/component")]),
    (
        "template-non-xml-body",
        both(rm("h:component"), add(".", "<component><nonXMLBody/></component>")),
        [("template-non-xml-body", DOC + "/templateId")],
    ),
    ("document-id-missing", rm("h:id"), [("document-id", DOC + "/id")]),
    (
        "document-id-null",
        both(attr("h:id", "nullFlavor", "UNK"), attr("h:id", "root", None)),
        [("document-id", DOC + "/id")],
    ),
    ("document-id-root", attr("h:id", "root", "1.02.3"), [("document-id", DOC + "/id/@root")]),
    ("document-id-extension", attr("h:id", "extension", ""), [("document-id", DOC + "/id/@extension")]),
    (
        "document-code-display",
        attr("h:code", "displayName", None),
        [("document-code", DOC + "/code/@displayName")],
    ),
    (
        "document-code-system",
        attr("h:code", "codeSystem", "LOINC"),
        [("document-code", DOC + "/code/@codeSystem")],
    ),
    ("title", rm("h:title"), [("title", DOC + "/title")]),
    (
        "effective-time",
        attr("h:effectiveTime", "value", "2025-01-02"),
        [("effective-time", DOC + "/effectiveTime/@value")],
    ),
    (
        "confidentiality-code",
        attr("h:confidentialityCode", "code", "X"),
        [("confidentiality-code", DOC + "/confidentialityCode/@code")],
    ),
    (
        "confidentiality-display",
        attr("h:confidentialityCode", "displayName", None),
        [("confidentiality-code", DOC + "/confidentialityCode/@displayName")],
    ),
    ("language-code", attr("h:languageCode", "code", "fr"), [("language-code", DOC + "/languageCode/@code")]),
    ("set-id", rm("h:setId"), [("set-id", DOC + "/setId")]),
    ("set-id-root", attr("h:setId", "root", None), [("set-id", DOC + "/setId/@root")]),
    (
        "version-zero",
        attr("h:versionNumber", "value", "0"),
        [("version-number", DOC + "/versionNumber/@value")],
    ),
    (
        "version-text",
        attr("h:versionNumber", "value", "v1"),
        [("version-number", DOC + "/versionNumber/@value")],
    ),
    ("version-missing", rm("h:versionNumber"), [("version-number", DOC + "/versionNumber")]),
    ("data-enterer", add(".", "<dataEnterer/><dataEnterer/>", 20), [("data-enterer", DOC + "/dataEnterer")]),
    (
        # An RPLC at version 1 passes (ANS example CSE-CS8_2024.01); a parent not older than it does not.
        "replacement-of-a-parent-not-older",
        add(
            ".",
            '<relatedDocument typeCode="RPLC"><parentDocument><id root="1.2.9"/><versionNumber value="1"/>'
            "</parentDocument></relatedDocument>",
            18,
        ),
        [("replacement-version", DOC + "/relatedDocument/parentDocument/versionNumber/@value")],
    ),
    (
        "document-type-outside-jdv-j07",
        attr("h:code", "code", "99999-9"),
        [("document-type-value-set", DOC + "/code/@code")],
    ),
    (
        "replacement-twice",
        both(
            attr("h:versionNumber", "value", "3"),
            add(
                ".",
                '<relatedDocument typeCode="RPLC"><parentDocument><id root="1.2.9"/></parentDocument>'
                '</relatedDocument><relatedDocument typeCode="RPLC"><parentDocument><id root="1.2.8"/>'
                "</parentDocument></relatedDocument>",
                18,
            ),
        ),
        [("related-document", DOC + "/relatedDocument")],
    ),
    (
        "replacement-same-id",
        both(
            attr("h:versionNumber", "value", "2"),
            add(
                ".",
                '<relatedDocument typeCode="RPLC"><parentDocument><id root="1.2.3.4.5.6.7.8.100.1" '
                'extension="DOC-0001-V1"/></parentDocument></relatedDocument>',
                18,
            ),
        ),
        [("replacement-parent", DOC + "/relatedDocument/parentDocument/id")],
    ),
    (
        "replacement-no-parent-id",
        both(
            attr("h:versionNumber", "value", "2"),
            add(".", '<relatedDocument typeCode="RPLC"><parentDocument/></relatedDocument>', 18),
        ),
        [("replacement-parent", DOC + "/relatedDocument/parentDocument/id")],
    ),
    (
        "replacement-other-set-id",
        both(
            attr("h:versionNumber", "value", "2"),
            add(
                ".",
                '<relatedDocument typeCode="RPLC"><parentDocument><id root="1.2.9"/>'
                '<setId root="1.2.7"/></parentDocument></relatedDocument>',
                18,
            ),
        ),
        [("replacement-set-id", DOC + "/relatedDocument/parentDocument/setId")],
    ),
    (
        "replacement-parent-version-not-lower",
        both(
            attr("h:versionNumber", "value", "2"),
            add(
                ".",
                '<relatedDocument typeCode="RPLC"><parentDocument><id root="1.2.9"/>'
                '<versionNumber value="2"/></parentDocument></relatedDocument>',
                18,
            ),
        ),
        [("replacement-version", DOC + "/relatedDocument/parentDocument/versionNumber/@value")],
    ),
    ("record-target", rm("h:recordTarget"), [("record-target", DOC + "/recordTarget")]),
    ("patient-missing", rm(PPAT), [("record-target", ROLE)]),
    (
        "patient-ids-missing",
        both(rm(PID + "[2]"), rm(PID + "[1]")),
        [("patient-id", ROLE + "/id")],
    ),
    (
        "patient-id-extension",
        attr(PID + "[2]", "extension", None),
        [("patient-id", ROLE + "/id[2]/@extension")],
    ),
    (
        "patient-id-authority-name",
        attr(PID + "[2]", "assigningAuthorityName", "HOPITAL"),
        [("patient-id", ROLE + "/id[2]/@assigningAuthorityName")],
    ),
    (
        "ins-format",
        attr(PID + "[1]", "extension", "2850775123456"),
        [("ins-format", ROLE + "/id[1]/@extension")],
    ),
    (
        "patient-name-missing",
        rm(PNAME),
        [
            ("patient-name", NAME),
            ("ins-traits", NAME + "/family[@qualifier='BR']"),
            ("ins-traits", NAME + "/given[@qualifier='BR']"),
            ("ins-traits", NAME + "/given[not(@qualifier)]"),
        ],
    ),
    (
        "family-qualifier-sp",
        attr(PNAME + "/h:family[1]", "qualifier", "SP"),
        [
            ("family-qualifier", NAME + "/family[1]/@qualifier"),
            ("ins-traits", NAME + "/family[@qualifier='BR']"),
        ],
    ),
    (
        "family-qualifier-missing",
        attr(PNAME + "/h:family[2]", "qualifier", None),
        [("family-qualifier", NAME + "/family[2]/@qualifier")],
    ),
    (
        "given-qualifier-sp",
        attr(PNAME + "/h:given[3]", "qualifier", "SP"),
        [("given-qualifier", NAME + "/given[3]/@qualifier")],
    ),
    (
        "gender-u",
        attr(PPAT + "/h:administrativeGenderCode", "code", "U"),
        [("gender", PATIENT + "/administrativeGenderCode/@code")],
    ),
    (
        "gender-missing",
        rm(PPAT + "/h:administrativeGenderCode"),
        [("gender", PATIENT + "/administrativeGenderCode")],
    ),
    ("birth-time-missing", rm(PPAT + "/h:birthTime"), [("birth-time", PATIENT + "/birthTime")]),
    (
        "birth-time-bad",
        attr(PPAT + "/h:birthTime", "value", "12/07/1985"),
        [("birth-time", PATIENT + "/birthTime/@value")],
    ),
    (
        "birthplace-twice",
        add(PPAT, "<birthplace><place/></birthplace>"),
        [("birthplace", PATIENT + "/birthplace")],
    ),
    (
        "ins-traits-birthplace",
        rm(PPAT + "/h:birthplace"),
        [("ins-traits", PATIENT + "/birthplace/place/addr/county")],
    ),
    (
        "ins-traits-given-list",
        rm(PNAME + "/h:given[1]"),
        [("ins-traits", NAME + "/given[not(@qualifier)]")],
    ),
    ("author-missing", rm("h:author"), [("author", DOC + "/author")]),
    ("author-time", rm("h:author/h:time"), [("author-time", DOC + "/author[1]/time")]),
    ("author-id-missing", rm(AUTHOR + "/h:id"), [("author-id", DOC + "/author[1]/assignedAuthor/id")]),
    (
        "author-id-extension",
        attr(AUTHOR + "/h:id", "extension", None),
        [("author-id", DOC + "/author[1]/assignedAuthor/id[1]/@extension")],
    ),
    (
        "second-author-without-time",
        add(
            ".",
            '<author><assignedAuthor><id root="1.2.250.1.71.4.2.1" extension="810000000002"/>'
            "</assignedAuthor></author>",
            21,
        ),
        [("author-time", DOC + "/author[2]/time")],
    ),
    ("custodian-missing", rm("h:custodian"), [("custodian", DOC + "/custodian")]),
    (
        "custodian-root",
        attr("h:custodian//h:representedCustodianOrganization/h:id", "root", "1.2.3"),
        [("custodian-id", CUSTODIAN_ORG + "/id/@root")],
    ),
    (
        "legal-authenticator-unsigned",
        attr(LEGAL + "/h:signatureCode", "code", "X"),
        [("legal-authenticator", DOC + "/legalAuthenticator")],
    ),
    (
        "legal-authenticator-time",
        rm(LEGAL + "/h:time"),
        [("legal-authenticator", DOC + "/legalAuthenticator/time")],
    ),
    (
        "legal-authenticator-id",
        attr(LEGAL + "/h:assignedEntity/h:id", "extension", None),
        [("legal-authenticator-id", DOC + "/legalAuthenticator/assignedEntity/id/@extension")],
    ),
    ("documentation-of", rm("h:documentationOf"), [("documentation-of", DOC + "/documentationOf")]),
    ("performer-missing", rm(PERF), [("service-event-performer", EVENT + "/performer")]),
    (
        "performer-type",
        attr(PERF, "typeCode", "SPRF"),
        [("service-event-performer", EVENT + "/performer/@typeCode")],
    ),
    (
        "service-event-time-missing",
        rm("h:documentationOf/h:serviceEvent/h:effectiveTime"),
        [("service-event-time", EVENT + "/effectiveTime")],
    ),
    (
        "service-event-time-low",
        rm("h:documentationOf/h:serviceEvent/h:effectiveTime/h:low"),
        [("service-event-time", EVENT + "/effectiveTime/low")],
    ),
    (
        "practice-setting-missing",
        rm(PERF + "//h:standardIndustryClassCode"),
        [
            (
                "practice-setting",
                EVENT + "/performer/assignedEntity/representedOrganization/standardIndustryClassCode",
            )
        ],
    ),
    ("component-of", rm("h:componentOf"), [("component-of", DOC + "/componentOf")]),
    ("encounter-location", rm(ENC + "/h:location"), [("component-of", ENCOUNTER)]),
    ("encounter-time", rm(ENC + "/h:effectiveTime"), [("encounter-time", ENCOUNTER + "/effectiveTime")]),
    (
        "encounter-code",
        attr(ENC + "/h:code", "codeSystem", None),
        [("encounter-code", ENCOUNTER + "/code/@codeSystem")],
    ),
    (
        "facility-code",
        rm(ENC + "/h:location/h:healthCareFacility/h:code"),
        [("facility", ENCOUNTER + "/location/healthCareFacility/code")],
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_broken_rule_is_reported_exactly(
    mutate: Callable[[etree._Element], None], expected: list[tuple[str, str]]
) -> None:
    root = load()
    mutate(root)
    assert pairs(validate_cda_header(root)) == expected


def test_ins_required_when_the_document_is_shared() -> None:
    root = load()
    rm(PID + "[1]")(root)
    assert validate_cda_header(root) == []
    assert pairs(validate_cda_header(root, require_ins=True)) == [("ins-required", ROLE + "/id")]


@pytest.mark.parametrize("root_oid", ["1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"])
def test_test_and_demo_ins_refused_in_production(root_oid: str) -> None:
    root = load()
    attr(PID + "[1]", "root", root_oid)(root)
    assert validate_cda_header(root) == []
    assert pairs(validate_cda_header(root, allow_test_ins=False)) == [
        ("ins-test-authority", ROLE + "/id[1]/@root")
    ]


def test_ins_characters_are_checked() -> None:
    root = load()
    attr(PID + "[1]", "extension", "2850775123456 5")(root)
    assert pairs(validate_cda_header(root)) == [("ins-format", ROLE + "/id[1]/@extension")]


def test_ins_key_is_checked_only_on_request() -> None:
    root = load()
    attr(PID + "[1]", "extension", "285077512345600")(root)  # the right key is 55
    assert validate_cda_header(root) == []
    assert pairs(validate_cda_header(root, strict_ins_key=True)) == [
        ("ins-format", ROLE + "/id[1]/@extension")
    ]
    assert validate_cda_header(load(), strict_ins_key=True) == []


def test_non_clinical_document_root() -> None:
    root = etree.fromstring(b'<Bundle xmlns="http://hl7.org/fhir"/>')
    assert pairs(validate_cda_header(root)) == [("clinical-document", "/")]


def test_empty_clinical_document_reports_every_missing_block() -> None:
    rules = [v.rule for v in validate_cda_header(b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>')]
    assert rules == [
        "realm-code",
        "type-id",
        "template-hl7-france",
        "template-cisis",
        "template-volet",
        "body",
        "document-id",
        "document-code",
        "title",
        "effective-time",
        "confidentiality-code",
        "language-code",
        "set-id",
        "version-number",
        "record-target",
        "author",
        "custodian",
        "legal-authenticator",
        "documentation-of",
        "component-of",
    ]


def test_violations_never_quote_document_values() -> None:
    marker = "ZZPATIENTVALUEZZ"
    root = load()
    for xpath, name in [
        (PNAME + "/h:family[1]", "qualifier"),
        (PNAME + "/h:given[2]", "qualifier"),
        (PPAT + "/h:administrativeGenderCode", "code"),
        (PPAT + "/h:birthTime", "value"),
        (PID + "[1]", "extension"),
        (PID + "[2]", "displayable"),
        ("h:languageCode", "code"),
        ("h:confidentialityCode", "code"),
        ("h:versionNumber", "value"),
        ("h:id", "root"),
    ]:
        attr(xpath, name, marker)(root)
    violations = validate_cda_header(root)
    assert len(violations) >= 10
    for v in violations:
        assert marker not in str(v)
        assert marker not in v.message and marker not in v.location


def test_violation_reads_as_location_message_rule() -> None:
    v = Violation("title", "/ClinicalDocument/title", "title is required")
    assert str(v) == "/ClinicalDocument/title: title is required [title]"
