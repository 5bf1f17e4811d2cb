"""The Ségur volet "Transmission de documents CDA en HL7v2" taken as senders write it.

The messages are this project's own synthetic cases (tests/mappings/cases), varied the ways real
senders and the ANS example messages vary: a document in two formats in one ORU (volet, "Message
ORU"), a CDA sent as text in OBX-5, base64 without padding, a document id written ``root.ext`` in
TXA-12, ORC-1 ``SC``, an empty OBX-11, an unreadable optional mail body. Each rule cited is the
volet's (ansforge/IG-hl7v2-volet-transmission-document-cda-r2, profils-messages.md).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from hub.content_types import ContentType
from hub.errors import MappingError
from mappings.cda.hl7v2_documents import DocumentConfig, check_v2_documents, read_v2_document
from mappings.hl7v2.er7 import Delimiters, escape
from mappings.xml import parse_xml

CASES = Path(__file__).resolve().parent / "cases"
PDF_B64 = base64.b64encode(b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n").decode()
CONFIG = DocumentConfig(
    document_id_root="2.999.1",
    patient_id_roots={"LABO-TEST": "2.999.2.1", "HOPTEST": "2.999.2.2"},
    custodian={"id": "1999000001", "name": "Laboratoire de test", "city": "PARIS"},
    practice_setting={"code": "AMBULATOIRE", "display_name": "Ambulatoire", "code_system": "1.2.250.1.213.1.1.4.9"},
    healthcare_facility={"code": "SA25", "display_name": "Laboratoire", "code_system": "1.2.250.1.71.4.2.4"},
)
H = "{urn:hl7-org:v3}"


def case(name: str) -> str:
    return (CASES / name / "input.hl7").read_bytes().decode("utf-8").replace("\r\n", "\r").replace("\n", "\r")


def oru_cda() -> str:
    return case("document_oru_embedded_cda")


def embedded(text: str) -> bytes:
    line = next(s for s in text.split("\r") if s.startswith("OBX|1|ED|"))
    return base64.b64decode(line.split("|")[5].split("^")[4])


def with_pdf_format(text: str, *, status: str = "F") -> str:
    """The ORU with the same report a second time, as a PDF (the level 1 format the hub wraps)."""
    second = f"OBX|2|ED|11502-2^CR d'examens biologiques^LN||^AP^PDF^Base64^{PDF_B64}||||||{status}"
    return text.replace("\rPRT||UC||SB", f"\r{second}\rPRT||UC||SB", 1)


def read(text: str, **config: str) -> object:
    return read_v2_document(text.encode(), config=CONFIG.model_copy(update=config))


def test_one_document_in_two_formats_each_route_takes_its_instance() -> None:
    text = with_pdf_format(oru_cda())
    level3 = read_v2_document(text.encode(), config=CONFIG)
    level1 = read_v2_document(text.encode(), config=CONFIG.model_copy(update={"format": "level1"}))
    assert level3.body == embedded(text)  # the CDA level 3 as sent, byte for byte
    doc = parse_xml(level1.body)
    assert doc.find(f"{H}component/{H}nonXMLBody") is not None  # the PDF, wrapped (level 1)
    # Volet: "Chaque document possède son propre identifiant"; each side names the other.
    assert level3.metadata["document_other_format_id"] == level1.metadata["unique_id"]
    assert level1.metadata["document_other_format_id"] == level3.metadata["unique_id"]
    assert level3.metadata["unique_id"] != level1.metadata["unique_id"]
    assert check_v2_documents(text.encode()) == {"document_count": "2", "document_action": "create", "dest_dmp": "Y"}


def test_two_formats_must_differ_in_level_and_agree_on_the_request() -> None:
    text = oru_cda()
    cda_line = next(s for s in text.split("\r") if s.startswith("OBX|1|ED|"))
    twice = text.replace(cda_line, cda_line + "\r" + cda_line.replace("OBX|1|", "OBX|2|", 1), 1)
    with pytest.raises(MappingError) as same_level:
        read(twice)
    assert same_level.value.location == "OBX^2^5"
    with pytest.raises(MappingError) as requests:
        read(with_pdf_format(text, status="C"))
    assert requests.value.location == "OBX^2^11"


def test_three_instances_are_refused() -> None:
    text = with_pdf_format(oru_cda())
    third = f"OBX|3|ED|11502-2^CR^LN||^AP^PDF^Base64^{PDF_B64}||||||F"
    with pytest.raises(MappingError) as exc:
        check_v2_documents(text.replace("\rPRT||UC||SB", f"\r{third}\rPRT||UC||SB", 1).encode())
    assert exc.value.location == "OBX^3^5"


def test_cda_sent_as_text_in_obx5() -> None:
    text = oru_cda()
    cda = embedded(text).decode("utf-8")
    line = next(s for s in text.split("\r") if s.startswith("OBX|1|ED|"))
    as_text = line.split("||^TEXT^")[0] + "||^TEXT^XML^A^" + escape(cda, Delimiters()) + "||||||F"
    got = read(text.replace(line, as_text))
    assert parse_xml(got.body).find(f"{H}id").get("root") == parse_xml(embedded(text)).find(f"{H}id").get("root")
    assert got.metadata["unique_id"] == read(text).metadata["unique_id"]


def test_base64_without_padding_is_taken() -> None:
    text = oru_cda()
    line = next(s for s in text.split("\r") if s.startswith("OBX|1|ED|"))
    tail = next(t for t in (b"\n", b"\n\n", b"\n\n\n") if len(embedded(text) + t) % 3)
    data = base64.b64encode(embedded(text) + tail).decode()  # a length that needs padding
    assert data.endswith("=")
    unpadded = line.replace(line.split("|")[5].split("^")[4], data.rstrip("="))
    assert read(text.replace(line, unpadded)).body == embedded(text) + tail
    cut = data.rstrip("=")
    cut = cut[: len(cut) - (len(cut) - 1) % 4]  # 4n+1 characters: no padding can make it whole
    truncated = line.replace(line.split("|")[5].split("^")[4], cut)
    with pytest.raises(MappingError) as exc:
        read(text.replace(line, truncated))
    assert exc.value.location == "OBX^1^5^5"


def test_an_unreadable_mail_body_is_dropped_with_a_warning_and_the_document_goes() -> None:
    text = oru_cda()
    good = base64.b64encode("Chère consœur, le compte rendu ci-joint.".encode()).decode()
    body_row = "OBX|15|ED|CORPSMAIL_PS^Corps du mail pour un PS^MetaDMPMSS||^TEXT^^Base64^{}||||||F"
    ok = read(text + body_row.format(good) + "\r")
    assert ok.metadata["mss_body_ps"] == "Chère consœur, le compte rendu ci-joint."
    assert "warnings" not in ok.metadata
    bad = read(text + body_row.format(good[:-3] + "=" * 0 + "*") + "\r")  # not base64
    assert "mss_body_ps" not in bad.metadata
    assert bad.metadata["warnings"].startswith("CORPSMAIL_PS dropped: ")
    assert bad.body == embedded(text)


def test_other_encapsulated_data_is_an_optional_part() -> None:
    # The MSSanté-to-LPS volet puts the mail body in an ED without a data subtype (OBX-3 <Message-ID>^<subject>).
    text = oru_cda() + "OBX|15|ED|<1@x>^Objet||^text^^Base64^Q29ycHM=||||||F\r"
    got = read(text)
    assert got.body == embedded(text)
    assert "encapsulated data that is not a document (a mail body?) ignored" in got.metadata["warnings"]


def test_document_ids_as_the_ans_examples_write_them() -> None:
    text = case("document_mdm_t02_pdf_letter")
    assert "|2.999.3.1.1001|" in text  # TXA-12, a bare OID (volet: no extension)
    for written in ("1001^^2.999.3.1^ISO", "2.999.3.1.1001"):
        got = read(text.replace("|2.999.3.1.1001|", f"|{written}|"))
        assert got.metadata["unique_id"].replace("^", ".") in ("2.999.3.1.1001", "2.999.3.1.1001")
    # An extension that is not a number, written root.ext with a namespace (ANS examples): taken.
    got = read(text.replace("|2.999.3.1.1001|", "|2.999.3.1.A1001^HOPITAL-TEST|"))
    assert got.metadata["unique_id"] == "2.999.3.1^A1001"
    with pytest.raises(MappingError) as exc:
        read(text.replace("|2.999.3.1.1001|", "|DOC-1001|"))
    assert exc.value.location == "TXA^1^12"


def test_request_from_the_trigger_when_obx11_is_empty_and_orc_sc_is_neutral() -> None:
    text = case("document_mdm_t02_pdf_letter")
    obx = next(s for s in text.split("\r") if s.startswith("OBX|1|ED|"))
    no_status = text.replace(obx, re.sub(r"\|F$", "|", obx))
    assert read(no_status).action == "create"
    assert read(text.replace("\rORC|NW", "\rORC|SC")).action == "create"
    with pytest.raises(MappingError) as exc:
        read(text.replace("\rORC|NW", "\rORC|XO"))
    assert exc.value.location == "ORC^1^1"


def test_deletion_of_a_two_format_document() -> None:
    # Volet, "Suppression": the linked format is deleted with it, both documents in the message.
    create = with_pdf_format(oru_cda())
    level1_cda = read_v2_document(create.encode(), config=CONFIG.model_copy(update={"format": "level1"})).body
    second = f"OBX|2|ED|11502-2^CR d'examens biologiques^LN||^TEXT^XML^Base64^{base64.b64encode(level1_cda).decode()}"
    text = oru_cda().replace("\rPRT||UC||SB", f"\r{second}||||||D\rPRT||UC||SB", 1).replace("\rORC|NW", "\rORC|CA")
    cda_line = next(s for s in text.split("\r") if s.startswith("OBX|1|ED|"))
    text = text.replace(cda_line, re.sub(r"\|F$", "|D", cda_line))
    got = read(text)
    assert got.content_type == ContentType.CDA_DELETION and got.body == b""
    assert got.metadata["document_other_format_id"] == parse_xml(level1_cda).find(f"{H}id").get("root")
    assert check_v2_documents(text.encode())["document_action"] == "delete"


def test_listener_check_metadata_and_refusals() -> None:
    assert check_v2_documents(case("crbio_chemistry_panel").encode()) == {"document_count": "0"}
    adt = "MSH|^~\\&|A|B|C|D|20250101||ADT^A28^ADT_A05|1|P|2.5\rPID|1||X^^^Y^PI\r"
    assert check_v2_documents(adt.encode()) == {}
    assert check_v2_documents(case("document_mdm_t02_pdf_letter").encode())["document_count"] == "1"
    placeholder = base64.b64encode("Document médical au format CDA".encode()).decode()
    text = oru_cda()
    line = next(s for s in text.split("\r") if s.startswith("OBX|1|ED|"))
    with pytest.raises(MappingError) as exc:
        check_v2_documents(text.replace(line, line.split("^Base64^")[0] + f"^Base64^{placeholder}||||||F").encode())
    assert exc.value.location == "OBX^1^5^5"
