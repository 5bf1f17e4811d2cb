"""The XAdES signature of a submission lot, as the DMP requires (IHE DSG, DOMAIN.md §5.1).

The DMP takes a lot only when it is signed: a *signature document* travels in
the lot beside the clinical documents, with its own DocumentEntry and a
``urn:ihe:iti:2007:AssociationType:signs`` association to the SubmissionSet
(ANS PDSm4DMP ``transaction_td2``: "constitue un lot de soumission XDS et
signe ce lot (XAdES)"). What the hub sends mirrors the ANS request to the DMP
test platform (DRIM-M_DATA ``informatif/XDS/publication.xml``):

===============================  ==========================================================
signature document               ``ds:Signature`` (XML-DSig enveloping) holding an IHE
                                 ``ds:Manifest`` with one ``ds:Reference`` per document of
                                 the lot, ``URI="urn:oid:<uniqueId>"`` and the digest of the
                                 document's bytes; XAdES ``QualifyingProperties`` (signing
                                 time, signing certificate)
classCode                        ``urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1`` (``URN``) Digital Signature
typeCode                         ``E1762`` (``ASTM``) Full Document
formatCode                       ``http://www.w3.org/2000/09/xmldsig#`` (``URN``)
eventCodeList                    ``1.2.840.10065.1.12.1.14`` Source (purpose of signature)
languageCode / mimeType          ``art`` / ``text/xml``
patientId, sourcePatientId       the lot's patientId
confidentiality, facility,       copied from the signed document (a hidden document does not
practice setting                 get a visible signature)
legalAuthenticator, author       the document's legal authenticator, the lot's author
===============================  ==========================================================

The XML signature is checked by ``signxml``'s XAdES support and made as its XAdES
signer makes it, from prepared text (:class:`LotSigner`); the Manifest's references are
plain digests of document bytes, which XML-DSig leaves to the application
(XML-DSig core §5.1) and :func:`verify_lot_signature` checks. The ANS
example uses SHA-1 and RSA-SHA1, which signxml refuses to produce; the hub
signs RSA/ECDSA with SHA-256.

Pure: keys come in as objects, the clock as an argument.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import secrets
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml import methods
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidInput, InvalidSignature
from signxml.util import add_pem_header
from signxml.verifier import VerifyResult
from signxml.xades.xades import XAdESSignatureConfiguration, XAdESSigner, XAdESVerifier

from mappings.xds.metadata import Author, Code, DocumentEntry, XdsSubmission, entry_uuid_for

__all__ = [
    "PURPOSE_SOURCE",
    "SIGNATURE_CLASS",
    "SIGNATURE_FORMAT",
    "SIGNATURE_TYPE",
    "LotSignatureError",
    "LotSigner",
    "SignatureCheck",
    "pem_certificate",
    "sign_submission",
    "verify_lot_signature",
]

DS = "http://www.w3.org/2000/09/xmldsig#"
SIGNATURE_CLASS = Code("urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", "URN", "Digital Signature")
SIGNATURE_TYPE = Code("E1762", "ASTM", "Full Document")
SIGNATURE_FORMAT = Code("http://www.w3.org/2000/09/xmldsig#", "URN", "Default Signature Style")
PURPOSE_SOURCE = Code("1.2.840.10065.1.12.1.14", "1.2.840.10065.1.12", "Source")
"""ASTM E1762 purpose of signature "Source", the eventCode of the ANS signature entry."""

_SIGNATURE_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:interop-hub:xds:lot-signature")
_MANIFEST_DIGESTS = {
    "http://www.w3.org/2001/04/xmlenc#sha256": hashlib.sha256,
    "http://www.w3.org/2001/04/xmldsig-more#sha384": hashlib.sha384,
    "http://www.w3.org/2001/04/xmlenc#sha512": hashlib.sha512,
}
_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
_ACCEPTED = XAdESSignatureConfiguration(
    signature_methods=frozenset(
        {
            SignatureMethod.RSA_SHA256,
            SignatureMethod.RSA_SHA384,
            SignatureMethod.RSA_SHA512,
            SignatureMethod.ECDSA_SHA256,
            SignatureMethod.ECDSA_SHA384,
        }
    ),
    digest_algorithms=frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512}),
)


class LotSignatureError(ValueError):
    """A lot signature that is missing, malformed, invalid, or does not cover the lot's documents."""


def _reference_uri(unique_id: str) -> str:
    # A uniqueId may be root^extension; '^' is not a URI character, so it is percent-encoded.
    return "urn:oid:" + urllib.parse.quote(unique_id, safe=".")


