"""Golden files for the HL7 v2 -> CI-SIS CDA mappings, and the cases they must refuse.

Each folder of ``tests/mappings/cases`` holds a synthetic ``input.hl7`` (invented
patients; INS from the *test* authority 1.2.250.1.213.1.4.10; ids under the
example arc 2.999), the ``expected.xml`` the step must produce (compared after
XML canonicalisation, C14N 2.0) unless the step produces no document, and the
``expected_metadata.json`` the step must add. Folders named ``crbio_*`` run
``v2_oru_to_cda_crbio``; ``document_*`` run ``v2_document_to_cda``. A correction finds the version
it replaces among the documents the hub sent earlier: here, the other cases' expected documents
(:data:`HISTORY`, as :mod:`hub.documents` reads them from the store). A PDF copy the hub renders
itself is compared apart from the XML (its bytes depend on the PDF library's version): valid,
deterministic, and showing the report.

Regenerate the expected files after an intended change with
``UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/mappings/test_cda_golden.py``
and review the diff.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from lxml import etree

from hub import registry
from hub.content_types import ContentType
from hub.documents import DocumentsNeeded, DocumentVersion
from hub.errors import MappingError, MessageError, Retryable
from hub.message import Message
from hub.pipeline import StepContext
from mappings.cda import validate_cda_header
from mappings.cda.builder import CdaConfig, PractitionerConfig
from mappings.cda.crbio import CrBioConfig, oru_to_crbio
from mappings.cda.hl7v2_documents import DocumentConfig, read_v2_document
from mappings.hl7v2.reader import read_hl7v2_metadata
from mappings.xml import parse_xml

CASES = Path(__file__).resolve().parent / "cases"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
NS = {"h": "urn:hl7-org:v3"}

_COMMON = {
    "document_id_root": "2.999.1",
    "patient_id_roots": {"HOPTEST": "2.999.2.2"},
}
CRBIO = CrBioConfig(
    custodian={
        "id": "1999000001",
        "name": "Laboratoire de test",
        "telecom": "tel:+33100000000",
        "street": "1 rue de l'Exemple",
        "postal_code": "75012",
        "city": "PARIS",
    },
    practice_setting={"code": "AMBULATOIRE", "display_name": "Ambulatoire", "code_system": "1.2.250.1.213.1.1.4.9"},
    healthcare_facility={
        "code": "SA25",
        "display_name": "Laboratoire de biologie médicale",
        "code_system": "1.2.250.1.71.4.2.4",
    },
    **_COMMON,
)
DOCUMENTS = DocumentConfig(
    practice_setting={
        "code": "ETABLISSEMENT",
        "display_name": "Etablissement de santé",
        "code_system": "1.2.250.1.213.1.1.4.9",
    },
    healthcare_facility={
        "code": "SA01",
        "display_name": "Etablissement public de santé",
        "code_system": "1.2.250.1.71.4.2.4",
    },
    **_COMMON,
)


def case_names() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if (p / "input.hl7").is_file())


def _history() -> dict[str, DocumentVersion]:
    """setId -> the original version, for every case that creates a document."""
    found = {}
    for name in case_names():
        path = CASES / name / "expected_metadata.json"
        if not path.exists():  # a new case, before its first UPDATE_GOLDEN run
            continue
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("document_action") == "create":
            found[meta["set_id"]] = DocumentVersion(meta["unique_id"], int(meta["version_number"]))
    return found


HISTORY = _history()
HUB_PDF_SECTION = "1.2.250.1.213.1.1.2.243"


def inbound(body: bytes, **metadata: str) -> Message:
    """The message as the MLLP listener would store it (MSH metadata read by the registered reader)."""
    return Message.new(body, content_type=ContentType.HL7V2, metadata={**read_hl7v2_metadata(body), **metadata})


def run(name: str, body: bytes, **hints: str) -> Message:
    """Run the registered step (looked up by name, as a route would) with the test config."""
    step, config = ("v2_oru_to_cda_crbio", CRBIO) if name.startswith("crbio") else ("v2_document_to_cda", DOCUMENTS)
    component = registry.get("step", step)
    assert component is not None
    assert component.consumes == (ContentType.HL7V2,) and component.produces == ContentType.CDA
    if component.needs:
        return component.factory(inbound(body, **hints), config, ctx=StepContext(documents=HISTORY))
    return component.factory(inbound(body, **hints), config)


def c14n(xml: bytes) -> bytes:
    # Parsed with the hub's safe parser first; whitespace-only text (pretty-printing) is ignored.
    root = parse_xml(xml)
    for media in hub_rendered_pdfs(root):
        media.text = "(PDF rendered by the hub)"
    return etree.canonicalize(root, strip_text=True).encode()


def hub_rendered_pdfs(root: etree._Element) -> list[etree._Element]:
    """observationMedia values of the PDF copy that the hub made (its Creator is the hub)."""
    path = f"//h:section[h:templateId/@root='{HUB_PDF_SECTION}']//h:observationMedia/h:value"
    return [v for v in root.xpath(path, namespaces=NS) if b"/Creator (interop-hub)" in base64.b64decode(v.text)]


def produced_metadata(message: Message, original: Message) -> dict[str, str]:
    return {k: v for k, v in message.metadata.items() if original.metadata.get(k) != v or k not in original.metadata}


# ------------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("name", case_names())
def test_golden_case(name: str) -> None:
    folder = CASES / name
    body = (folder / "input.hl7").read_bytes()
    original = inbound(body)
    out = run(name, body)
    assert out.correlation_id != "" and out.parent_id is not None
    metadata = produced_metadata(out, original)
    expected_xml, expected_meta = folder / "expected.xml", folder / "expected_metadata.json"
    if UPDATE:
        if out.body:
            expected_xml.write_bytes(out.body)
        expected_meta.write_text(json.dumps(metadata, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    assert metadata == json.loads(expected_meta.read_text(encoding="utf-8"))
    if metadata["document_action"] == "delete":
        assert out.content_type == ContentType.CDA_DELETION and out.body == b""
        assert not expected_xml.exists()
        return
    assert out.content_type == ContentType.CDA
    assert c14n(out.body) == c14n(expected_xml.read_bytes())
    # Every produced CDA passes the CI-SIS header rules, INS required when it goes to the DMP.
    assert validate_cda_header(out.body, require_ins=metadata.get("dest_dmp") == "Y") == []


@pytest.mark.parametrize("name", [n for n in case_names() if not n.endswith("deletion")])
def test_narrative_references_resolve(name: str) -> None:
    """Every entry reference points at a narrative ID, and every result row is referenced."""
    root = parse_xml(run(name, (CASES / name / "input.hl7").read_bytes()).body)
    ids = {e.get("ID") for e in root.iter() if e.get("ID")}
    refs = [r.get("value") for r in root.iterfind(".//h:reference", NS)]
    assert all(ref.startswith("#") and ref[1:] in ids for ref in refs)
    assert {i for i in ids if i.startswith(("res-", "cmt-"))} <= {ref[1:] for ref in refs}


def test_replay_gives_the_same_document_ids() -> None:
    body = (CASES / "crbio_chemistry_panel" / "input.hl7").read_bytes()
    first, second = run("crbio", body), run("crbio", body)
    assert first.id != second.id
    assert first.body == second.body
    assert first.metadata["unique_id"] == second.metadata["unique_id"]


def test_versions_of_one_document_share_the_set_id() -> None:
    meta = {n: json.loads((CASES / n / "expected_metadata.json").read_text()) for n in case_names()}
    original, corrected = meta["crbio_chemistry_panel"], meta["crbio_corrected_result"]
    assert corrected["set_id"] == original["set_id"] and corrected["unique_id"] != original["unique_id"]
    assert (original["version_number"], corrected["version_number"]) == ("1", "2")
    letter, replacement = meta["document_mdm_t02_pdf_letter"], meta["document_mdm_t10_replacement"]
    assert replacement["set_id"] == letter["set_id"]
    assert replacement["document_replaces_id"] == letter["unique_id"]
    assert meta["document_mdm_t04_deletion"]["unique_id"] == replacement["unique_id"]


def test_correction_uses_the_parent_named_by_an_earlier_step() -> None:
    body = (CASES / "crbio_corrected_result" / "input.hl7").read_bytes()
    out = run("crbio_", body, cda_replaces_id="2.999.1.1.42", cda_replaces_version="2")
    root = parse_xml(out.body)
    assert root.find("h:versionNumber", NS).get("value") == "3"
    parent = root.find("h:relatedDocument[@typeCode='RPLC']/h:parentDocument", NS)
    assert parent.find("h:id", NS).get("root") == "2.999.1.1.42"
    assert parent.find("h:versionNumber", NS).get("value") == "2"
    assert out.metadata["document_replaces_id"] == "2.999.1.1.42"
    assert validate_cda_header(out.body) == []


@pytest.mark.parametrize(
    ("correction", "original"),
    [
        ("crbio_corrected_result", "crbio_chemistry_panel"),
        ("crbio_lab_pdf_corrected", "crbio_lab_pdf"),
        ("crbio_microbiology_corrected", "crbio_microbiology_comment"),
    ],
)
def test_correction_replaces_the_version_the_hub_sent(correction: str, original: str) -> None:
    """parentDocument: the original's uniqueId and version, no setId (CI-SISRelatedDocument)."""
    root = parse_xml((CASES / correction / "expected.xml").read_bytes())
    sent = json.loads((CASES / original / "expected_metadata.json").read_text())
    parent = root.find("h:relatedDocument[@typeCode='RPLC']/h:parentDocument", NS)
    assert parent.find("h:id", NS).attrib == {"root": sent["unique_id"]}
    assert parent.find("h:versionNumber", NS).get("value") == sent["version_number"] == "1"
    assert [child.tag.split("}")[1] for child in parent] == ["id", "versionNumber"]
    assert root.find("h:setId", NS).get("root") == sent["set_id"]
    assert root.find("h:versionNumber", NS).get("value") == "2"


