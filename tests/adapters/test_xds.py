"""ITI-41 to the DMP: the XDS outbound adapter, the DMP sandbox, and both together over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import re
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import methods
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.signer import XMLSigner

from adapters.sandboxes.dmp import DmpSandbox, DmpSandboxConfig
from adapters.tls import TlsConfig, client_context
from adapters.xds.mtom import Part, cid_href, decode_related, encode_related
from adapters.xds.outbound import XdsOutbound, XdsOutboundConfig
from adapters.xds.soap import ACTION_PNR, ACTION_STORED_QUERY, envelope, fault_envelope, read_envelope
from adapters.xds.vihf import VihfConfig, VihfError, VihfSigner, build_assertion, verify_assertion
from hub import registry
from hub.errors import MappingError, NotConnected, Rejected, Retryable
from hub.message import Message, new_id, utcnow
from mappings.xds import (
    DE,
    SS,
    RegistryErrorInfo,
    build_submission,
    entry_uuid_for,
    find_documents_request,
    provide_and_register_request,
    read_registry_response,
    read_submission,
    registry_response,
)
from mappings.xds.ebrim import NS, q
from mappings.xds.signature import LotSigner, sign_submission
from tests.hubkit import FAST_RETRY, running_hub, wait_until, write_config
from tests.sandboxauth import admin_headers
from tests.tlskit import Pki, make_pki
from tests.unit.test_xds_metadata import INS_TEST_ROOT, OTHER_INS, TEST_INS, synthetic_cda, xds_config

PATIENT = f"{TEST_INS}^^^&{INS_TEST_ROOT}&ISO^NH"
CDA_TYPE = "application/cda+xml"


def vihf_config(**over: Any) -> VihfConfig:
    data: dict[str, Any] = {
        "name_id": "810000000002",
        "subject_id": "InteropHub, hub, laboratoire",
        "secteur_activite": "SA25",
        "lps_nom": "InteropHub",
        "lps_version": "0.1.0",
        "lps_homologation_dmp": "HOMOLOG-TEST",
    }
    data.update(over)
    return VihfConfig.model_validate(data)


def outbound(endpoint: str, pki: Pki | None = None, *, vihf: bool | VihfConfig = True, **over: Any) -> XdsOutbound:
    tls = None
    if pki is not None:
        tls = TlsConfig(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    over.setdefault("metadata", xds_config())
    config = XdsOutboundConfig(
        endpoint=endpoint,
        tls=tls,
        vihf=vihf if isinstance(vihf, VihfConfig) else (vihf_config() if vihf else None),
        **over,
    )
    return XdsOutbound("dmp", config)


def cda_message(**over: Any) -> Message:
    meta = over.pop("metadata", {})
    return Message.new(synthetic_cda(**over), content_type=CDA_TYPE, metadata=meta)


@contextlib.asynccontextmanager
async def running_dmp(**config: Any) -> AsyncIterator[DmpSandbox]:
    config.setdefault("listen", "127.0.0.1:0")
    config.setdefault("known_patients", None)  # the synthetic patients here are not the INSi sandbox's
    sandbox = DmpSandbox("dmp", DmpSandboxConfig.model_validate(config))
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.stop()


@contextlib.asynccontextmanager
async def hub_routes(sandbox: DmpSandbox) -> AsyncIterator[TestClient[Any, Any]]:
    """The sandbox's routes mounted as the hub mounts them (hub/http.py): /sandboxes/<name>/<path>."""
    app = web.Application()
    for method, path, handler in sandbox.http_routes():
        app.router.add_route(method, f"/sandboxes/{sandbox.name}/{path}", handler)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


# --------------------------------------------------------------------------- raw ITI-41 requests


def assertion_for(
    signer: VihfSigner, resource_id: str, vihf: dict[str, Any] | None = None, structure_id: str = "1999000001"
) -> etree._Element:
    """An unsigned VIHF for the synthetic laboratory and one patient (``vihf``: VihfConfig overrides)."""
    return build_assertion(
        vihf_config(**(vihf or {})),
        issuer=signer.issuer,
        structure_id=structure_id,
        resource_id=resource_id,
        now=utcnow(),
    )


