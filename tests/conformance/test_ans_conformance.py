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

from tests.conformance.ans import ENV_VAR, AnsValidator, checkout_from_env

CASES = Path(__file__).resolve().parent.parent / "mappings" / "cases"
GOLDEN = sorted(CASES.glob("*/expected*.xml"))


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