class LotSigner:
    """Signs lots with one key and its certificate (the structure's, the VIHF signer's).

    The signature is the one signxml's XAdES signer writes (enveloping, C14N 1.0, SHA-256;
    the same elements in the same order, the same kind of random Ids), but made from prepared text:
    what stays the same for a signer (KeyInfo, the certificate digest) is made once, and a lot
    costs one parse of the signature, four canonicalisations and the key operation. signxml's
    general signer rebuilt, re-serialised and re-parsed the signature several times per lot
    (~0.5 ms of the ~0.7 ms). :func:`verify_lot_signature` (signxml's verifier) checks both alike.
    """

    def __init__(self, key: Any, cert: x509.Certificate) -> None:
        if isinstance(key, rsa.RSAPrivateKey):
            method = SignatureMethod.RSA_SHA256
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            method = SignatureMethod.ECDSA_SHA256
        else:
            raise TypeError("the lot signing key must be RSA or EC")
        self._key = key
        self._method = method.value
        der = cert.public_bytes(Encoding.DER)
        self._cert_digest = base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")
        self._key_info = _key_info_content(key, cert, method)

    def sign(self, documents: Mapping[str, bytes], *, now: dt.datetime | None = None) -> bytes:
        """The signature document over ``documents`` (uniqueId → bytes), serialised.

        ``now`` (timezone-aware) is the XAdES SigningTime; the wall clock when not given, as signxml had it.
        """
        sig_token, ref_token, key_token, props_token = (secrets.token_hex(4).upper() for _ in range(4))
        sig_id, ref_id = f"SignXMLSignature{sig_token}", f"SignXMLReference{ref_token}"
        key_id = f"SignXMLCertificate{key_token}"
        props_id = f"{sig_id}-SignedProperties{props_token}"
        references = "".join(
            f'<ds:Reference URI="{escape(_reference_uri(unique_id), _QUOT)}"><ds:DigestMethod Algorithm="{_SHA256}"/>'
            f"<ds:DigestValue>{base64.b64encode(hashlib.sha256(content).digest()).decode('ascii')}</ds:DigestValue>"
            "</ds:Reference>"
            for unique_id, content in documents.items()
        )
        digest = f'<ds:DigestMethod Algorithm="{_SHA256}"/><ds:DigestValue/>'
        when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="seconds")
        text = (
            f'<ds:Signature xmlns:ds="{DS}" xmlns:xades="{_XADES}" Id="{sig_id}"><ds:SignedInfo>'
            f'<ds:CanonicalizationMethod Algorithm="{_C14N}"/><ds:SignatureMethod Algorithm="{self._method}"/>'
            f'<ds:Reference URI="#object" Id="{ref_id}"><ds:Transforms><ds:Transform Algorithm="{_C14N}"/>'
            f"</ds:Transforms>{digest}</ds:Reference>"
            f'<ds:Reference URI="#{props_id}" Type="http://uri.etsi.org/01903#SignedProperties">{digest}</ds:Reference>'
            f'<ds:Reference URI="#{key_id}">{digest}</ds:Reference></ds:SignedInfo><ds:SignatureValue/>'
            f'<ds:KeyInfo Id="{key_id}">{self._key_info}</ds:KeyInfo>'
            f'<ds:Object><xades:QualifyingProperties Target="#{sig_id}"><xades:SignedProperties Id="{props_id}">'
            f"<xades:SignedSignatureProperties><xades:SigningTime>{when}</xades:SigningTime>"
            f'<xades:SigningCertificateV2><xades:Cert><xades:CertDigest><ds:DigestMethod Algorithm="{_SHA256}"/>'
            f"<ds:DigestValue>{self._cert_digest}</ds:DigestValue></xades:CertDigest></xades:Cert>"
            "</xades:SigningCertificateV2></xades:SignedSignatureProperties><xades:SignedDataObjectProperties>"
            f'<xades:DataObjectFormat ObjectReference="#{ref_id}"><xades:Description>{_DESCRIPTION}</xades:Description>'
            "<xades:MimeType>text/xml</xades:MimeType></xades:DataObjectFormat></xades:SignedDataObjectProperties>"
            "</xades:SignedProperties></xades:QualifyingProperties></ds:Object>"
            f'<ds:Object Id="object"><ds:Manifest Id="IHEManifest">{references}</ds:Manifest></ds:Object>'
            "</ds:Signature>"
        )
        root = etree.fromstring(text, _PARSER)
        signed_info, signature_value, key_info, properties_object, data_object = root
        # The references' digests are over the elements as they stand in the signature (C14N 1.0 keeps the
        # namespaces they inherit), which is what a verifier canonicalises (XML-DSig core §4.4.3.3).
        for value, node in zip(
            signed_info.iter(f"{{{DS}}}DigestValue"), (data_object, properties_object[0][0], key_info), strict=True
        ):
            value.text = base64.b64encode(hashlib.sha256(etree.tostring(node, method="c14n")).digest()).decode()
        data = etree.tostring(signed_info, method="c14n")
        signature_value.text = base64.b64encode(signature_value_of(self._key, data, hashes.SHA256())).decode("ascii")
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