def test_correction_of_an_unknown_original_is_refused_or_waits() -> None:
    body = (CASES / "crbio_corrected_result" / "input.hl7").read_bytes()
    component = registry.get("step", "v2_oru_to_cda_crbio")
    assert component is not None and "documents" in component.needs
    with pytest.raises(MappingError, match="has not sent") as info:
        component.factory(inbound(body), CRBIO, ctx=StepContext(documents={}))
    assert info.value.location == "OBX^1^11"
    waiting = CRBIO.model_copy(update={"unknown_original": "wait"})
    with pytest.raises(Retryable, match="has not sent"):
        component.factory(inbound(body), waiting, ctx=StepContext(documents={}))
    # A version of another order is no parent.
    other = {"2.999.1.2.1": DocumentVersion("2.999.1.1.1", 1)}
    with pytest.raises(MappingError):
        component.factory(inbound(body), CRBIO, ctx=StepContext(documents=other))
    # Not looked up yet: the step asks the hub for the versions of its setId (hub.documents.apply_steps).
    with pytest.raises(DocumentsNeeded) as asked:
        component.factory(inbound(body), CRBIO, ctx=StepContext())
    expected = json.loads((CASES / "crbio_corrected_result" / "expected_metadata.json").read_text())
    assert asked.value.set_ids == (expected["set_id"],)
    # An original never asks.
    original = (CASES / "crbio_chemistry_panel" / "input.hl7").read_bytes()
    assert component.factory(inbound(original), CRBIO, ctx=StepContext()).metadata["version_number"] == "1"


