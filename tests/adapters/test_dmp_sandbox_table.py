"""The DMP sandbox's table of checks (adapters/sandboxes/DMP.md), row by row: send the wrong thing, expect the answer.

The table is read from the documentation itself: a row without a case here, or a case whose answer differs
from the table's last column, fails.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from adapters.xds.vihf import VihfSigner
from mappings.xds import DE, SS, read_registry_response
from mappings.xds.signature import LotSigner
from tests.adapters.test_xds import (
    OTHER_INS,
    OTHER_PATIENT,
    PATIENT,
    add_document,
    answer,
    drop_documents,
    drop_member,
    drop_slot,
    pnr_request,
    post,
    running_dmp,
    set_code,
    set_identifier,
    set_slot,
    vihf_config,
)
from tests.tlskit import Pki, make_pki
from tests.unit.test_xds_metadata import INS_TEST_ROOT, synthetic_cda

TABLE = Path(__file__).resolve().parents[2] / "adapters" / "sandboxes" / "DMP.md"
ROW = re.compile(r"^\| ([A-Z0-9-]+) \|.*\| ([A-Za-z:/]+) \|$")


def table() -> dict[str, str]:
    rows = {}
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


class Ctx:
    """One sandbox run: the pinned VIHF signer and a stranger key."""

    def __init__(self, dmp: Any, signer: VihfSigner, stranger: LotSigner) -> None:
        self.dmp, self.signer, self.stranger = dmp, signer, stranger
        self.reasons: list[str] = []

    async def send(self, **kw: Any) -> set[str]:
        """POST an ITI-41 (VIHF-signed unless told otherwise): the error codes, or the fault code/subcode."""
        kw.setdefault("signer", self.signer)
        url = self.dmp.repository_url
        status, ctype, body = await post(url, *pnr_request(url, **kw))
        soap = answer(ctype, body)
        if soap.fault is not None:
            assert status == 400
            self.reasons = [soap.fault.reason]
            return {soap.fault.summary()}
        self.reasons = [e.context for e in self.dmp.last_errors]
        assert status == 200 and soap.body is not None
        result = read_registry_response(soap.body)
        return {"Success"} if result.status == "Success" else set(result.codes())


Case = Callable[[Ctx], Awaitable[set[str]]]


def _tamper_signature_value(sig: bytes) -> bytes:
    return re.sub(rb"(<ds:SignatureValue>)(.)", lambda m: m.group(1) + (b"A" if m.group(2) != b"A" else b"B"), sig)


async def lot_digest(ctx: Ctx) -> set[str]:
    # Signed over the real CDA, but another document is attached (with matching hash/size slots):
    # only the lot signature's Manifest can tell.
    other = synthetic_cda().replace(b"<title>Compte", b"<title>Autre compte")
    return await ctx.send(
        attachment=other,
        mutate=lambda b: [
            set_slot("hash", hashlib.sha1(other).hexdigest())(b),
            set_slot("size", str(len(other)))(b),
        ],
    )


async def duplicate(ctx: Ctx) -> set[str]:
    assert await ctx.send() == {"Success"}
    return await ctx.send()


async def non_identical(ctx: Ctx) -> set[str]:
    assert await ctx.send() == {"Success"}
    return await ctx.send(cda=synthetic_cda().replace(b"<title>Compte", b"<title>Autre compte"))


async def deprecated_target(ctx: Ctx) -> set[str]:
    first = "1.2.250.1.999.7.1^DOC-1"
    assert await ctx.send() == {"Success"}
    assert await ctx.send(cda=synthetic_cda(doc_ext="DOC-2", replaces=first)) == {"Success"}
    return await ctx.send(cda=synthetic_cda(doc_ext="DOC-3", replaces=first))


async def unknown_patient(ctx: Ctx) -> set[str]:
    other = f"{OTHER_INS}^^^&{INS_TEST_ROOT}&ISO^NH"
    return await ctx.send(cda=synthetic_cda(ins=OTHER_INS), resource_id=other)


CASES: dict[str, Case] = {
    "LOT-UNSIGNED": lambda c: c.send(sign_lot=False),
    "LOT-SIGNER": lambda c: c.send(lot_signer=c.stranger),
    "LOT-SIGNATURE-INVALID": lambda c: c.send(lot_signature=_tamper_signature_value),
    "LOT-DIGEST": lot_digest,
    "LOT-SIGNATURE-TYPE": lambda c: c.send(
        mutate=lambda b: b.xpath(
            f"//*[@classificationScheme='{DE.TYPE_CODE}' and @nodeRepresentation='E1762']",
        )[0].set("nodeRepresentation", "11490-0")
    ),
    "HASH": lambda c: c.send(mutate=set_slot("hash", "0" * 40)),
    "SIZE": lambda c: c.send(mutate=set_slot("size", "1")),
    "CLASS-CODE": lambda c: c.send(mutate=set_code(DE.CLASS_CODE, "99")),
    "FORMAT-CODE": lambda c: c.send(mutate=set_code(DE.FORMAT_CODE, "urn:unknown:format")),
    "CONFIDENTIALITY-CODE": lambda c: c.send(mutate=set_code(DE.CONFIDENTIALITY_CODE, "SECRET")),
    # 51851-4 is a JDV_J07 (CI-SIS) type the DMP does not take (not in JDV_J66).
    "TYPE-CODE": lambda c: c.send(mutate=set_code(DE.TYPE_CODE, "51851-4")),
    # 11502-2 (CR d'examens biologiques) is class 10 in ASS_X04; 11 (Synthèse) is a valid JDV_J57 class.
    "TYPE-CLASS": lambda c: c.send(mutate=set_code(DE.CLASS_CODE, "11")),
    "FACILITY-SYSTEM": lambda c: c.send(mutate=set_code(DE.HEALTHCARE_FACILITY_TYPE_CODE, "SA25", "1.2.3.4")),
    "FACILITY-CODE": lambda c: c.send(mutate=set_code(DE.HEALTHCARE_FACILITY_TYPE_CODE, "SA99", "1.2.250.1.71.4.2.4")),
    "PRACTICE-SETTING-SYSTEM": lambda c: c.send(mutate=set_code(DE.PRACTICE_SETTING_CODE, "AMBULATOIRE", "1.2.3.4")),
    "PRACTICE-SETTING-CODE": lambda c: c.send(
        mutate=set_code(DE.PRACTICE_SETTING_CODE, "NOWHERE", "1.2.250.1.213.1.1.4.9")
    ),
    "CONTENT-TYPE-SYSTEM": lambda c: c.send(mutate=set_code(SS.CONTENT_TYPE_CODE, "07", "1.2.3.4")),
    # 05 is a JDV_J59 code of TRE_R276 (FormeActivite), not of TRE_R209: membership is by code and system.
    "CONTENT-TYPE-CODE": lambda c: c.send(mutate=set_code(SS.CONTENT_TYPE_CODE, "05", "1.2.250.1.213.2.2")),
    "PATIENT-ID-FORM": lambda c: c.send(
        mutate=set_identifier(DE.PATIENT_ID, f"{PATIENT.split('^')[0]}^^^&{INS_TEST_ROOT}&ISO^INS")
    ),
    "PATIENT-UNKNOWN": unknown_patient,
    "PATIENT-MISMATCH": lambda c: c.send(mutate=set_identifier(DE.PATIENT_ID, OTHER_PATIENT)),
    "VIHF-PATIENT": lambda c: c.send(resource_id=OTHER_PATIENT),
    "MISSING-DOCUMENT": lambda c: c.send(mutate=drop_documents),
    "MISSING-METADATA": lambda c: c.send(mutate=add_document),
    "DUPLICATE": duplicate,
    "NON-IDENTICAL": non_identical,
    "DEPRECATED-TARGET": deprecated_target,
    "REQUIRED-SLOT": lambda c: c.send(mutate=drop_slot("creationTime")),
    "HAS-MEMBER": lambda c: c.send(mutate=drop_member),
    "VIHF-MISSING": lambda c: c.send(signer=None),
    "VIHF-SIGNATURE": lambda c: c.send(tamper=True),
    "VIHF-ROLE": lambda c: c.send(
        vihf={"roles": [{"code": "SECRETAIRE", "code_system": "1.2.250.1.213.1.1.4.6", "display_name": "x"}]}
    ),
    "VIHF-VERSION": lambda c: c.send(vihf={"vihf_version": "2.0"}),
    "VIHF-MODE": lambda c: c.send(vihf={"authentication_mode": "AUTRE"}),
    "VIHF-SECTOR": lambda c: c.send(vihf={"secteur_activite": "CABINET"}),
    "VIHF-STRUCTURE": lambda c: c.send(structure_id="1999000099"),
}


# What the answer's reason (codeContext or fault text) must name, so that a case cannot pass on another fault.
REASONS = {
    "LOT-UNSIGNED": "signature document",
    "LOT-SIGNER": "lot signature: XAdES signature invalid",
    "LOT-SIGNATURE-INVALID": "lot signature: XAdES signature invalid",
    "LOT-DIGEST": "Manifest digest differs",
    "LOT-SIGNATURE-TYPE": "signature typeCode",
    "HASH": "hash does not match",
    "SIZE": "size does not match",
    "CLASS-CODE": "classCode: code 99",
    "FORMAT-CODE": "formatCode: code",
    "CONFIDENTIALITY-CODE": "confidentialityCode: code SECRET",
    "TYPE-CODE": "typeCode: code 51851-4 not in the DMP value set",
    "TYPE-CLASS": "classCode: 11 is not the class of typeCode 11502-2",
    "FACILITY-SYSTEM": "healthcareFacilityTypeCode: code system",
    "FACILITY-CODE": "healthcareFacilityTypeCode: code SA99 not in the DMP value set",
    "PRACTICE-SETTING-SYSTEM": "practiceSettingCode: code system",
    "PRACTICE-SETTING-CODE": "practiceSettingCode: code NOWHERE not in the DMP value set",
    "CONTENT-TYPE-SYSTEM": "contentTypeCode: code system",
    "CONTENT-TYPE-CODE": "contentTypeCode: code 05 not in the DMP value set",
    "PATIENT-ID-FORM": "must be INS^^^&OID&ISO^NH",
    "PATIENT-UNKNOWN": "patient unknown",
    "PATIENT-MISMATCH": "differs from the SubmissionSet",
    "VIHF-PATIENT": "VIHF resource-id",
    "MISSING-DOCUMENT": "no Document attached",
    "MISSING-METADATA": "has no DocumentEntry",
    "DUPLICATE": "uniqueId already registered",
    "NON-IDENTICAL": "another hash",
    "DEPRECATED-TARGET": "already deprecated",
    "REQUIRED-SLOT": "creationTime",
    "HAS-MEMBER": "no HasMember",
    "VIHF-MISSING": "VIHF assertion missing",
    "VIHF-SIGNATURE": "VIHF signature invalid",
    "VIHF-ROLE": "JDV_J65",
    "VIHF-VERSION": "VIHF_Version",
    "VIHF-MODE": "Authentification_Mode",
    "VIHF-SECTOR": "Secteur_Activite",
    "VIHF-STRUCTURE": "Identifiant_Structure",
}


def test_every_row_of_the_table_has_a_case() -> None:
    rows = table()
    assert len(rows) >= 30
    assert set(rows) == set(CASES) == set(REASONS)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Pki, VihfSigner, LotSigner]:
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other", ca_name="Other CA")
    signer = VihfSigner(vihf_config(), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    stranger = LotSigner(
        serialization.load_pem_private_key(other.client_key.read_bytes(), password=None),
        x509.load_pem_x509_certificate(other.client_cert.read_bytes()),
    )
    return pki, signer, stranger


@pytest.mark.parametrize("row", sorted(CASES))
async def test_the_sandbox_answers_what_the_table_says(row: str, keys: tuple[Pki, VihfSigner, LotSigner]) -> None:
    pki, signer, stranger = keys
    expected = table()[row]
    async with running_dmp(vihf_signer_cert_file=str(pki.client_cert), known_patients=[PATIENT]) as dmp:
        ctx = Ctx(dmp, signer, stranger)
        # The same request without the fault is accepted: the case tests one thing.
        got = await CASES[row](ctx)
        assert expected in got, (row, got)
        assert "Success" not in got
        assert any(REASONS[row] in reason for reason in ctx.reasons), (row, ctx.reasons)
        assert all(PATIENT.split("^")[0] not in e.context for e in dmp.last_errors)


async def test_an_untouched_lot_is_accepted(keys: tuple[Pki, VihfSigner, LotSigner]) -> None:
    pki, signer, stranger = keys
    async with running_dmp(vihf_signer_cert_file=str(pki.client_cert), known_patients=[PATIENT]) as dmp:
        assert await Ctx(dmp, signer, stranger).send() == {"Success"}
        assert len(dmp.documents) == 1 and len(dmp.lot_signatures) == 1
