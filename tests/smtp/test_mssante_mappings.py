"""Pure MSSanté pieces: the MDM^T02 step, MDN/DSN build and read, the document mail, passwords, trust list."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from adapters.sandboxes.mssante_peer import TEST_INS, MssantePeer, MssantePeerConfig, synthetic_cda
from adapters.smtp.common import HostedMailbox, Mailboxes, TrustList, hash_password, verify_password
from adapters.smtp.intake import analyse
from adapters.smtp.outbound import MssanteOutbound, MssanteOutboundConfig
from hub import registry
from hub.content_types import ContentType
from hub.errors import MappingError, Rejected
from hub.message import Message
from hub.pipeline import StepContext
from mappings.hl7v2.er7 import Er7Message
from mappings.mssante.mail import (
    build_document_mail,
    document_subject,
    hub_message_id,
    match_hub_message_id,
    parse_mail,
)
from mappings.mssante.mdm import MdmConfig, cda_to_mdm, cda_to_v2_mdm_t02
from mappings.mssante.reports import RecipientFailure, build_dsn, build_mdn, read_report
from mappings.xdm import ZipLimits
from mappings.xml import parse_xml

WHEN = dt.datetime(2025, 1, 2, 9, 30, tzinfo=dt.UTC)
MAIL_META = {
    "mail_from": "lab@peer.mssante.fr",
    "mail_recipient": "dpi-integration@hub.mssante.fr",
    "mail_recipient_org": "Service de biologie^^^^^&1.2.3&ISO^UF^^^42",
    "mail_reply_to": "secretariat@peer.mssante.fr",
    "mail_message_id": "<m1@peer.mssante.fr>",
    "mail_subject": "XDM/1.0/DDM+CR d'examens biologiques PAT-TROIS DOMINIQUE 28/03/1979",
    "mail_body_b64": "Qm9uam91cg==",
}


def segments(er7: bytes) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for seg in er7.decode().split("\r"):
        if seg:
            fields = seg.split("|")
            if fields[0] == "MSH":
                fields = ["MSH", "|", *fields[1:]]
            out.setdefault(fields[0], []).append(fields)
    return out


def test_mdm_t02_carries_the_cda_and_the_complete_ins_in_pid3() -> None:
    cda = synthetic_cda()
    er7, meta = cda_to_mdm(
        cda, MAIL_META, config=MdmConfig(), control_id="C1", message_time="20250102103000", environment="test"
    )
    s = segments(er7)
    assert (
        s["MSH"][0][9] == "MDM^T02^MDM_T02" and s["MSH"][0][12] == "2.6" and s["MSH"][0][21] == "1.1^CISIS_CDA_HL7_LPS"
    )
    pid = s["PID"][0]
    # PAM FR §6.6.1 / DOMAIN.md §2.2: the INS with CX-5 INS, next to the local id the CDA carries.
    assert pid[3].split("~") == [
        "IPP-000777^^^&1.2.250.1.999.7.3&ISO^PI",
        f"{TEST_INS}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS",
    ]
    assert pid[32] == "VALI" and pid[7] == "19790328" and pid[8] == "F"
    assert s["PV1"][0][2] == "N" and s["ORC"][0][1] == "NW"
    txa = s["TXA"][0]
    assert txa[2] == "11502-2" and txa[3] == "TEXT" and txa[12] == "DOC-PEER-0001^^1.2.250.1.999.7.1^ISO"
    assert txa[17] == "AU"
    obx = s["OBX"]
    assert obx[0][2] == "ED" and obx[0][5].startswith("^text^XML^Base64^") and obx[0][11] == "F"
    assert obx[1][3] == "<m1@peer.mssante.fr>^XDM/1.0/DDM+CR d'examens biologiques PAT-TROIS DOMINIQUE 28/03/1979"
    assert [o[3].split("^")[0] for o in obx[2:]] == [
        "MASQUE_PS",
        "INVISIBLE_PATIENT",
        "INVISIBLE_REP_LEGAUX",
        "MODIF_CONF_CODE",
    ]
    roles = [(p[4].split("^")[0], p[8], p[15]) for p in s["PRT"]]
    assert roles == [
        ("SB", "", "^^X.400^lab@peer.mssante.fr"),
        ("RCT", "Service de biologie^^^^^&1.2.3&ISO^UF^^^42", "^^X.400^dpi-integration@hub.mssante.fr"),
        ("REPLY", "", "^^X.400^secretariat@peer.mssante.fr"),
    ]
    assert meta["ins_stamped"] == "true" and meta["message_type"] == "MDM^T02"
    # The hub's own ER7 reader agrees.
    assert Er7Message(er7).value("PID", 3, 5) == "PI"


def test_ins_without_complete_traits_is_not_carried() -> None:
    er7, meta = cda_to_mdm(
        synthetic_cda(complete_traits=False),
        {},
        config=MdmConfig(),
        control_id="C2",
        message_time="20250102103000",
        environment="test",
    )
    pid = segments(er7)["PID"][0]
    assert TEST_INS not in pid[3] and len(pid) < 33
    assert meta["ins_stamped"] == "false" and "905" in meta["ins_reason"]
    assert TEST_INS not in meta["ins_reason"]


def test_production_refuses_the_test_ins_root_and_a_cda_without_any_usable_id() -> None:
    er7, meta = cda_to_mdm(synthetic_cda(), {}, config=MdmConfig(), control_id="C3", message_time="2025")
    assert meta["ins_stamped"] == "false" and TEST_INS not in er7.decode().split("\r")[2]
    no_ipp = synthetic_cda().replace(b'<id root="1.2.250.1.999.7.3" extension="IPP-000777"/>', b"")
    with pytest.raises(MappingError, match="no patient identifier"):
        cda_to_mdm(no_ipp, {}, config=MdmConfig(), control_id="C4", message_time="2025")


def test_masked_documents_and_replacements() -> None:
    with pytest.raises(MappingError, match="MASQUE_PS"):
        cda_to_mdm(synthetic_cda(), {"mask_ps": "Y"}, config=MdmConfig(), control_id="C5", message_time="2025")
    replacing = synthetic_cda(doc_id="DOC-V2").replace(
        b"<recordTarget>",
        b'<relatedDocument typeCode="RPLC"><parentDocument><id root="1.2.250.1.999.7.1" extension="DOC-V1"/>'
        b"</parentDocument></relatedDocument><recordTarget>",
    )
    er7, meta = cda_to_mdm(replacing, {}, config=MdmConfig(), control_id="C6", message_time="2025")
    s = segments(er7)
    assert s["MSH"][0][9] == "MDM^T10^MDM_T02" and s["ORC"][0][1] == "RO"
    assert s["TXA"][0][13] == "DOC-V1^^1.2.250.1.999.7.1^ISO" and meta["message_type"] == "MDM^T10"


def test_the_step_is_registered_and_derives_an_hl7_message() -> None:
    registry.load_builtin()
    comp = registry.get("step", "cda_to_v2_mdm_t02")
    assert comp is not None and comp.consumes == (ContentType.CDA,) and comp.produces == ContentType.HL7V2
    message = Message.new(synthetic_cda(), content_type=ContentType.CDA, metadata=MAIL_META)
    out = cda_to_v2_mdm_t02(message, StepContext(environment="test"))
    again = cda_to_v2_mdm_t02(message, ctx=StepContext(environment="test"), config=MdmConfig(sending_facility="X"))
    assert out.content_type == ContentType.HL7V2 and out.parent_id == message.id
    assert out.metadata["control_id"] == again.metadata["control_id"]  # stable across attempts
    assert segments(again.body)["MSH"][0][4] == "X"


def test_mdn_processed_and_in_error_read_back() -> None:
    original = b"Message-ID: <m1@peer.mssante.fr>\r\nSubject: XDM/1.0/DDM+CR\r\n\r\nbody\r\n"
    common = {
        "to": "lab@peer.mssante.fr",
        "final_recipient": "dpi-integration@hub.mssante.fr",
        "original_recipient": "dpi-integration@hub.mssante.fr",
        "original_message_id": "<m1@peer.mssante.fr>",
        "original_subject": "XDM/1.0/DDM+CR",
        "reporting_ua": "mx.hub.mssante.fr",
        "date": WHEN,
    }
    ok = parse_mail(build_mdn(original, message_id="<a@hub.mssante.fr>", **common))  # type: ignore[arg-type]
    assert ok.get_content_type() == "multipart/report"
    assert ok.get_param("report-type") == "disposition-notification"
    assert str(ok["Auto-Submitted"]) == "auto-replied" and str(ok["Subject"]) == "XDM/1.0/DDM+CR"
    report = read_report(ok)
    assert report is not None and report.kind == "mdn" and report.disposition == "processed"
    assert report.original_message_id == "<m1@peer.mssante.fr>"
    raw_ko = build_mdn(original, message_id="<b@hub>", error=("906", "Archive refusée"), **common)  # type: ignore[arg-type]
    ko = parse_mail(raw_ko)
    assert str(ko["Subject"]).startswith("[KO Intégration système !][906] XDM/1.0/DDM+")
    assert b"Disposition: automatic-action/MDN-sent-automatically; processed/Error: 906^Archive refusee" in raw_ko
    report = read_report(ko)
    assert report is not None and report.disposition == "processed/error" and report.error == "906^Archive refusee"
    # The volet's form alone (no RFC 8098 Error field) reads the same.
    volet = build_mdn(original, message_id="<c@hub>", error=("902", "Identifiant patient inconnu"), **common)  # type: ignore[arg-type]
    volet = volet.replace(b"\r\nError: 902^Identifiant patient inconnu\r\n", b"\r\n")
    report = read_report(parse_mail(volet))
    assert report is not None and report.error == "902^Identifiant patient inconnu"


def test_dsn_reads_back_and_hub_message_ids_match() -> None:
    correlation = "01a20000-0000-7000-8000-000000000042"
    mid = hub_message_id(correlation, "abc123", "hub.mssante.fr")
    assert match_hub_message_id(mid, ["hub.mssante.fr"]) == correlation
    assert match_hub_message_id(mid, ["other.fr"]) is None
    assert match_hub_message_id("<random@hub.mssante.fr>", ["hub.mssante.fr"]) is None
    dsn = build_dsn(
        f"Message-ID: {mid}\r\nSubject: x\r\n\r\nbody".encode(),
        to="labo@hub.mssante.fr",
        postmaster="mailer-daemon@hub.mssante.fr",
        reporting_mta="mx.hub.mssante.fr",
        failures=[RecipientFailure("x@peer.mssante.fr", "5.1.1", "550 5.1.1 unknown", "127.0.0.1")],
        message_id="<d@hub.mssante.fr>",
        date=WHEN,
        arrival_date=WHEN,
        envelope_id=correlation,
    )
    report = read_report(parse_mail(dsn))
    assert report is not None and report.kind == "dsn" and report.disposition == "failed"
    assert report.status == "5.1.1" and report.original_message_id == mid
    assert report.original_envelope_id == correlation and report.final_recipient == "x@peer.mssante.fr"
    assert b"body" not in dsn  # headers only are returned (RFC 3464 text/rfc822-headers)


def test_document_mail_headers_and_subject() -> None:
    cda = synthetic_cda()
    subject = document_subject(parse_xml(cda))
    assert subject == "XDM/1.0/DDM+CR d'examens biologiques PAT-TROIS DOMINIQUE 28/03/1979"
    assert document_subject(parse_xml(cda), with_patient=False) == "XDM/1.0/DDM+CR d'examens biologiques"
    raw = build_document_mail(
        sender="labo@hub.mssante.fr",
        recipients=[f"{TEST_INS}@patient.mssante.fr"],
        subject=subject,
        body="Bonjour, voici votre résultat.\n",
        message_id="<x@hub.mssante.fr>",
        date=WHEN,
        xdm=b"PK\x05\x06" + b"\0" * 18,
        disposition_notification_to="labo@hub.mssante.fr",
        x_mss={"X-MSS-MES": "FIN", "X-MSS-INS": "O", "X-MSS-CODECDA": "11502-2"},
    )
    assert all(b < 128 for b in raw)  # 7-bit clean: quoted-printable body, base64 attachment
    mail = parse_mail(raw)
    assert str(mail["X-MSS-MES"]) == "FIN" and str(mail["Disposition-Notification-To"]) == "labo@hub.mssante.fr"
    assert str(mail["Subject"]) == subject
    (attachment,) = list(mail.iter_attachments())
    assert attachment.get_filename() == "IHE_XDM.ZIP" and attachment.get_content_type() == "application/zip"


def test_passwords_are_scrypt_hashed_and_checked() -> None:
    encoded = hash_password("s3cret", n=2**10)
    assert encoded.startswith("scrypt$1024$8$1$") and "s3cret" not in encoded
    assert encoded != hash_password("s3cret", n=2**10)  # salted
    assert verify_password("s3cret", encoded) and not verify_password("S3cret", encoded)
    assert not verify_password("anything", None)  # unknown user: checked against a dummy, always false


def test_trust_list_file_with_wildcards_is_reread(tmp_path: Path) -> None:
    path = tmp_path / "trust.txt"
    path.write_text("# operators\npeer.mssante.fr\n*.ght.mssante.fr  # a group of hospitals\nnot a domain\n")
    trust = TrustList(str(path), extra=["hub.mssante.fr"])
    assert "PEER.mssante.fr" in trust and "chu.ght.mssante.fr" in trust and "hub.mssante.fr" in trust
    assert "ght.mssante.fr" not in trust and "gmail.com" not in trust and "evil-peer.mssante.fr" not in trust
    path.write_text("gmail.com\n")
    os.utime(path, (1, 1))  # make sure the modification time changes
    assert "gmail.com" in trust and "peer.mssante.fr" not in trust


def test_intake_sends_an_mdn_only_when_it_may() -> None:
    peer = MssantePeer("p", MssantePeerConfig(listen="127.0.0.1:0", sender="lab@peer.mssante.fr"))
    app = "dpi-integration@hub.mssante.fr"
    boxes = Mailboxes([HostedMailbox(address=app, kind="application")], ["hub.mssante.fr"])
    kwargs = {
        "mail_id": "01a20000-0000-7000-8000-000000000007",
        "now": WHEN,
        "rcpt_tos": [app],
        "mailboxes": boxes,
        "hub_domains": ["hub.mssante.fr"],
        "limits": ZipLimits(),
        "hostname": "mx.hub.mssante.fr",
    }
    asked = peer.sample_mail([app], request_mdn=True)
    intake = analyse(asked, mail_from="lab@peer.mssante.fr", **kwargs)  # type: ignore[arg-type]
    # With documents, the MDN waits for the DPI's answer: the documents carry what it needs.
    assert intake.refusal is None and len(intake.documents) == 1 and intake.mdn is None
    meta = intake.documents[0][1]
    assert meta["on_final"] == "mssante_mdn" and meta["mdn_to"] == "lab@peer.mssante.fr"
    assert meta["mdn_to_local"] == "false" and meta["mdn_final_recipient"] == app

    def mdn_asked(raw: bytes, mail_from: str) -> bool:
        got = analyse(raw, mail_from=mail_from, **kwargs)  # type: ignore[arg-type]
        return got.mdn is not None or any("mdn_to" in m for _, m in got.documents)

    # RFC 8098 §2.1: Disposition-Notification-To differing from the return path: no automatic MDN.
    assert not mdn_asked(asked, "other@peer.mssante.fr")
    assert not mdn_asked(asked, "")
    # Not asked: none.
    assert not mdn_asked(peer.sample_mail([app]), "lab@peer.mssante.fr")
    # Auto-submitted mail (RFC 3834) is never answered.
    assert not mdn_asked(b"Auto-Submitted: auto-generated\r\n" + asked, "lab@peer.mssante.fr")


def _outbound_mails(**metadata: str) -> list[tuple[list[str], str]]:
    out = MssanteOutbound(
        "mss", MssanteOutboundConfig(from_address="labo@hub.mssante.fr", environment="test", recipients=[])
    )
    message = Message.new(synthetic_cda(), content_type=CDA_TYPE, metadata=metadata)
    return [(m.recipients, parse_mail(m.data).get("X-MSS-MES", "")) for m in out._document_mails(message)]


CDA_TYPE = "application/cda+xml"
QUALIFIED = {"ins": TEST_INS, "ins_oid": "1.2.250.1.213.1.4.10", "identity_status": "qualifiee"}


def test_outbound_recipient_rules() -> None:
    patient = f"{TEST_INS}@patient.mssante.fr"
    pro = "dr.prescripteur@peer.mssante.fr"
    assert _outbound_mails(mssante_recipients=pro) == [([pro], "")]
    both = _outbound_mails(mss_recipients=f"{pro},{patient}", mss_no_reply_patient="Y", **QUALIFIED)
    assert both == [([pro], ""), ([patient], "FIN")]  # two mails; X-MSS-MES only on the patient's
    assert _outbound_mails(mssante_recipients=pro, dest_mss_patient="Y", dest_mss_ps="N", **QUALIFIED) == [
        ([patient], "")
    ]
    assert _outbound_mails(mssante_recipients=pro, dest_mss_patient="N", **QUALIFIED) == [([pro], "")]
    with pytest.raises(Rejected, match="qualified INS"):
        _outbound_mails(mssante_recipients=pro, dest_mss_patient="Y", ins=TEST_INS, identity_status="validee")
    with pytest.raises(Rejected, match="does not match"):
        _outbound_mails(mss_recipients="190017512345678@patient.mssante.fr", **QUALIFIED)
    with pytest.raises(Rejected, match="INVISIBLE_PATIENT"):
        _outbound_mails(dest_mss_patient="Y", invisible_patient="Y", **QUALIFIED)
    with pytest.raises(Rejected, match="no recipient"):
        _outbound_mails()