def test_the_pdf_is_carried_unchanged() -> None:
    body = (CASES / "document_mdm_t02_pdf_letter" / "input.hl7").read_bytes()
    sent = next(line for line in body.decode().splitlines() if line.startswith("OBX|1|ED|")).split("^")[-1]
    pdf = base64.b64decode(sent.split("|")[0])
    root = parse_xml(run("document", body).body)
    text = root.find("h:component/h:nonXMLBody/h:text", NS)
    assert (text.get("mediaType"), text.get("representation")) == ("application/pdf", "B64")
    assert base64.b64decode(text.text) == pdf and pdf.startswith(b"%PDF-")
    assert [t.get("root") for t in root.iterfind("h:templateId", NS)] == [
        "2.16.840.1.113883.2.8.2.1",
        "1.2.250.1.213.1.1.1.1",
        "1.3.6.1.4.1.19376.1.2.20",
    ]


def test_an_encapsulated_cda_is_passed_through_byte_for_byte() -> None:
    cda = (CASES / "crbio_chemistry_panel" / "expected.xml").read_bytes()
    out = run("document", oru_with_document(cda))
    assert out.body == cda
    assert out.metadata["document_action"] == "create" and out.metadata["dest_dmp"] == "Y"


# ----------------------------------------------------------------------------- building test inputs


