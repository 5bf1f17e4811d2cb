"""Every document the golden tests produce passes the official ANS validation (``make conformance``).

Needs a checkout of the ANS TestContenuCDA repository in ``$ANS_TESTCONTENU_DIR`` and the
``saxonche`` package (extra ``conformance``); skipped, with the reason, without them. A document
passes when the XSD reports no error and the structuration minimale and volet schematrons report
no failed assert, warnings included (the "closed" structuration minimale warns of every element
the CI-SIS header does not define: such an element is not what the rules want either).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree

from hub.content_types import ContentType
from hub.errors import MessageError
from hub.message import Message
from mappings.cda.builder import OrganizationConfig
from mappings.cda.crbio import oru_to_crbio
from mappings.cda.hl7v2_documents import read_v2_document
from mappings.cda.validate import cda_validate
from mappings.cda.value_sets import value_set
from tests.conformance.ans import (
    ENV_VAR,
    SHIPPED_VALUE_SETS,
    AnsValidator,
    checkout_from_env,
    value_set_facts,
)
from tests.mappings.test_cda_golden import CRBIO, DOCUMENTS

CASES = Path(__file__).resolve().parent.parent / "mappings" / "cases"
GOLDEN = sorted(CASES.glob("*/expected*.xml"))


def ans_checkout() -> Path:
    checkout = checkout_from_env()
    if checkout is None:
        pytest.skip(f"{ENV_VAR} is not set: give the path of a checkout of the ANS TestContenuCDA repository")
    return checkout


@pytest.fixture(scope="module")
def ans() -> Iterator[AnsValidator]:
    checkout = checkout_from_env()
    if checkout is None:
        pytest.skip(f"{ENV_VAR} is not set: give the path of a checkout of the ANS TestContenuCDA repository")
    pytest.importorskip("saxonche", reason="the ANS schematrons run on Saxon: pip install -e '.[conformance]'")
    with AnsValidator(checkout) as validator:
        yield validator


def test_golden_documents_exist() -> None:
    assert len(GOLDEN) >= 10


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden_document_passes_the_ans_validation(ans: AnsValidator, path: Path) -> None:
    report = ans.validate(path.read_bytes(), path.parent.name)
    print(report.summary())
    assert "StructurationMinimale" in report.schematrons
    assert report.ok, report.details()
    assert not any(report.warnings.values()), report.details()


def test_a_wrong_document_fails(ans: AnsValidator) -> None:
    """The oracle can fail: a CR-BIO without its PDF copy and with a type code outside JDV_J07."""
    xml = (CASES / "crbio_chemistry_panel" / "expected.xml").read_bytes()
    broken = xml.replace(b'code="11502-2"', b'code="99999-9"', 1).replace(b"1.2.250.1.213.1.1.2.243", b"2.999", 1)
    report = ans.validate(broken, "broken")
    texts = " ".join(t for failed in report.failed.values() for t in failed)
    assert "1.2.250.1.213.1.1.5.471" in texts  # the generated JDV_J07 is read
    assert "FR-Document-PDF-copie" in texts


def validated(xml: bytes) -> Message:
    return cda_validate(Message.new(xml, content_type=ContentType.CDA, metadata={}))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.parent.name)
def test_cda_validate_accepts_what_the_ans_validation_accepts(path: Path) -> None:
    """Every golden document (all pass make conformance, above) passes the hub's own check too."""
    assert validated(path.read_bytes()).metadata["unique_id"]


def test_cda_validate_accepts_every_ans_example() -> None:
    """No false refusal: the ANS example documents (self-presenting ones included) all pass."""
    examples = sorted((ans_checkout() / "ExemplesCDA").glob("*.xml"))
    assert len(examples) >= 90
    refused = {}
    for path in examples:
        try:
            validated(path.read_bytes())
        except Exception as exc:  # the test reports every refusal at once
            refused[path.name] = str(exc)
    assert refused == {}


@pytest.mark.parametrize("oid", sorted(SHIPPED_VALUE_SETS))
def test_the_shipped_value_sets_are_the_published_ones(oid: str) -> None:
    """mappings/cda/value_sets holds the same concepts and version as the checkout's file."""
    relative = SHIPPED_VALUE_SETS[oid]
    published = value_set_facts((ans_checkout() / relative).read_bytes(), "")
    shipped = value_set(str(published["name"]))
    assert (shipped.id, shipped.version) == (oid, published["version"])
    pairs = {(c["code"], c["code_system"]) for c in published["concepts"]}  # type: ignore[attr-defined]
    assert pairs == {(code, system) for code, systems in shipped.systems.items() for system in systems}


ADDRESSES = {
    "full, house number": {"street": "12 bis rue de l'Exemple", "postal_code": "75012", "city": "PARIS"},
    "street without number": {"street": "Place de l'Exemple", "postal_code": "69001", "city": "LYON"},
    "street only": {"street": "1 rue de l'Exemple"},
    "city only": {"city": "PARIS"},
    "none, with telecom": {"telecom": "tel:+33100000000"},
}