def pnr_request(
    url: str,
    cda: bytes | None = None,
    *,
    mutate: Callable[[etree._Element], None] | None = None,
    attachment: bytes | None = None,
    mtom: bool = True,
    signer: VihfSigner | None = None,
    resource_id: str = PATIENT,
    tamper: bool = False,
    sign_lot: bool = True,
    lot_signer: LotSigner | None = None,
    lot_signature: Callable[[bytes], bytes] | None = None,
    vihf: dict[str, Any] | None = None,
    structure_id: str = "1999000001",
    **meta: str,
) -> tuple[bytes, str]:
    """An ITI-41 request built like the adapter's (lot signed with the VIHF key), then optionally damaged."""
    cda = cda or synthetic_cda()
    sub = build_submission(cda, xds_config(), submission_id=new_id(), submission_time=utcnow(), metadata=meta)
    if sign_lot:
        lot_signer = lot_signer or (signer.lot_signer() if signer is not None else default_lot_signer())
        sub = sign_submission(sub, lot_signer)
        if lot_signature is not None and sub.signature is not None:  # damage the signature after signing
            damaged = lot_signature(sub.signature_document)
            entry = dataclasses.replace(sub.signature, hash=hashlib.sha1(damaged).hexdigest(), size=len(damaged))
            sub = dataclasses.replace(sub, signature_document=damaged, signature=entry)
    cid, sig_cid = "doc-1@test", "sig-1@test"
    body = provide_and_register_request(
        sub,
        xop_href=cid_href(cid) if mtom else None,
        signature_href=cid_href(sig_cid) if mtom and sub.signature else None,
    )
    if mutate:
        mutate(body)
    security = []
    if signer is not None:
        signed = signer.sign(assertion_for(signer, resource_id, vihf, structure_id))
        if tamper:  # change a signed attribute after signing
            value = signed.find(".//{urn:oasis:names:tc:SAML:2.0:assertion}AttributeValue")
            assert value is not None
            value.text = "4.0"
        security.append(signed)
    xml = etree.tostring(envelope(body, action=ACTION_PNR, to=url, security=security), encoding="UTF-8")
    if not mtom:
        return xml, "application/soap+xml; charset=UTF-8"
    parts = [Part(cid, "text/xml", cda if attachment is None else attachment)]
    if sub.signature is not None:
        parts.append(Part(sig_cid, "text/xml", sub.signature_document))
    return encode_related(xml, parts, action=ACTION_PNR)


@functools.cache
def default_lot_signer() -> LotSigner:
    """A lot signer for requests sent without a VIHF (one test PKI per session)."""
    pki = make_pki(Path(tempfile.mkdtemp(prefix="lot-signer-")))
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), password=None)
    return LotSigner(key, x509.load_pem_x509_certificate(pki.client_cert.read_bytes()))


async def post(url: str, data: bytes, ctype: str, ctx: ssl.SSLContext | None = None) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers={"Content-Type": ctype}, ssl=ctx if ctx else True) as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def answer(ctype: str, body: bytes) -> Any:
    root = decode_related(body, ctype).root.body if ctype.startswith("multipart/") else body
    return read_envelope(root)


async def submit(sandbox: DmpSandbox, **kw: Any) -> tuple[str, list[str]]:
    """POST a (possibly damaged) request; (RegistryResponse status, error codes)."""
    status, ctype, body = await post(sandbox.repository_url, *pnr_request(sandbox.repository_url, **kw))
    soap = answer(ctype, body)
    assert status == 200 and soap.fault is None and soap.body is not None
    result = read_registry_response(soap.body)
    return result.status, result.codes()


def _find(body: etree._Element, scheme: str) -> etree._Element:
    found = body.xpath(f"//rim:*[@classificationScheme='{scheme}' or @identificationScheme='{scheme}']", namespaces=NS)
    assert found
    return found[0]


def set_slot(name: str, value: str) -> Callable[[etree._Element], None]:
    def mutate(body: etree._Element) -> None:
        [v] = body.xpath(f"//rim:ExtrinsicObject[1]/rim:Slot[@name='{name}']/rim:ValueList/rim:Value", namespaces=NS)
        v.text = value

    return mutate


def drop_slot(name: str) -> Callable[[etree._Element], None]:
    def mutate(body: etree._Element) -> None:
        [s] = body.xpath(f"//rim:ExtrinsicObject[1]/rim:Slot[@name='{name}']", namespaces=NS)
        s.getparent().remove(s)

    return mutate


def set_code(scheme: str, code: str, coding_scheme: str | None = None) -> Callable[[etree._Element], None]:
    def mutate(body: etree._Element) -> None:
        c = _find(body, scheme)
        c.set("nodeRepresentation", code)
        if coding_scheme:
            c.find(f"{q('rim', 'Slot')}/{q('rim', 'ValueList')}/{q('rim', 'Value')}").text = coding_scheme

    return mutate


def set_identifier(scheme: str, value: str) -> Callable[[etree._Element], None]:
    """Every identifier of that scheme (the document's and its lot signature's entry)."""

    def mutate(body: etree._Element) -> None:
        for found in body.xpath(f"//rim:ExternalIdentifier[@identificationScheme='{scheme}']", namespaces=NS):
            found.set("value", value)

    return mutate


def drop_documents(body: etree._Element) -> None:
    for d in body.findall(q("xdsb", "Document")):
        body.remove(d)


def add_document(body: etree._Element) -> None:
    etree.SubElement(body, q("xdsb", "Document"), id="urn:uuid:00000000-0000-4000-8000-000000000001").text = "QQ=="


def drop_member(body: etree._Element) -> None:
    for a in body.xpath("//rim:Association", namespaces=NS):
        a.getparent().remove(a)


# --------------------------------------------------------------------------- the sandbox refuses what the DMP refuses