def chemistry() -> str:
    return (CASES / "crbio_chemistry_panel" / "input.hl7").read_text(encoding="utf-8")


def replace_line(text: str, prefix: str, new: str | None) -> str:
    """Replace (or drop, with None) every line starting with ``prefix``."""
    lines = [(new if line.startswith(prefix) else line) for line in text.splitlines()]
    return "\n".join(line for line in lines if line is not None) + "\n"


def oru_with_document(document: bytes, *, status: str = "F", subtype: str = "XML", flags: str = "Y") -> bytes:
    """An ORU^R01 of the Ségur volet carrying ``document`` (the chemistry patient, PRT SB, flags)."""
    text = chemistry()
    keep = [line for line in text.splitlines() if line.startswith(("MSH", "PID", "PV1", "PRT"))]
    meta = [line for line in text.splitlines() if "MetaDMPMSS" in line]
    meta = [line.replace("DESTDMP^Destinataire DMP^MetaDMPMSS||Y", f"DESTDMP^Destinataire DMP^MetaDMPMSS||{flags}")
            for line in meta]  # fmt: skip
    control = {"F": "NW", "C": "RO", "D": "CA"}[status]
    encoded = base64.b64encode(document).decode()
    lines = [
        *keep[:3],
        f"ORC|{control}",
        "OBR|1|||11502-2^CR d'examens biologiques^LN",
        f"OBX|1|ED|11502-2^CR d'examens biologiques^LN||^TEXT^{subtype}^Base64^{encoded}||||||{status}",
        *keep[3:],
        *meta,
    ]
    return ("\n".join(lines) + "\n").encode()


def refused(name: str, body: str | bytes, config: CdaConfig | None = None, **hints: str) -> MessageError:
    data = body.encode() if isinstance(body, str) else body
    with pytest.raises(MessageError) as info:
        if name == "crbio":
            oru_to_crbio(data, config=config or CRBIO, hints=hints)  # type: ignore[arg-type]
        else:
            read_v2_document(data, config=config or DOCUMENTS, hints=hints)  # type: ignore[arg-type]
    return info.value


SECRETS = ("285077511234511", "TESTCHIMIE", "ALICE", "19850712", "TESTUSAGE", "IPP0001")


def assert_phi_free(error: MessageError) -> None:
    text = f"{error} {error.reason} {error.location}"
    assert not any(secret in text for secret in SECRETS), text


# ------------------------------------------------------------------------------------ CR-BIO refusals


MASQUE = "MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS"
INVISIBLE = "INVISIBLE_PATIENT^Document Non Visible par le patient^MetaDMPMSS"
TO_PATIENT = "DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS"


def document_line(text: str) -> str:
    return next(x for x in text.splitlines() if x.startswith("OBX|1|ED"))


def _obx(n: int, rest: str) -> str:
    return f"OBX|{n}|{rest}"


