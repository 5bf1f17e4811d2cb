"""The lot signature (IHE DSG, XAdES) the hub adds to every DMP submission, checked independently."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLVerifier, methods
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.xades.xades import XAdESSigner

from hub.devpki import make_pki
from mappings.xds import DE, read_submission
from mappings.xds.ebrim import HAS_MEMBER, SIGNS
from mappings.xds.metadata import provide_and_register_request
from mappings.xds.signature import (
    LotSignatureError,
    LotSigner,
    _reference_uri,
    sign_submission,
    verify_lot_signature,
)
from tests.unit.test_xds_metadata import build

DS = "http://www.w3.org/2000/09/xmldsig#"


def signer_from(folder: Path, name: str = "pki") -> tuple[LotSigner, str]:
    pki = make_pki(folder / name)
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    return LotSigner(key, cert), pki.client_cert.read_text()


def test_the_lot_carries_a_signature_document_with_the_ihe_dsg_metadata(tmp_path: Path) -> None:
    signer, _ = signer_from(tmp_path)
    sub = sign_submission(build(mask_ps="Y"), signer)
    parsed = read_submission(etree.fromstring(etree.tostring(provide_and_register_request(sub))))
    doc, sig = parsed.entries
    assert sig.mime_type == "text/xml" and sig.slot("languageCode") == "art"
    codes = {name: sig.code(scheme) for name, scheme in (("class", DE.CLASS_CODE), ("type", DE.TYPE_CODE))}
    assert (codes["class"].code, codes["class"].coding_scheme) == ("urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", "URN")
    assert (codes["type"].code, codes["type"].coding_scheme) == ("E1762", "ASTM")
    fmt = sig.code(DE.FORMAT_CODE)
    assert (fmt.code, fmt.coding_scheme) == ("http://www.w3.org/2000/09/xmldsig#", "URN")
    # A masked document does not get a visible signature.
    assert [c.code for c in sig.codes(DE.CONFIDENTIALITY_CODE)] == ["N", "MASQUE_PS"]
    assert sig.slot("hash") == hashlib.sha1(sub.signature_document).hexdigest()
    lot = parsed.submission_sets[0]
    links = {(a.type, a.source, a.target) for a in parsed.associations}
    assert (SIGNS, sig.id, lot.id) in links and (HAS_MEMBER, lot.id, sig.id) in links
    assert (HAS_MEMBER, lot.id, doc.id) in links
    # The base64 Document elements: the document and its signature, each under its entry id.
    ids = [d.get("id") for d in provide_and_register_request(sub).iterfind("{urn:ihe:iti:xds-b:2007}Document")]
    assert ids == [doc.id, sig.id]


def test_an_independent_xml_dsig_check_and_the_manifest_digest(tmp_path: Path) -> None:
    signer, cert_pem = signer_from(tmp_path)
    sub = sign_submission(build(), signer)
    root = etree.fromstring(sub.signature_document)
    # Plain XML-DSig verification (signxml's core verifier, not the XAdES helper the hub uses).
    results = XMLVerifier().verify(root, x509_cert=cert_pem, expect_references=3)
    manifests = [r.signed_xml.find(f"{{{DS}}}Manifest") for r in results if r.signed_xml is not None]
    [manifest] = [m for m in manifests if m is not None]
    [ref] = manifest.iterfind(f"{{{DS}}}Reference")
    assert ref.get("URI") == "urn:oid:1.2.250.1.999.7.1%5EDOC-1"
    assert ref.findtext(f"{{{DS}}}DigestValue") == base64.b64encode(hashlib.sha256(sub.document).digest()).decode()
    signed_properties = root.find(".//{*}QualifyingProperties/{*}SignedProperties/{*}SignedSignatureProperties")
    assert signed_properties is not None and signed_properties.find("{*}SigningTime") is not None
    check = verify_lot_signature(sub.signature_document, {sub.document_entry.unique_id: sub.document})
    assert check.covered == (sub.document_entry.unique_id,)


def test_verification_refuses_what_the_dmp_refuses(tmp_path: Path) -> None:
    signer, cert_pem = signer_from(tmp_path)
    _, other_pem = signer_from(tmp_path, "other")
    sub = sign_submission(build(), signer)
    docs = {sub.document_entry.unique_id: sub.document}
    with pytest.raises(LotSignatureError, match="Manifest digest differs"):
        verify_lot_signature(sub.signature_document, {sub.document_entry.unique_id: sub.document + b" "})
    with pytest.raises(LotSignatureError, match="not covered"):
        verify_lot_signature(sub.signature_document, {**docs, "1.2.3.4": b"x"})
    with pytest.raises(LotSignatureError, match="XAdES signature invalid"):
        verify_lot_signature(sub.signature_document, docs, trusted_cert_pem=other_pem)
    tampered = sub.signature_document.replace(b"<ds:DigestValue>", b"<ds:DigestValue>AAAA", 1)
    with pytest.raises(LotSignatureError):
        verify_lot_signature(tampered, docs)
    with pytest.raises(LotSignatureError, match="not XML"):
        verify_lot_signature(b"not xml", docs)
    assert verify_lot_signature(sub.signature_document, docs, trusted_cert_pem=cert_pem).covered


def _shape(signature: bytes) -> str:
    """The signature without what changes from one signing to the next (Ids, time, digests, value)."""
    text = signature.decode()
    text = re.sub(r"SignXML(Signature|Reference|Certificate)[0-9A-F]{8}", r"SignXML\1", text)
    text = re.sub(r"-SignedProperties[0-9A-F]{8}", "-SignedProperties", text)
    return re.sub(r"<(ds:DigestValue|ds:SignatureValue|xades:SigningTime)>[^<]*<", r"<\1><", text)


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_the_prepared_signature_is_the_one_signxml_makes(kind: str) -> None:
    """The hub writes the XAdES signature from prepared text: signxml's signer makes the same elements."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lot signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder(subject_name=name, issuer_name=name, public_key=key.public_key(), serial_number=7,
                                not_valid_before=now, not_valid_after=now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    documents = {"1.2.250.1.999.1^a&b": b"<doc/>", "1.2.250.1.999.2": b"second"}
    ours = LotSigner(key, cert).sign(
        documents, now=dt.datetime(2025, 3, 1, 11, 20, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    )
    method = SignatureMethod.ECDSA_SHA256 if kind == "ec" else SignatureMethod.RSA_SHA256
    manifest = etree.Element(f"{{{DS}}}Manifest", nsmap={"ds": DS}, Id="IHEManifest")
    for unique_id, content in documents.items():
        ref = etree.SubElement(manifest, f"{{{DS}}}Reference", URI=_reference_uri(unique_id))
        etree.SubElement(ref, f"{{{DS}}}DigestMethod", Algorithm="http://www.w3.org/2001/04/xmlenc#sha256")
        etree.SubElement(ref, f"{{{DS}}}DigestValue").text = base64.b64encode(hashlib.sha256(content).digest()).decode()
    theirs = XAdESSigner(
        method=methods.enveloping,
        signature_algorithm=method,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_0,
    ).sign(manifest, key=key, cert=[cert])
    assert _shape(ours) == _shape(etree.tostring(theirs, xml_declaration=True, encoding="UTF-8"))
    check = verify_lot_signature(ours, documents)
    assert check.covered == tuple(documents) and check.signing_time == "2025-03-01T10:20:00+00:00"
    # The Manifest's digest reference is the same as signxml's (same canonical form of the same element).
    assert etree.fromstring(ours).findtext(f".//{{{DS}}}DigestValue") == theirs.findtext(f".//{{{DS}}}DigestValue")
    tampered = ours.replace(b"1.2.250.1.999.2", b"1.2.250.1.999.3")
    with pytest.raises(LotSignatureError):
        verify_lot_signature(tampered, {"1.2.250.1.999.1^a&b": b"<doc/>", "1.2.250.1.999.3": b"second"})


def test_the_schema_check_refuses_as_signxml_and_leaves_no_garbage_cycle(tmp_path: Path) -> None:
    import gc

    from signxml.xades.xades import XAdESVerifier

    from mappings.xds.signature import _ACCEPTED, _XAdESVerifier

    signer, cert_pem = signer_from(tmp_path)
    sub = sign_submission(build(), signer)
    docs = {sub.document_entry.unique_id: sub.document}
    # Signatures no schema accepts: signxml's own verifier and the hub's raise the same error.
    broken = [
        sub.signature_document.replace(b"<ds:SignedInfo>", b"<ds:SignedInfo><ds:Unknown/>", 1),
        re.sub(rb"<ds:SignatureValue>[^<]*</ds:SignatureValue>", b"", sub.signature_document),
        sub.signature_document.replace(b"<xades:SigningTime>", b"<xades:SigningTime><x/>", 1),
    ]
    for data in broken:
        outcomes = []
        for verifier in (XAdESVerifier(), _XAdESVerifier()):
            try:
                verifier.verify(etree.fromstring(data), x509_cert=cert_pem, expect_config=_ACCEPTED)
            except Exception as exc:  # the outcome itself is compared
                outcomes.append((type(exc), str(exc)))
            else:
                outcomes.append((None, ""))
        assert outcomes[0] == outcomes[1] and outcomes[0][0] is not None
    gc.collect()
    gc.disable()
    try:
        verify_lot_signature(sub.signature_document, docs, trusted_cert_pem=cert_pem)
        assert gc.collect() == 0  # nothing of the check left to the cyclic collector
    finally:
        gc.enable()