OTHER_PATIENT = f"{OTHER_INS}^^^&{INS_TEST_ROOT}&ISO^NH"
NON_INS = f"{TEST_INS}^^^&1.2.250.1.999.7.3&ISO^NH"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (drop_slot("creationTime"), "XDSRegistryMetadataError"),
        (drop_slot("legalAuthenticator"), "XDSRegistryMetadataError"),
        (set_slot("serviceStartTime", "2025-01-02"), "XDSRegistryMetadataError"),
        (set_code(DE.CLASS_CODE, "99"), "XDSRegistryMetadataError"),
        (set_code(DE.FORMAT_CODE, "urn:unknown:format"), "XDSRegistryMetadataError"),
        (set_code(DE.CONFIDENTIALITY_CODE, "SECRET"), "XDSRegistryMetadataError"),
        (set_code(DE.HEALTHCARE_FACILITY_TYPE_CODE, "SA25", "1.2.3.4"), "XDSRegistryMetadataError"),
        (set_code(SS.CONTENT_TYPE_CODE, "07", "1.2.3.4"), "XDSRegistryMetadataError"),
        (set_identifier(DE.UNIQUE_ID, "not-an-oid"), "XDSRegistryMetadataError"),
        (set_identifier(DE.PATIENT_ID, f"{TEST_INS}^^^&{INS_TEST_ROOT}&ISO^INS"), "XDSRegistryMetadataError"),
        (set_identifier(DE.PATIENT_ID, OTHER_PATIENT), "XDSPatientIdDoesNotMatch"),
        (set_slot("hash", "0" * 40), "XDSRepositoryMetadataError"),
        (set_slot("size", "1"), "XDSRepositoryMetadataError"),
        (drop_documents, "XDSMissingDocument"),
        (add_document, "XDSMissingDocumentMetadata"),
        (drop_member, "XDSRegistryMetadataError"),
    ],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "__qualname__", "mutate").split(".")[0],
)
async def test_sandbox_refuses_bad_metadata_with_the_ihe_code(mutate: Any, code: str) -> None:
    async with running_dmp(require_vihf=False) as dmp:
        status, codes = await submit(dmp, mutate=mutate)
        assert (status, code in codes) == ("Failure", True), codes
        assert dmp.documents == {}  # all or nothing (ITI-42 is atomic)
        assert all(TEST_INS not in e.context for e in dmp.last_errors)  # contexts name metadata, never values


async def test_sandbox_refuses_unknown_patients_and_non_ins_roots() -> None:
    async with running_dmp(require_vihf=False, known_patients=[OTHER_INS]) as dmp:
        assert await submit(dmp) == ("Failure", ["XDSUnknownPatientId"])
        both = [set_identifier(DE.PATIENT_ID, NON_INS), set_identifier(SS.PATIENT_ID, NON_INS)]
        status, codes = await submit(dmp, mutate=lambda b: [m(b) for m in both])
        assert (status, codes) == ("Failure", ["XDSUnknownPatientId"])
    async with running_dmp(require_vihf=False, known_patients=[PATIENT]) as dmp:
        assert await submit(dmp) == ("Success", [])


async def test_sandbox_refuses_hash_and_size_of_another_attachment() -> None:
    async with running_dmp(require_vihf=False) as dmp:
        status, codes = await submit(dmp, attachment=b"<ClinicalDocument/>")
        assert status == "Failure" and codes == ["XDSRepositoryMetadataError"]
        contexts = [e.context for e in dmp.last_errors]
        assert sum("hash does not match" in c or "size does not match" in c for c in contexts) == 2
        # and the lot signature's Manifest covers other bytes than those attached
        assert sum("lot signature: Manifest digest differs" in c for c in contexts) == 1, contexts


async def test_sandbox_duplicate_unique_ids_and_non_identical_content() -> None:
    async with running_dmp(require_vihf=False) as dmp:
        assert await submit(dmp) == ("Success", [])
        assert await submit(dmp) == ("Failure", ["XDSDuplicateUniqueIdInRegistry"])
        # Same uniqueId, other bytes (another title): ITI TF-3 Table 4.2.4.1-2 XDSNonIdenticalHash.
        other = synthetic_cda().replace(b"<title>Compte", b"<title>Autre compte")
        assert await submit(dmp, cda=other) == ("Failure", ["XDSNonIdenticalHash"])
        assert len(dmp.documents) == 1


async def test_sandbox_replacement_rules() -> None:
    first = "1.2.250.1.999.7.1^DOC-1"
    async with running_dmp(require_vihf=False) as dmp:
        # RPLC to an entry the registry does not hold.
        assert await submit(dmp, cda=synthetic_cda(doc_ext="DOC-2", replaces=first)) == (
            "Failure",
            ["XDSRegistryMetadataError"],
        )
        assert await submit(dmp) == ("Success", [])
        assert await submit(dmp, cda=synthetic_cda(doc_ext="DOC-2", replaces=first)) == ("Success", [])
        assert dmp.by_unique_id(first).status.endswith("Deprecated")  # type: ignore[union-attr]
        # Replacing the deprecated version again is refused.
        assert await submit(dmp, cda=synthetic_cda(doc_ext="DOC-3", replaces=first)) == (
            "Failure",
            ["XDSRegistryDeprecatedDocumentError"],
        )
        # Replacing another patient's document is refused.
        other = synthetic_cda(doc_ext="DOC-9", ins=OTHER_INS)
        assert await submit(dmp, cda=other) == ("Success", [])
        status, codes = await submit(dmp, cda=synthetic_cda(doc_ext="DOC-4", replaces="1.2.250.1.999.7.1^DOC-9"))
        assert (status, codes) == ("Failure", ["XDSPatientIdDoesNotMatch"])