CRBIO_REFUSALS = {
    "no OBX at all": (lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("OBX")) + "\n", "OBR^1^1"),
    "OBR without results": (lambda t: t + "OBR|2|||24323-8^Bilan^LN||||||||||||||||||CH|F\n", "OBR^2^1"),
    "OBX before any OBR": (lambda t: replace_line(t, "OBR", None), "OBX^1^1"),
    "unknown unit": (
        lambda t: replace_line(t, "OBX|3|", _obx(3, "NM|2823-3^Potassium^LN||4.1|furlongs|||||F")),
        "OBX^3^6",
    ),
    "non-LOINC result code": (
        lambda t: replace_line(t, "OBX|3|", _obx(3, "NM|K^Potassium^L||4.1|mmol/L|||||F")),
        "OBX^3^3",
    ),
    "flag outside the value set": (
        lambda t: replace_line(t, "OBX|3|", _obx(3, "NM|2823-3^Potassium^LN||4.1|mmol/L||MS|||F")),
        "OBX^3^8",
    ),
    "preliminary result": (
        lambda t: replace_line(t, "OBX|3|", _obx(3, "NM|2823-3^Potassium^LN||4.1|mmol/L|||||P")),
        "OBX^3^11",
    ),
    "numeric that is not a number": (
        lambda t: replace_line(t, "OBX|3|", _obx(3, "NM|2823-3^Potassium^LN||quatre|mmol/L|||||F")),
        "OBX^3^5",
    ),
    "unsupported value type": (
        lambda t: replace_line(t, "OBX|3|", _obx(3, "RP|2823-3^Potassium^LN||x|mmol/L|||||F")),
        "OBX^3^2",
    ),
    "empty result": (
        lambda t: replace_line(t, "OBX|3|", _obx(3, "NM|2823-3^Potassium^LN|||mmol/L|||||F")),
        "OBX^3^5",
    ),
    "bad timestamp": (
        lambda t: replace_line(t, "OBX|3|", _obx(3, "NM|2823-3^Potassium^LN||4.1|mmol/L|||||F|||2025-03-14")),
        "OBX^3^14",
    ),
    "unknown chapter": (lambda t: t.replace("||CH|F|", "||ZZ|F|"), "OBR^1^24"),
    "not an ORU": (lambda t: t.replace("ORU^R01^ORU_R01", "ORU^R30^ORU_R30"), "MSH^1^9"),
    "encapsulated CDA": (
        lambda t: t.replace("OBX|4|NM|", "OBX|4|ED|").replace("|139|mmol/L^^UCUM|", "|^TEXT^XML^Base64^PGE+|"),
        "OBX^4^5",
    ),
    "no birth date": (lambda t: t.replace("|19850712|", "||"), "PID^1^7"),
    "INS without birthplace": (lambda t: t.replace("^^PARIS 12E ARRONDISSEMENT^^^^BDL^^75112", ""), "PID^1^11"),
    "no usable patient id": (
        lambda t: t.replace("LABO-TEST&2.999.2.1&ISO", "LABO-TEST&410000016&M").replace("|VALI", "|PROV"),
        "PID^1^3",
    ),
    "hidden document to the patient": (
        lambda t: t.replace(f"{INVISIBLE}||N", f"{INVISIBLE}||Y").replace(f"{TO_PATIENT}||N", f"{TO_PATIENT}||Y"),
        "",
    ),
    "flag that is not Y/N": (lambda t: t.replace(f"{MASQUE}||N", "MASQUE_PS^x^MetaDMPMSS||O"), "OBX^5^5^1"),
    "DMP without the PRT SB sender": (lambda t: replace_line(t, "PRT", None), ""),
}


@pytest.mark.parametrize("case", sorted(CRBIO_REFUSALS))
def test_crbio_refuses(case: str) -> None:
    change, location = CRBIO_REFUSALS[case]
    error = refused("crbio", change(chemistry()))
    assert isinstance(error, MappingError)
    assert error.location == location
    assert_phi_free(error)