@pytest.mark.parametrize("variant", sorted(ADDRESSES))
def test_configured_addresses_pass_the_ans_validation(ans: AnsValidator, variant: str) -> None:
    """Header elements built from configuration, in every form a site may configure them."""
    custodian = OrganizationConfig(id="1999000001", name="Laboratoire de test", **ADDRESSES[variant])
    lab = (CASES / "crbio_chemistry_panel" / "input.hl7").read_bytes()
    letter = (CASES / "document_mdm_t02_pdf_letter" / "input.hl7").read_bytes()
    documents = [
        oru_to_crbio(lab, config=CRBIO.model_copy(update={"custodian": custodian}))[0],
        read_v2_document(letter, config=DOCUMENTS.model_copy(update={"custodian": custodian})).body,
    ]
    for xml in documents:
        report = ans.validate(xml, variant)
        assert report.ok and not any(report.warnings.values()), report.details()


def _set(path: str, attribute: str, value: str) -> Callable[[etree._Element], None]:
    def apply(doc: etree._Element) -> None:
        [el] = doc.xpath(path, namespaces={"h": "urn:hl7-org:v3"})
        el.set(attribute, value)

    return apply


def _drop(path: str) -> Callable[[etree._Element], None]:
    def apply(doc: etree._Element) -> None:
        for el in doc.xpath(path, namespaces={"h": "urn:hl7-org:v3"}):
            el.getparent().remove(el)

    return apply


# Header faults the structuration minimale refuses; cda_validate must refuse each of them too.
MUTATIONS = {
    "type code outside JDV_J07": _set("/h:ClinicalDocument/h:code", "code", "99999-9"),
    "author specialty outside JDV_J01": _set("//h:author/h:assignedAuthor/h:code", "code", "G15_99"),
    "practice setting outside JDV_J04": _set(
        "//h:performer/h:assignedEntity/h:representedOrganization/h:standardIndustryClassCode", "code", "NOPE"
    ),
    "legal authenticator specialty outside JDV_J01": _set(
        "//h:legalAuthenticator/h:assignedEntity/h:code", "code", "G15_99"
    ),
    "facility outside JDV_J02": _set("//h:healthCareFacility/h:code", "code", "SA99"),
    "encounter code outside JDV_J142": _set("//h:encompassingEncounter/h:code", "code", "XXX"),
    "confidentiality outside its value set": _set("/h:ClinicalDocument/h:confidentialityCode", "code", "X"),
    "gender outside JDV_J143": _set("//h:patient/h:administrativeGenderCode", "code", "U"),
    "no realmCode": _drop("/h:ClinicalDocument/h:realmCode"),
    "no CI-SIS templateId": _drop("/h:ClinicalDocument/h:templateId[@root='1.2.250.1.213.1.1.1.1']"),
    "no setId": _drop("/h:ClinicalDocument/h:setId"),
    "no custodian id": _drop("//h:representedCustodianOrganization/h:id"),
    "no author time": _drop("//h:author/h:time"),
    "no patient id": _drop("//h:patientRole/h:id"),
    "parent document id nullFlavor": lambda doc: doc.find("{urn:hl7-org:v3}setId").addnext(
        etree.fromstring(
            '<relatedDocument xmlns="urn:hl7-org:v3" typeCode="RPLC"><parentDocument><id nullFlavor="NAV"/>'
            "</parentDocument></relatedDocument>"
        )
    ),
}


@pytest.mark.parametrize("fault", sorted(MUTATIONS))
def test_cda_validate_refuses_what_the_header_schematron_refuses(ans: AnsValidator, fault: str) -> None:
    doc = etree.fromstring((CASES / "crbio_chemistry_panel" / "expected.xml").read_bytes())
    MUTATIONS[fault](doc)
    xml = etree.tostring(doc, xml_declaration=True, encoding="UTF-8")
    report = ans.validate(xml, fault)
    assert report.xsd_errors or report.failed["StructurationMinimale"], "the mutation must be an ANS refusal"
    with pytest.raises(MessageError):
        validated(xml)


def hl7v2_example_documents() -> dict[bytes, str]:
    """CDA documents carried (base64) in the ANS HL7 v2 example messages, when ANS_HL7V2_EXAMPLES_DIR is set."""
    import base64
    import os
    import re

    root = os.environ.get("ANS_HL7V2_EXAMPLES_DIR", "")
    if not root:
        pytest.skip("ANS_HL7V2_EXAMPLES_DIR is not set: give a checkout of ansforge/hl7V2-exemples")
    found: dict[bytes, str] = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file() and path.suffix.lower() in (".er7", ".hl7"):
            text = path.read_bytes().decode("utf-8", "replace")
            for match in re.finditer(r"\^TEXT\^XML\^Base64\^([A-Za-z0-9+/=\s]+)", text, re.IGNORECASE):
                data = re.sub(r"\s", "", match[1])
                document = base64.b64decode(data + "=" * (-len(data) % 4))
                if b"ClinicalDocument" in document:
                    found.setdefault(document, path.name)
    return found


def test_cda_validate_and_ans_agree_on_the_hl7v2_example_documents(ans: AnsValidator) -> None:
    """The CDAs of the ANS HL7 v2 examples: the hub refuses exactly those the ANS validation refuses."""
    documents = hl7v2_example_documents()
    assert documents
    disagree = []
    for xml, name in documents.items():
        report = ans.validate(xml, name)
        try:
            validated(xml)
            hub_accepts = True
        except MessageError:
            hub_accepts = False
        if hub_accepts != report.ok:
            disagree.append(report.summary())
    print(f"\n{len(documents)} documents in the ANS HL7 v2 examples, {len(disagree)} verdicts differ")
    assert disagree == []