async def test_sandbox_takes_inline_base64_documents() -> None:
    async with running_dmp(require_vihf=False) as dmp:
        assert await submit(dmp, mtom=False) == ("Success", [])
        [doc] = dmp.documents.values()
        assert doc.content == synthetic_cda()


async def test_sandbox_vihf_checks(pki: Pki, tmp_path: Path) -> None:
    signer = VihfSigner(vihf_config(), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    other = make_pki(tmp_path / "other", ca_name="Other CA")
    stranger = VihfSigner(vihf_config(), cert_file=str(other.client_cert), key_file=str(other.client_key))
    async with running_dmp(vihf_signer_cert_file=str(pki.client_cert)) as dmp:
        url = dmp.repository_url
        cases = [
            ({}, "wsse:InvalidSecurity"),  # no assertion
            ({"signer": signer, "tamper": True}, "wsse:FailedCheck"),
            ({"signer": stranger}, "wsse:FailedCheck"),  # signed, but not by the pinned certificate
        ]
        for kw, subcode in cases:
            status, ctype, body = await post(url, *pnr_request(url, **kw))
            soap = answer(ctype, body)
            assert status == 400 and soap.fault is not None, kw
            assert soap.fault.summary() == f"Sender/{subcode}"
        # The VIHF names another patient than the lot.
        status, ctype, body = await post(url, *pnr_request(url, signer=signer, resource_id=OTHER_PATIENT))
        assert read_registry_response(answer(ctype, body).body).codes() == ["XDSPatientIdDoesNotMatch"]
        status, ctype, body = await post(url, *pnr_request(url, signer=signer))
        assert read_registry_response(answer(ctype, body).body).status == "Success"
        assert dmp.requests == 5 and len(dmp.documents) == 1


async def test_sandbox_refuses_what_is_not_soap_or_not_iti41() -> None:
    async with running_dmp(require_vihf=False) as dmp:
        status, _, _ = await post(dmp.repository_url, b"{}", "application/json")
        assert status == 415
        status, ctype, body = await post(dmp.repository_url, b"<a/>", "application/soap+xml")
        assert status == 400 and answer(ctype, body).fault.code == "Sender"  # type: ignore[union-attr]
        env = etree.tostring(envelope(etree.Element("x"), action="urn:unknown"))
        status, ctype, body = await post(dmp.repository_url, env, "application/soap+xml")
        assert answer(ctype, body).fault.summary() == "Sender/wsa:ActionNotSupported"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- adapter against the sandbox


def sandbox_tls(pki: Pki) -> dict[str, Any]:
    return {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "ca_file": str(pki.ca),
        "require_client_cert": True,
    }


async def find_documents(
    dmp: DmpSandbox,
    pki: Pki,
    status: str,
    return_type: str = "LeafClass",
    *,
    patient: str = PATIENT,
    name_id: str | None = None,
) -> Any:
    """ITI-18 FindDocuments as a professional (VIHF NameID ``name_id``, default the configured one)."""
    signer = VihfSigner(vihf_config(), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    assertion = signer.sign(assertion_for(signer, patient, {"name_id": name_id} if name_id else None))
    query = find_documents_request(patient, statuses=[status], return_type=return_type)
    xml = etree.tostring(envelope(query, action=ACTION_STORED_QUERY, to=dmp.registry_url, security=[assertion]))
    ctx = client_context(TlsConfig(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)))
    status_code, ctype, body = await post(dmp.registry_url, xml, "application/soap+xml", ctx)
    assert status_code == 200
    return answer(ctype, body).body


async def test_adapter_feeds_the_sandbox_over_mutual_tls_and_a_replacement_supersedes(pki: Pki) -> None:
    async with running_dmp(tls=sandbox_tls(pki), vihf_signer_cert_file=str(pki.client_cert)) as dmp:
        out = outbound(dmp.repository_url, pki)
        try:
            first = cda_message()
            await out.send(first)
            v1 = dmp.by_unique_id("1.2.250.1.999.7.1^DOC-1")
            assert v1 is not None and v1.status.endswith("Approved") and v1.content == first.body
            assert v1.entry_uuid == entry_uuid_for(v1.unique_id)  # the hub's UUID kept by the registry

            await out.send(cda_message(doc_ext="DOC-2", version="2", replaces="1.2.250.1.999.7.1^DOC-1"))
            v2 = dmp.by_unique_id("1.2.250.1.999.7.1^DOC-2")
            assert v2 is not None and v2.status.endswith("Approved") and v2.replaces == v1.entry_uuid
            assert v1.status.endswith("Deprecated") and v1.replaced_by == v2.entry_uuid
        finally:
            await out.stop()

        # ITI-18 FindDocuments sees only the current version as Approved.
        approved = await find_documents(dmp, pki, "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved")
        assert read_registry_response(approved).status == "Success"
        [entry] = read_submission(approved.find(q("rim", "RegistryObjectList"))).entries
        assert entry.identifiers[DE.UNIQUE_ID] == "1.2.250.1.999.7.1^DOC-2"
        assert entry.slot("repositoryUniqueId") == dmp.config.repository_unique_id
        deprecated = await find_documents(
            dmp, pki, "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated", "ObjectRef"
        )
        assert [r.get("id") for r in deprecated.iter(q("rim", "ObjectRef"))] == [v1.entry_uuid]

        # The hub's listing route.
        async with hub_routes(dmp) as client:
            resp = await client.get("/sandboxes/dmp/documents")
            listing = await resp.json()
        assert [(d["unique_id"], d["status"]) for d in listing] == [
            ("1.2.250.1.999.7.1^DOC-1", "Deprecated"),
            ("1.2.250.1.999.7.1^DOC-2", "Approved"),
        ]


async def test_mutual_tls_is_required(pki: Pki, tmp_path: Path) -> None:
    async with running_dmp(tls=sandbox_tls(pki), require_vihf=False) as dmp:
        anonymous = XdsOutbound(
            "dmp",
            XdsOutboundConfig(endpoint=dmp.repository_url, tls=TlsConfig(ca_file=str(pki.ca)), metadata=xds_config()),
        )
        try:
            with pytest.raises(NotConnected):
                await anonymous.send(cda_message())
        finally:
            await anonymous.stop()
        assert dmp.documents == {}


async def test_retry_on_503_then_recovery(pki: Pki) -> None:
    async with running_dmp(fail_503_times=1, retry_after_secs=7, vihf_signer_cert_file=str(pki.client_cert)) as dmp:
        out = outbound(dmp.repository_url, pki)
        message = cda_message()
        try:
            with pytest.raises(Retryable) as info:
                await out.send(message)
            assert info.value.retry_after_secs == 7 and "503" in str(info.value)
            await out.send(message)  # the hub's next attempt: the sandbox has recovered
            assert len(dmp.documents) == 1 and dmp.answered_503 == 1

            # The same through the hub's faults route.
            async with hub_routes(dmp) as client:
                resp = await client.post("/sandboxes/dmp/faults", json={"fail_503_times": 1})
                assert (await resp.json())["fail_503_times"] == 1
                bad = await client.post("/sandboxes/dmp/faults", json={"fail_503_times": -1})
                assert bad.status == 400
            second = cda_message(doc_ext="DOC-5")
            with pytest.raises(Retryable):
                await out.send(second)
            await out.send(second)
            assert len(dmp.documents) == 2
        finally:
            await out.stop()


async def test_sandbox_delay_and_soap_fault_knobs_are_retryable() -> None:
    async with running_dmp(require_vihf=False, soap_fault_times=1) as dmp:
        out = outbound(dmp.repository_url, vihf=False, response_timeout_secs=0.3)
        try:
            with pytest.raises(Retryable, match="SOAP fault Receiver"):
                await out.send(cda_message())
            dmp.delay_secs = 0.8
            with pytest.raises(Retryable, match="no answer within"):
                await out.send(cda_message())
        finally:
            await out.stop()


async def test_a_document_without_ins_never_leaves_the_hub() -> None:
    async with running_dmp(require_vihf=False) as dmp:
        out = outbound(dmp.repository_url, vihf=False)
        try:
            with pytest.raises(MappingError) as info:
                await out.send(cda_message(ins_root="1.2.250.1.999.7.4"))
            assert TEST_INS not in str(info.value)
        finally:
            await out.stop()
        assert dmp.requests == 0


async def test_adapter_without_mtom_sends_inline_documents() -> None:
    # A plain XDS registry (no VIHF, no lot signature): the sandbox told to accept unsigned lots.
    async with running_dmp(require_vihf=False, require_signed_lot=False) as dmp:
        out = outbound(dmp.repository_url, vihf=False, mtom=False)
        try:
            await out.send(cda_message())
        finally:
            await out.stop()
        assert len(dmp.documents) == 1


# --------------------------------------------------------------------------- adapter classification (canned peer)


class CannedPeer:
    """An HTTP peer answering whatever the test sets: status, content type, body, delay."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b""
        self.ctype = "application/soap+xml; charset=UTF-8"
        self.headers: dict[str, str] = {}
        self.delay = 0.0
        self.seen: list[bytes] = []

    def registry(self, status: str, errors: list[RegistryErrorInfo] | None = None, *, mtom: bool = False) -> None:
        env = etree.tostring(envelope(registry_response(status, errors or []), action="x", relates_to=""))
        if mtom:
            self.body, self.ctype = encode_related(env, [], action="x")
        else:
            self.body, self.ctype = env, "application/soap+xml; charset=UTF-8"

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(await request.read())
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, body=self.body, headers={"Content-Type": self.ctype, **self.headers})


@pytest.fixture
async def canned() -> AsyncIterator[tuple[CannedPeer, XdsOutbound]]:
    peer = CannedPeer()
    app = web.Application()
    app.router.add_post("/repository", peer.handle)
    server = TestServer(app)
    await server.start_server()
    out = outbound(str(server.make_url("/repository")), vihf=False, response_timeout_secs=1)
    try:
        yield peer, out
    finally:
        await out.stop()
        await server.close()


async def test_success_is_accepted_mtom_or_not(canned: tuple[CannedPeer, XdsOutbound]) -> None:
    peer, out = canned
    peer.registry("Success")
    await out.send(cda_message())
    warning = RegistryErrorInfo(
        "XDSExtraMetadataNotSaved", "", "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"
    )
    peer.registry("Success", [warning], mtom=True)
    await out.send(cda_message())
    # What went out: MTOM with the CDA as an XOP attachment, WS-Addressing and ITI-41 action.
    sent = peer.seen[0]
    assert b"Content-Type: application/xop+xml" in sent and synthetic_cda() in sent
    assert b"urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b" in sent and b"xop:Include" in sent


async def test_failure_is_rejected_with_codes_and_no_patient_data(canned: tuple[CannedPeer, XdsOutbound]) -> None:
    peer, out = canned
    peer.registry(
        "Failure",
        [
            RegistryErrorInfo("XDSUnknownPatientId", f"Patient {PATIENT} inconnu du DMP"),
            RegistryErrorInfo("XDSRegistryMetadataError", "classCode invalide"),
        ],
    )
    with pytest.raises(Rejected) as info:
        await out.send(cda_message())
    text = str(info.value)
    assert "XDSUnknownPatientId" in text and "XDSRegistryMetadataError: classCode invalide" in text
    assert TEST_INS not in text and info.value.ack_code == "XDSUnknownPatientId"


async def test_partial_success_is_rejected(canned: tuple[CannedPeer, XdsOutbound]) -> None:
    peer, out = canned
    peer.registry("PartialSuccess", [RegistryErrorInfo("PartialReplaceContentNotProcessed", "")])
    with pytest.raises(Rejected, match=r"PartialSuccess.*PartialReplaceContentNotProcessed"):
        await out.send(cda_message())


async def test_transient_registry_codes_are_retryable(canned: tuple[CannedPeer, XdsOutbound]) -> None:
    peer, out = canned
    peer.registry("Failure", [RegistryErrorInfo("XDSRegistryBusy", "")])
    with pytest.raises(Retryable, match="XDSRegistryBusy"):
        await out.send(cda_message())


async def test_duplicate_can_count_as_delivered(canned: tuple[CannedPeer, XdsOutbound]) -> None:
    peer, out = canned
    peer.registry("Failure", [RegistryErrorInfo("XDSDuplicateUniqueIdInRegistry", "")])
    with pytest.raises(Rejected):
        await out.send(cda_message())
    lenient = XdsOutbound("dmp", out.config.model_copy(update={"duplicate_unique_id_is_success": True}))
    try:
        await lenient.send(cda_message())
    finally:
        await lenient.stop()


@pytest.mark.parametrize(
    ("status", "body", "expected", "match"),
    [
        (500, "fault-receiver", Retryable, "SOAP fault Receiver"),
        (400, "fault-sender", Retryable, r"SOAP fault Sender/wsse:InvalidSecurity \(HTTP 400\)"),
        (503, "", Retryable, "HTTP 503"),
        (502, "<html/>", Retryable, "HTTP 502"),
        (429, "", Retryable, "HTTP 429"),
        (404, "", Rejected, "HTTP 404"),
        (413, "<html/>", Rejected, "HTTP 413"),
        (200, "not xml", Retryable, "without a SOAP RegistryResponse"),
        (200, "other-body", Retryable, "not a RegistryResponse"),
    ],
)
async def test_http_and_soap_classification(
    canned: tuple[CannedPeer, XdsOutbound], status: int, body: str, expected: type[Exception], match: str
) -> None:
    peer, out = canned
    peer.status = status
    if body == "fault-receiver":
        peer.body = etree.tostring(fault_envelope("Receiver", f"patient {TEST_INS} crashed us"))
    elif body == "fault-sender":
        wsse = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
        peer.body = etree.tostring(fault_envelope("Sender", "VIHF refused", subcode=(wsse, "InvalidSecurity")))
    elif body == "other-body":
        peer.body = etree.tostring(envelope(etree.Element("{urn:x}Other"), action="x", relates_to=""))
    else:
        peer.body = body.encode()
    with pytest.raises(expected, match=match) as info:
        await out.send(cda_message())
    assert TEST_INS not in str(info.value)  # a fault's Reason text is never copied


async def test_503_retry_after_header(canned: tuple[CannedPeer, XdsOutbound]) -> None:
    peer, out = canned
    peer.status, peer.headers = 503, {"Retry-After": "30"}
    with pytest.raises(Retryable) as info:
        await out.send(cda_message())
    assert info.value.retry_after_secs == 30


async def test_timeout_and_connection_refused(canned: tuple[CannedPeer, XdsOutbound]) -> None:
    peer, out = canned
    peer.registry("Success")
    peer.delay = 3
    with pytest.raises(Retryable, match="no answer within 1s"):
        await out.send(cda_message())
    closed = outbound("http://127.0.0.1:9/repository", vihf=False)  # discard port: nothing listens
    try:
        with pytest.raises(NotConnected):
            await closed.send(cda_message())
    finally:
        await closed.stop()


async def test_request_carries_a_signed_vihf_for_the_patient(pki: Pki) -> None:
    out = outbound("https://dmp.test/repository", pki)
    body, ctype, message_id = out.build_request(cda_message())
    soap = read_envelope(decode_related(body, ctype).root.body)
    assert soap.action == ACTION_PNR and soap.message_id == message_id and message_id.startswith("urn:uuid:")
    assert soap.header is not None
    [assertion] = soap.header.iter("{urn:oasis:names:tc:SAML:2.0:assertion}Assertion")
    values = {
        a.get("Name"): [v.text or v[0].get("code") for v in a]
        for a in assertion.iter("{urn:oasis:names:tc:SAML:2.0:assertion}Attribute")
    }
    assert values["urn:oasis:names:tc:xacml:2.0:resource:resource-id"] == [PATIENT]
    assert values["Identifiant_Structure"] == ["1999000001"]
    assert values["Secteur_Activite"] == ["SA25^1.2.250.1.71.4.2.4"]
    # The document's author (a médecin biologiste, G15_10/SM03) is the subject: JDV_J65 profession + savoir-faire.
    assert values["urn:oasis:names:tc:xacml:2.0:subject:role"] == ["10", "SM03"]
    assert values["urn:oasis:names:tc:xspa:1.0:subject:subject-id"] == ["SACHA TESTBIO"]
    assert assertion.findtext(".//{urn:oasis:names:tc:SAML:2.0:assertion}NameID") == "810000000002"
    assert values["Ressource_URN"] == ["urn:dmp"] and values["Authentification_Mode"] == ["INDIRECTE"]
    # The hub authenticates with its client certificate: TLSClient, as the ANS request.
    ref = assertion.findtext(".//{urn:oasis:names:tc:SAML:2.0:assertion}AuthnContextClassRef")
    assert ref == "urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient"
    # SAML 2.0 core §2.3.3: Issuer, then Signature, then Subject.
    assert [etree.QName(c).localname for c in assertion][:3] == ["Issuer", "Signature", "Subject"]
    await out.stop()
    # An automated feed (lot author = the configured submitter, a device): the configured subject, AUTOMATE.
    auto = outbound("https://dmp.test/repository", pki, metadata=xds_config(lot_author="submitter"))
    body, ctype, _ = auto.build_request(cda_message())
    soap = read_envelope(decode_related(body, ctype).root.body)
    assert soap.header is not None
    roles = [
        v[0].get("code")
        for a in soap.header.iter("{urn:oasis:names:tc:SAML:2.0:assertion}Attribute")
        if a.get("Name") == "urn:oasis:names:tc:xacml:2.0:subject:role"
        for v in a
    ]
    assert roles == ["AUTOMATE"]
    await auto.stop()


async def test_secret_connection_puts_the_confidentiality_code_in_the_vihf(pki: Pki) -> None:
    out = outbound("https://dmp.test/repository", pki)
    name = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"

    def codes(message: Message) -> list[str]:
        body, ctype, _ = out.build_request(message)
        soap = read_envelope(decode_related(body, ctype).root.body)
        assert soap.header is not None
        return [
            v[0].get("code")
            for a in soap.header.iter("{urn:oasis:names:tc:SAML:2.0:assertion}Attribute")
            if a.get("Name") == name
            for v in a
        ]

    assert codes(cda_message(metadata={"secret_connection": "Y"})) == ["INVISIBLE_REPRESENTANTS_LEGAUX"]
    assert codes(cda_message(metadata={"secret_connection": "N"})) == []
    with pytest.raises(MappingError, match="secret_connection"):
        codes(cda_message(metadata={"secret_connection": "oui"}))
    await out.stop()


def test_components_are_registered_with_described_configs() -> None:
    registry.load_builtin()
    assert registry.get("outbound", "xds") is not None and registry.get("sandbox", "dmp") is not None
    out = outbound("https://dmp.test/repository", vihf=False)
    assert out.describe() == {"endpoint": "dmp", "protocol": "xds", "to": "https://dmp.test/repository"}
    with pytest.raises(ValueError):
        XdsOutboundConfig(endpoint="dmp.test", metadata=xds_config())


# --------------------------------------------------------------------------- in a running hub


async def test_hub_delivers_to_the_dmp_sandbox_retrying_through_a_503(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = {
        "type": "xds",
        "endpoint": f"http://127.0.0.1:{port}/repository",
        "response_timeout_secs": 5,
        "metadata": xds_config().model_dump(mode="json", exclude_none=True),
    }
    config = write_config(
        tmp_path,
        peer_port=1,
        endpoints={"dmp": endpoint},
        sandboxes={
            "dmp_sandbox": {
                "type": "dmp",
                "listen": f"127.0.0.1:{port}",
                "fail_503_times": 1,
                "require_vihf": False,
                "require_signed_lot": False,
                "known_patients": None,
            }
        },
        routes=[
            {
                "route": "cda_to_dmp",
                "from": "mllp_in",
                "when": {"content_type": CDA_TYPE},
                "to": [{"destination": "dmp", "retry": FAST_RETRY}],
            }
        ],
    )
    async with running_hub(config) as hub:
        sandbox = hub.sandboxes["dmp_sandbox"]
        await hub.submit("mllp_in", cda_message(metadata={"content": "cda"}))
        await wait_until(lambda: len(sandbox.documents) == 1)
        assert sandbox.answered_503 == 1  # first attempt refused, the hub retried
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{hub.http_port}/sandboxes/dmp_sandbox/documents", headers=admin_headers(hub)
            ) as resp,
        ):
            [listed] = await resp.json()
        assert listed["unique_id"] == "1.2.250.1.999.7.1^DOC-1" and listed["status"] == "Approved"


def _key_files(folder: Path, kind: str) -> tuple[str, str]:
    """A key of that kind and a self-signed certificate for it, as PEM files."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    key = {"ec256": lambda: ec.generate_private_key(ec.SECP256R1()),
           "ec384": lambda: ec.generate_private_key(ec.SECP384R1()),
           "rsa": lambda: rsa.generate_private_key(65537, 2048)}[kind]()  # fmt: skip
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vihf signer")])
    now = dt.datetime.now(dt.UTC)
    cert = x509.CertificateBuilder(
        subject_name=name, issuer_name=name, public_key=key.public_key(), serial_number=9,
        not_valid_before=now, not_valid_after=now + dt.timedelta(days=1),
    ).sign(key, hashes.SHA256())  # fmt: skip
    cert_file, key_file = folder / f"{kind}.crt", folder / f"{kind}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