def test_crbio_needs_an_author_and_site_config() -> None:
    no_author = chemistry().replace("810000000001&TESTBIOLOGISTE&PAUL&&&&&&ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO", "")
    assert "no config author" in refused("crbio", no_author).reason
    local_author = (
        chemistry()
        .replace("810000000001&TESTBIOLOGISTE", "L07&TESTBIOLOGISTE")
        .replace("&ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO", "&LABO&&L")
    )
    assert "national id" in refused("crbio", local_author).reason
    with_author = CRBIO.model_copy(update={"author": PractitionerConfig(id="810000000077", family="TESTCONFIG")})
    xml, meta = oru_to_crbio(no_author.encode(), config=with_author)
    assert meta["author_id"] == "810000000077" and validate_cda_header(xml) == []
    bare = CrBioConfig(document_id_root="2.999.1", custodian=CRBIO.custodian)
    assert "practice_setting" in refused("crbio", chemistry(), bare).reason
    unsited = bare.model_copy(update={"practice_setting": CRBIO.practice_setting})
    assert "healthcare_facility" in refused("crbio", chemistry(), unsited).reason
    no_lab = CRBIO.model_copy(update={"custodian": None})
    undistributed = "\n".join(x for x in chemistry().splitlines() if not x.startswith("PRT") and "MetaDMPMSS" not in x)
    assert "no laboratory" in refused("crbio", undistributed + "\n", no_lab).reason


def test_crbio_2024_embeds_the_lab_pdf_copy() -> None:
    v2024 = CRBIO.model_copy(update={"crbio_version": "2024.01"})
    pdf = base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()
    with_pdf = chemistry().replace(
        "SPM|", f"OBX|5|ED|11502-2^CR d'examens biologiques^LN||^AP^PDF^Base64^{pdf}||||||F\nSPM|"
    )
    xml, _ = oru_to_crbio(with_pdf.encode(), config=v2024)
    root = parse_xml(xml)
    [section] = root.xpath("//h:section[h:templateId/@root='1.2.250.1.213.1.1.2.243']", namespaces=NS)
    media = section.find(".//h:observationMedia/h:value", NS)
    assert base64.b64decode(media.text) == b"%PDF-1.4\n%%EOF\n"
    assert root.find("h:templateId[@root='1.2.250.1.213.1.1.1.55']", NS).get("extension") == "2024.01"
    assert validate_cda_header(xml) == []


def pdf_text(pdf: bytes) -> str:
    """The text a reader sees in an uncompressed PDF of the core fonts: every ``(...) Tj`` string."""
    import re

    shown = re.findall(rb"\((.*?)(?<!\\)\) ?Tj", pdf)
    return " ".join(t.replace(b"\\(", b"(").replace(b"\\)", b")").decode("latin-1") for t in shown)


@pytest.mark.parametrize("name", ["crbio_chemistry_panel", "crbio_microbiology_comment", "crbio_corrected_result"])
def test_without_a_lab_pdf_the_hub_renders_a_readable_one(name: str) -> None:
    out = run(name, (CASES / name / "input.hl7").read_bytes())
    root = parse_xml(out.body)
    [media] = hub_rendered_pdfs(root)
    pdf = base64.b64decode(media.text)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert run(name, (CASES / name / "input.hl7").read_bytes()).body == out.body  # deterministic
    text = pdf_text(pdf)
    # identity traits, laboratory, validating biologist
    assert "TESTBIOLOGISTE" in text and "Laboratoire de test" in text and "Date de naissance" in text
    for row in root.iterfind(".//h:section/h:text/h:table/h:tbody/h:tr", NS):
        cells = ["".join(td.itertext()).strip() for td in row.iterfind("h:td", NS)]
        for cell in cells:  # each result: name, value, unit, reference range, interpretation
            assert cell in text, cell
    for comment in root.xpath(".//h:paragraph/h:content[starts-with(@ID, 'cmt-')]", namespaces=NS):
        assert (comment.text or "").strip() in text  # the first line of each comment


def test_the_prescriber_is_in_the_rendered_pdf() -> None:
    out = run("crbio_", (CASES / "crbio_chemistry_panel" / "input.hl7").read_bytes())
    [media] = hub_rendered_pdfs(parse_xml(out.body))
    assert "Prescripteur LUC TESTPRESCRIPTEUR" in pdf_text(base64.b64decode(media.text))


