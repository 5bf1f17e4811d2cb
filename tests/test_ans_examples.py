"""The ANS example HL7 v2 messages (ansforge/hl7V2-exemples) through the hub's readers.

Runs only when ``ANS_HL7V2_EXAMPLES_DIR`` points to a checkout of that repository (its files are
not part of this project). Every example message must be read by the listener's reader; every
ORU / MDM must either give its document(s) or be refused with a reason and an HL7 error location
(several examples carry a placeholder text instead of a CDA, or a CDA the current CI-SIS rules
refuse). The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hub.errors import MessageError
from mappings.cda.hl7v2_documents import DocumentConfig, check_v2_documents, read_v2_document
from mappings.hl7v2.reader import read_hl7v2_metadata

EXAMPLES = os.environ.get("ANS_HL7V2_EXAMPLES_DIR", "")
pytestmark = pytest.mark.skipif(
    not EXAMPLES, reason="set ANS_HL7V2_EXAMPLES_DIR to a checkout of ansforge/hl7V2-exemples"
)
CONFIG = DocumentConfig(
    document_id_root="2.999.1",
    custodian={"id": "1999000001", "name": "Structure de test", "city": "PARIS"},
    practice_setting={"code": "AMBULATOIRE", "display_name": "Ambulatoire", "code_system": "1.2.250.1.213.1.1.4.9"},
    healthcare_facility={"code": "SA25", "display_name": "Laboratoire", "code_system": "1.2.250.1.71.4.2.4"},
)


def example_messages() -> list[Path]:
    root = Path(EXAMPLES)
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and (p.suffix.lower() in (".er7", ".hl7") or p.name.startswith("Message metier"))
    )


def test_every_ans_example_message_is_read_and_every_document_message_answered() -> None:
    files = example_messages()
    assert files, "no .er7/.hl7 file under ANS_HL7V2_EXAMPLES_DIR"
    documents, accepted, refused = 0, 0, []
    for path in files:
        body = path.read_bytes()
        meta = read_hl7v2_metadata(body)  # the listener's reader: every example must pass
        if not meta["message_type"].startswith(("ORU^R01", "MDM^T")):
            continue
        documents += 1
        try:
            check = check_v2_documents(body)
            if check.get("document_count") == "0":
                continue
            for level in ("level3", "level1")[: int(check["document_count"])]:
                read_v2_document(body, config=CONFIG.model_copy(update={"format": level}))
        except MessageError as exc:
            assert exc.location, f"{path.name}: refused without an HL7 location ({exc.reason})"
            refused.append(f"{path.relative_to(EXAMPLES)}: {exc.location}: {exc.reason}")
            continue
        accepted += 1
    print(f"\nANS examples: {len(files)} messages read; {documents} ORU/MDM, {accepted} give their documents")
    print("\n".join(refused))
    assert documents > 0