@pytest.mark.parametrize(
    ("kind", "algorithm"),
    [("ec256", "auto"), ("ec384", "ecdsa-sha384"), ("rsa", "rsa-sha256"), ("rsa", "rsa-sha512")],
)
def test_the_vihf_signature_is_the_one_signxml_makes(tmp_path: Path, kind: str, algorithm: str) -> None:
    """The hub writes the enveloped signature from prepared text: signxml's signer makes the same one."""
    cert_file, key_file = _key_files(tmp_path, kind)
    config = vihf_config(signature_algorithm=algorithm)
    signer = VihfSigner(config, cert_file=cert_file, key_file=key_file)
    unsigned = build_assertion(
        config, issuer=signer.issuer, structure_id="1999000001", resource_id=f"{TEST_INS}^^^&{INS_TEST_ROOT}&ISO^NH",
        now=dt.datetime(2025, 3, 1, 10, 20, tzinfo=dt.UTC), assertion_id='_a"<&>',
    )  # fmt: skip
    before = etree.tostring(unsigned)
    ours = signer.sign(unsigned)
    assert etree.tostring(unsigned) == before  # the input is left as it was
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    default = "ecdsa-sha256" if kind.startswith("ec") else "rsa-sha256"
    method = {"ecdsa-sha256": SignatureMethod.ECDSA_SHA256, "ecdsa-sha384": SignatureMethod.ECDSA_SHA384,
              "rsa-sha256": SignatureMethod.RSA_SHA256, "rsa-sha512": SignatureMethod.RSA_SHA512}[
        default if algorithm == "auto" else algorithm]  # fmt: skip
    theirs = XMLSigner(
        method=methods.enveloped,
        signature_algorithm=method,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    ).sign(unsigned, key=key, cert=[cert], reference_uri='#_a"<&>', id_attribute="ID")  # type: ignore[arg-type]

    def without_value(assertion: etree._Element) -> bytes:
        text = etree.tostring(assertion)
        return re.sub(rb"<ds:SignatureValue>[^<]*<", b"<ds:SignatureValue><", text)

    assert without_value(ours) == without_value(theirs)
    if kind == "rsa":  # RSA PKCS#1 v1.5 is deterministic: the whole signature is the same
        assert etree.tostring(ours) == etree.tostring(theirs)
    pem = Path(cert_file).read_text()
    verified = verify_assertion(etree.fromstring(etree.tostring(ours)), trusted_cert_pem=pem)
    assert verified.get("ID") == '_a"<&>'
    tampered = etree.tostring(ours).replace(b"1999000001", b"1999000002")
    with pytest.raises(VihfError):
        verify_assertion(etree.fromstring(tampered), trusted_cert_pem=pem)


async def test_the_registry_response_and_a_soap_fault_come_back_as_the_reply() -> None:
    async with running_dmp(require_vihf=False, require_signed_lot=False, soap_fault_times=1) as dmp:
        out = outbound(dmp.repository_url, vihf=False, mtom=False)
        try:
            with pytest.raises(Retryable) as info:
                await out.send(cda_message())
            fault = info.value.reply
            assert fault is not None and fault.kind == "http" and fault.summary.split()[0].isdigit()
            assert read_envelope(fault.body).fault is not None  # the SOAP Fault as the sandbox sent it
            accepted = await out.send(cda_message())
        finally:
            await out.stop()
    assert accepted.summary == "200 Success" and accepted.content_type.startswith("application/soap+xml")
    soap = read_envelope(accepted.body)
    assert soap.body is not None and read_registry_response(soap.body).status == "Success"
    assert not accepted.truncated and accepted.size == len(accepted.body)