def test_the_lab_pdf_wins_over_a_rendered_one() -> None:
    out = run("crbio_", (CASES / "crbio_lab_pdf" / "input.hl7").read_bytes())
    root = parse_xml(out.body)
    assert hub_rendered_pdfs(root) == []
    sent = next(x for x in (CASES / "crbio_lab_pdf" / "input.hl7").read_text().splitlines() if "|ED|" in x)
    media = root.find(".//h:observationMedia/h:value", NS)
    assert media.text == sent.split("^Base64^")[1].split("|")[0]


def test_hostile_text_stays_text() -> None:
    """Markup and control characters in HL7 fields never become XML structure."""
    hostile = (
        chemistry()
        .replace("SPM|", "NTE|1|L|</content><script>alert(1)</script>&amp; \x01\x02 fin\nSPM|")
        .replace("TESTBIOLOGISTE", "TEST<b>BIO</b>")
    )
    xml, _ = oru_to_crbio(hostile.encode(), config=CRBIO)
    root = parse_xml(xml)
    assert not list(root.iter("{urn:hl7-org:v3}script")) and not list(root.iter("{urn:hl7-org:v3}b"))
    texts = "".join(root.itertext())
    assert "<script>alert(1)</script>&amp;  fin" in texts and "TEST<b>BIO</b>" in texts
    assert validate_cda_header(xml) == []


# --------------------------------------------------------------------------------- document refusals


def t02() -> str:
    return (CASES / "document_mdm_t02_pdf_letter" / "input.hl7").read_text(encoding="utf-8")


DOCUMENT_REFUSALS = {
    "trigger and OBX-11 disagree": (lambda t: t.replace("MDM^T02^MDM_T02", "MDM^T10^MDM_T02"), "MSH^1^9"),
    "ORC-1 and OBX-11 disagree": (lambda t: t.replace("ORC|NW", "ORC|CA"), "ORC^1^1"),
    "unknown OBX-11": (lambda t: t.replace("||||||F\nPRT", "||||||P\nPRT", 1), "OBX^1^11"),
    "no encapsulated document": (lambda t: t.replace("OBX|1|ED|", "OBX|1|TX|"), "OBX"),
    "two documents": (lambda t: t.replace("PRT||UC||SB", document_line(t) + "\nPRT||UC||SB", 1), "OBX^2^5"),
    "not base64": (lambda t: t.replace("^AP^PDF^Base64^JVBER", "^AP^PDF^Base64^**JVBER"), "OBX^1^5^5"),
    "PDF subtype without a PDF": (lambda t: t.replace("^AP^PDF^Base64^JVBER", "^AP^PDF^Base64^AAAAA"), "OBX^1^5^5"),
    "unknown subtype": (lambda t: t.replace("^AP^PDF^Base64^", "^AP^RTF^Base64^"), "OBX^1^5^3"),
    "document type not LN/TRE_A05": (lambda t: t.replace("^LN||^AP^PDF", "^L||^AP^PDF"), "OBX^1^3^3"),
    "not a document message": (lambda t: t.replace("MDM^T02^MDM_T02", "MDM^T01^MDM_T01"), "MSH^1^9"),
    "missing required flag": (lambda t: replace_line(t, "OBX|3|CWE|INVISIBLE_PATIENT", None), "OBX"),
    "unknown MetaDMPMSS code": (lambda t: t.replace("MASQUE_PS^", "MASQUER^"), "OBX^2^3^1"),
    "MSSanté PS without a PS recipient": (
        lambda t: replace_line(t, "PRT||UC||RCT^^participation|810000000004", None),
        "",
    ),
    "RCT without an address": (lambda t: t.replace("^^X.400^marc.testgeneraliste@test.mssante.fr", ""), "PRT^2^15^4"),
    "DMP without INS": (lambda t: t.replace("|VALI", "|PROV"), ""),
    "document id that is no id": (lambda t: t.replace("|2.999.3.1.1001|", "|LETTRE-1|"), "TXA^1^12"),
}