_XADES = "http://uri.etsi.org/01903/v1.3.2#"
_C14N = CanonicalizationMethod.CANONICAL_XML_1_0.value
_DESCRIPTION = "Default XAdES payload description"  # what signxml writes (XAdESDataObjectFormat)
_QUOT = {'"': "&quot;"}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _key_info_content(key: Any, cert: x509.Certificate, method: SignatureMethod) -> str:
    """KeyInfo's content (KeyValue, X509Data) as signxml's XAdES signer writes it for this key, made once."""
    signer = XAdESSigner(
        method=methods.enveloping,
        signature_algorithm=method,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_0,
    )
    return key_info_text(signer.sign(etree.Element(f"{{{DS}}}Manifest", nsmap={"ds": DS}), key=key, cert=[cert]))


def key_info_text(signed: etree._Element) -> str:
    """The content of the ``ds:KeyInfo`` of a signature made by signxml, as text (its ``ds`` prefix in scope)."""
    text = etree.tostring(signed, encoding="unicode")
    start = text.index(">", text.index("<ds:KeyInfo")) + 1
    return text[start : text.index("</ds:KeyInfo>")]


def signature_value_of(key: Any, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
    """The XML-DSig SignatureValue bytes of ``data`` (canonical SignedInfo): RSA PKCS#1 v1.5, or ECDSA.

    XML-DSig 1.1 §6.4.3: an ECDSA SignatureValue is r then s, each as wide as the curve, not DER
    (as signxml writes and reads it).
    """
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), algorithm)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(algorithm)))
    width = (key.key_size + 7) // 8
    return r.to_bytes(width, "big") + s.to_bytes(width, "big")


def sign_submission(submission: XdsSubmission, signer: LotSigner, *, now: dt.datetime | None = None) -> XdsSubmission:
    """The submission with its lot signature document and entry (module docstring)."""
    de, lot = submission.document_entry, submission.submission_set
    content = signer.sign({de.unique_id: submission.document}, now=now)
    unique_id = f"2.25.{uuid.uuid5(_SIGNATURE_NS, lot.unique_id).int}"
    entry = DocumentEntry(
        entry_uuid=entry_uuid_for(unique_id),
        unique_id=unique_id,
        mime_type="text/xml",
        title="Source",
        patient_id=lot.patient_id,
        source_patient_id=lot.patient_id,
        source_patient_info=(),
        creation_time=lot.submission_time,
        service_start_time=lot.submission_time,
        service_stop_time=lot.submission_time,
        language_code="art",  # ISO 639-2 "artificial languages", as the ANS example
        legal_authenticator=de.legal_authenticator,
        hash=hashlib.sha1(content).hexdigest(),  # DocumentEntry.hash is SHA-1 (ITI TF-3 §4.2.3.2)
        size=len(content),
        authors=(Author(person=lot.author.person, institutions=lot.author.institutions),),
        class_code=SIGNATURE_CLASS,
        type_code=SIGNATURE_TYPE,
        format_code=SIGNATURE_FORMAT,
        healthcare_facility_type_code=de.healthcare_facility_type_code,
        practice_setting_code=de.practice_setting_code,
        confidentiality_codes=de.confidentiality_codes,
        event_codes=(PURPOSE_SOURCE,),
    )
    return dataclasses.replace(submission, signature=entry, signature_document=content)


@dataclasses.dataclass(frozen=True, slots=True)
class SignatureCheck:
    """What a verified lot signature says: who signed, when, and which documents it covers."""

    signer: x509.Certificate
    signing_time: str
    covered: tuple[str, ...]


def _signed_manifest(results: Iterable[VerifyResult]) -> tuple[etree._Element, str]:
    """The IHE Manifest and the SigningTime, as signxml verified them (never read from the input)."""
    manifest = None
    signing_time = ""
    for result in results:
        signed = result.signed_xml
        if signed is None:
            continue
        found = signed.find(f"{{{DS}}}Manifest") if signed.tag == f"{{{DS}}}Object" else None
        if found is not None:
            manifest = found
        st = signed.find(".//{*}SigningTime")
        if st is not None:
            signing_time = (st.text or "").strip()
    if manifest is None:
        raise LotSignatureError("the signature does not cover an IHE Manifest")
    return manifest, signing_time


