"""Every document the golden tests produce passes the official ANS validation (``make conformance``).

Needs a checkout of the ANS TestContenuCDA repository in ``$ANS_TESTCONTENU_DIR`` and the
``saxonche`` package (extra ``conformance``); skipped, with the reason, without them. A document
passes when the XSD reports no error and the structuration minimale and volet schematrons report
no failed assert, warnings included (the "closed" structuration minimale warns of every element
the CI-SIS header does not define: such an element is not what the rules want either).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.message import Message
from mappings.cda.builder import CONTENT_CDA, OrganizationConfig
from mappings.cda.crbio import oru_to_crbio
from mappings.cda.hl7v2_documents import read_v2_document
from mappings.cda.validate import cda_validate
from mappings.cda.value_sets import value_set
from tests.conformance.ans import ENV_VAR, SVS_NS, AnsValidator, checkout_from_env
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
    return cda_validate(Message.new(xml, content_type=CONTENT_CDA, metadata={}))


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


def test_the_shipped_value_sets_are_the_published_ones() -> None:
    """mappings/cda/value_sets holds the same concepts and version as the checkout's SVS file."""
    from lxml import etree

    svs = etree.parse(str(ans_checkout() / "jeuxDeValeurs" / "JDV_J07_XdsTypeCode_CISIS.xml")).getroot()
    published = svs.find(f"{{{SVS_NS}}}ValueSet")
    shipped = value_set("JDV_J07_XdsTypeCode_CISIS")
    assert (shipped.id, shipped.version) == (published.get("id"), published.get("dateMaj"))
    pairs = {(c.get("code"), c.get("codeSystem")) for c in published.iter(f"{{{SVS_NS}}}Concept")}
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