@pytest.mark.parametrize("case", sorted(DOCUMENT_REFUSALS))
def test_document_refuses(case: str) -> None:
    change, location = DOCUMENT_REFUSALS[case]
    error = refused("document", change(t02()))
    assert isinstance(error, MappingError)
    assert error.location == location
    assert not any(s in f"{error}" for s in ("291016938700125", "TESTMICRO", "CAMILLE", "19910115"))


def test_document_needs_site_config() -> None:
    bare = DocumentConfig(document_id_root="2.999.1", patient_id_roots={"HOPTEST": "2.999.2.2"})
    assert "practice_setting" in refused("document", t02(), bare).reason


def test_mssante_matrix_is_enforced_on_request() -> None:
    # PS and patient recipients with the document masked to professionals: outside the volet's matrix.
    masked = t02().replace(f"{MASQUE}||N", f"{MASQUE}||Y")
    assert read_v2_document(masked.encode(), config=DOCUMENTS).metadata["mask_ps"] == "Y"
    strict = DOCUMENTS.model_copy(update={"enforce_mssante_matrix": True})
    assert "matrix" in refused("document", masked, strict).reason


def test_encapsulated_cda_must_match_the_message() -> None:
    cda = (CASES / "crbio_chemistry_panel" / "expected.xml").read_bytes()
    other_patient = oru_with_document(cda).replace(b"285077511234511^^^ASIP", b"291016938700125^^^ASIP")
    assert refused("document", other_patient).location == "PID^1^3"
    assert "relatedDocument" in refused("document", oru_with_document(cda, status="C")).reason
    broken = cda.replace(b'<realmCode code="FR"/>', b"")
    assert "realm-code" in refused("document", oru_with_document(broken)).reason
    no_ins = cda.replace(b'<id root="1.2.250.1.213.1.4.10" extension="285077511234511"/>', b"")
    no_ins_msg = oru_with_document(no_ins).replace(b"|VALI", b"|PROV")
    assert "ins-required" in refused("document", no_ins_msg).reason
    assert refused("document", oru_with_document(b"<html/>")).location == "OBX^1^5"
    assert refused("document", oru_with_document(b"<!DOCTYPE x><x/>")).__class__.__name__ == "ParseError"


def test_encapsulated_cda_deletion_is_a_request_without_document() -> None:
    cda = (CASES / "crbio_chemistry_panel" / "expected.xml").read_bytes()
    result = read_v2_document(oru_with_document(cda, status="D"), config=DOCUMENTS)
    assert (result.action, result.content_type, result.body) == ("delete", ContentType.CDA_DELETION, b"")
    expected = json.loads((CASES / "crbio_chemistry_panel" / "expected_metadata.json").read_text())
    assert result.metadata["unique_id"] == expected["unique_id"]
    assert result.metadata["ins"] == expected["ins"]


def test_pdf_deletion_needs_txa_12() -> None:
    no_txa = "\n".join(x for x in (CASES / "document_mdm_t04_deletion" / "input.hl7").read_text().splitlines()
                       if not x.startswith("TXA")) + "\n"  # fmt: skip
    assert refused("document", no_txa).location == "TXA^1^12"


def test_steps_describe_their_config() -> None:
    for name in ("v2_oru_to_cda_crbio", "v2_document_to_cda"):
        component = registry.get("step", name)
        assert component is not None and component.summary
        schema = component.config.model_json_schema()
        assert all("description" in p for p in schema["properties"].values())


def test_steps_without_site_config_refuse_with_the_setting_to_add() -> None:
    """Until a route passes a config, the steps refuse and name the missing setting (no guessing)."""
    for step, case in (
        ("v2_oru_to_cda_crbio", "crbio_chemistry_panel"),
        ("v2_document_to_cda", "document_mdm_t02_pdf_letter"),
    ):
        component = registry.get("step", step)
        assert component is not None
        with pytest.raises(MappingError, match="practice_setting"):
            component.factory(inbound((CASES / case / "input.hl7").read_bytes()))