def _manifest_references(manifest: etree._Element) -> dict[str, tuple[str, str]]:
    """uniqueId → (digest algorithm, digest value) of each Manifest reference."""
    covered: dict[str, tuple[str, str]] = {}
    for ref in manifest.iterfind(f"{{{DS}}}Reference"):
        uri = ref.get("URI", "")
        method = ref.find(f"{{{DS}}}DigestMethod")
        value = ref.findtext(f"{{{DS}}}DigestValue") or ""
        if not uri.startswith("urn:oid:") or method is None:
            raise LotSignatureError("Manifest reference without urn:oid URI or DigestMethod")
        covered[urllib.parse.unquote(uri.removeprefix("urn:oid:"))] = (method.get("Algorithm", ""), value.strip())
    return covered


def _check_digests(covered: Mapping[str, tuple[str, str]], documents: Mapping[str, bytes]) -> None:
    """Every document of the lot is covered, with an accepted algorithm and the digest of its bytes."""
    for unique_id, content in documents.items():
        if unique_id not in covered:
            raise LotSignatureError("a document of the lot is not covered by the signature Manifest")
        algorithm, value = covered[unique_id]
        digest = _MANIFEST_DIGESTS.get(algorithm)
        if digest is None:
            raise LotSignatureError("Manifest digest algorithm not accepted (SHA-256 or stronger)")
        if base64.b64encode(digest(content).digest()).decode("ascii") != value:
            raise LotSignatureError("Manifest digest differs from the document (hash of the lot)")


class _XAdESVerifier(XAdESVerifier):
    """signxml's XAdES verifier, its schema check written so that it leaves no reference cycle.

    Why: signxml tries its XAdES schemas in turn and keeps the ``DocumentInvalid`` of each one that does
    not fit; that exception's traceback holds the frame that holds it, and through the frames above it
    every object of the request being checked (the DMP sandbox's parsed request, ~200 objects and
    several lxml documents a lot), held until the cyclic garbage collector found them: ~0.25 ms of
    collection a document in the sandbox (``bench/documents.py --gc``). Here the schemas before the
    last are asked with ``validate`` (a bool, no exception); the last one with ``assertValid``, so a
    signature that fits none raises what signxml raises: the last schema's ``DocumentInvalid``.
    """

    def validate_schema(self, signature: etree._Element) -> None:
        *first, last = self.schemas()  # type: ignore[no-untyped-call]  # signxml
        if any(schema.validate(signature) for schema in first):
            return
        last.assertValid(signature)


def verify_lot_signature(
    signature: bytes, documents: Mapping[str, bytes], *, trusted_cert_pem: str | None = None
) -> SignatureCheck:
    """Check a lot signature document against the lot's documents (uniqueId → bytes).

    The XAdES signature must verify (signxml), its Manifest must hold exactly
    one reference per document, each with the digest of those bytes. With
    ``trusted_cert_pem`` the signer must be that certificate. Reads what was
    signed from signxml's result, never from the input (signature wrapping).
    Raises :class:`LotSignatureError` with a reason naming no patient data.
    """
    try:
        root = etree.fromstring(
            signature, etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
        )
    except etree.XMLSyntaxError:
        raise LotSignatureError("signature document is not XML") from None
    if root.tag != f"{{{DS}}}Signature":
        raise LotSignatureError("signature document is not a ds:Signature")
    # Without a pinned certificate, the embedded one: integrity, not identity (the caller compares it).
    cert = _embedded_cert(root) if trusted_cert_pem is None else None
    try:
        if cert is None:
            cert = pem_certificate(trusted_cert_pem or "")
        results = _XAdESVerifier().verify(root, x509_cert=cert, expect_config=_ACCEPTED)
    except (InvalidSignature, InvalidInput) as exc:
        raise LotSignatureError(f"XAdES signature invalid ({type(exc).__name__})") from None
    except (ValueError, TypeError) as exc:
        raise LotSignatureError(f"XAdES signature unreadable ({type(exc).__name__})") from None
    manifest, signing_time = _signed_manifest(results)
    covered = _manifest_references(manifest)
    _check_digests(covered, documents)
    if set(covered) - set(documents):
        raise LotSignatureError("the signature Manifest names a document that is not in the lot")
    return SignatureCheck(signer=cert, signing_time=signing_time, covered=tuple(covered))


@functools.lru_cache(maxsize=64)
def pem_certificate(pem: str) -> x509.Certificate:
    """The certificate of a PEM text, parsed once per text (signxml re-parses a PEM on every verification).

    Raises ValueError for a text that is not a certificate, as signxml does with the PEM itself.
    """
    return x509.load_pem_x509_certificate(add_pem_header(pem))  # type: ignore[no-untyped-call]  # signxml.util


def _embedded_cert(root: etree._Element) -> x509.Certificate:
    found = root.find(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate")
    if found is None or not (found.text or "").strip():
        raise LotSignatureError("signature carries no X509Certificate")
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join((found.text or "").split())))
    except ValueError:
        raise LotSignatureError("signature X509Certificate unreadable") from None
