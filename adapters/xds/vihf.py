"""VIHF: the SAML 2.0 assertion (IHE XUA, French profile) that authorises a DMP transaction.

The VIHF ("vecteur d'identification et d'habilitation formelle") travels in
the ``wsse:Security`` header of every DMP request. It is built per message
(its ``resource-id`` attribute is the patient's INS, DOMAIN.md §5.2) and
signed with the structure's "cachet" certificate: an enveloped XML-DSig
signature over the assertion's ``ID``, exclusive canonicalisation, RSA or
ECDSA with SHA-256 (the ANS example of the HL7v2→DMP volet [S18] signs
rsa-sha256; the 2023 DRIM-M example still shows rsa-sha1, which signxml
refuses to produce: SHA-1 signatures are deprecated).

Verification uses ``signxml`` (XML-DSig on lxml + cryptography); signing writes the signature
signxml's enveloped signer makes, from prepared text (:meth:`VihfSigner.sign`; ~4 times cheaper).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import hashlib
import uuid
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from pydantic import Field, SecretStr
from signxml import methods
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidInput, InvalidSignature
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier

from hub.errors import ConfigError
from hub.registry import ComponentConfig
from mappings.xds.jdv import load as load_jdv
from mappings.xds.signature import LotSigner, key_info_text, pem_certificate, signature_value_of
from mappings.xds.visibility import VISIBILITY_SCHEME

__all__ = [
    "SAML",
    "VihfConfig",
    "VihfError",
    "VihfRole",
    "VihfSigner",
    "VihfSubject",
    "assertion_attributes",
    "build_assertion",
    "subject_for",
    "verify_assertion",
]

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
_A = "{" + SAML + "}"

RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
SUBJECT_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
PURPOSE_OF_USE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
CONFIDENTIALITY_CODE = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
SECTEUR_ACTIVITE_SYSTEM = "1.2.250.1.71.4.2.4"  # TRE_R02-SecteurActivite
PURPOSE_OF_USE_SYSTEM = "1.2.250.1.213.1.1.4.248"  # "mode acces VIHF 1.0"

REQUIRED_ATTRIBUTES = (
    "VIHF_Version",
    "Authentification_Mode",
    "Identifiant_Structure",
    "Secteur_Activite",
    RESOURCE_ID,
    "Ressource_URN",
    SUBJECT_ID,
    SUBJECT_ROLE,
    PURPOSE_OF_USE,
    "LPS_Nom",
    "LPS_Version",
)
"""Attributes the DMP mapping table lists without "facultatif" (DOMAIN.md §5.2, [S18])."""

_SIGNATURE_METHODS = {
    "rsa-sha256": SignatureMethod.RSA_SHA256,
    "rsa-sha512": SignatureMethod.RSA_SHA512,
    "ecdsa-sha256": SignatureMethod.ECDSA_SHA256,
    "ecdsa-sha384": SignatureMethod.ECDSA_SHA384,
}
_ACCEPTED = SignatureConfiguration(
    signature_methods=frozenset(_SIGNATURE_METHODS.values()),
    digest_algorithms=frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512}),
)


class VihfError(ValueError):
    """A VIHF that cannot be verified or lacks what the DMP requires (texts name attributes, not values)."""


class VihfRole(ComponentConfig):
    """One ``subject:role`` value (JDV_J65-SubjectRole-DMP), written as an HL7 ``Role`` CE."""

    code: str = Field(description="Role code, e.g. AUTOMATE, 10 (médecin), SM26.")
    code_system: str = Field(description="Code system OID, e.g. 1.2.250.1.213.1.1.4.6 for AUTOMATE.")
    display_name: str = Field(description="Display name of the role.")


class VihfConfig(ComponentConfig):
    """The VIHF SAML assertion of the DMP (DOMAIN.md §5.2); defaults fit an automated feed ("AUTOMATE")."""

    cert_file: str | None = Field(
        None,
        description="PEM certificate of the structure's signing ('cachet') key. Unset: the TLS client certificate.",
    )
    key_file: str | None = Field(None, description="PEM private key of cert_file. Unset: the TLS client key.")
    key_password: SecretStr | None = Field(None, description="Password of an encrypted key_file.")
    issuer: str | None = Field(None, description="Issuer (X509SubjectName). Unset: the certificate's subject DN.")
    name_id: str = Field(
        description="Subject/NameID for automated flows: the responsible person's id. A lot whose author is a "
        "professional (PRT SB, the document's author) uses that professional's id instead."
    )
    subject_id: str = Field(
        description="subject-id for automated flows: 'software, model, service'. A professional author's "
        "'given family' is used instead."
    )
    roles: list[VihfRole] = Field(
        default_factory=lambda: [
            VihfRole(code="AUTOMATE", code_system="1.2.250.1.213.1.1.4.6", display_name="AUTOMATE")
        ],
        min_length=1,
        max_length=2,
        description="subject:role values, 1 or 2 (JDV_J65); AUTOMATE for automated flows.",
    )
    secteur_activite: str | None = Field(
        None,
        description="Secteur_Activite code from JDV_J61 (TRE_R02), e.g. SA25; sent as code^1.2.250.1.71.4.2.4. "
        "Unset: the document's healthcareFacilityTypeCode (one hub, several sectors).",
    )
    structure_id: str | None = Field(
        None, description="Identifiant_Structure (idNat_Struct). Unset: metadata.structure.id_nat."
    )
    vihf_version: str = Field(
        "3.0", description="VIHF_Version. The ANS table says 4.0 but both real examples carry 3.0 (DOMAIN.md §5.2)."
    )
    authentication_mode: str = Field("INDIRECTE", description="Authentification_Mode (INDIRECTE for a hub).")
    authn_context_class_ref: str | None = Field(
        None,
        description="AuthnContextClassRef, consistent with how the flow authenticates. Unset: "
        "urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient when the hub authenticates with a TLS client "
        "certificate (as the ANS request does), else …:unspecified.",
    )
    purpose_of_use: str = Field("normal", description="purposeofuse code (1.2.250.1.213.1.1.4.248).")
    lps_nom: str = Field(description="LPS_Nom: name of the software that issues the VIHF.")
    lps_version: str = Field(description="LPS_Version: its version.")
    lps_id: str | None = Field(None, description="LPS_ID (optional).")
    lps_homologation_dmp: str | None = Field(None, description="LPS_ID_HOMOLOGATION_DMP: DMP homologation number.")
    validity_secs: float | None = Field(
        None, gt=0, description="Add Conditions NotBefore/NotOnOrAfter this long (optional in the DMP table)."
    )
    signature_algorithm: Literal["auto", "rsa-sha256", "rsa-sha512", "ecdsa-sha256", "ecdsa-sha384"] = Field(
        "auto", description="XML-DSig SignatureMethod; auto picks rsa-sha256 or ecdsa-sha256 from the key type."
    )


TLS_CLIENT = "urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient"
UNSPECIFIED = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified"
PROFESSION_SYSTEM = "1.2.250.1.71.1.2.7"  # TRE_G15-ProfessionSante, as the role's first occurrence
SAVOIR_FAIRE_SYSTEM = "1.2.250.1.71.4.2.5"  # TRE_R01-EnsembleSavoirFaire-CISIS, the médecin's second role


@dataclasses.dataclass(frozen=True, slots=True)
class VihfSubject:
    """Who a VIHF speaks for, for one lot (ANS "Mapping VIHF pour le DMP": PRT SB and its structure)."""

    name_id: str
    subject_id: str
    roles: list[tuple[str, str, str]]
    structure_id: str
    secteur_activite: str | None


def subject_for(
    config: VihfConfig, author_person: str, specialties: tuple[str, ...], institution: str, facility_code: str
) -> VihfSubject:
    """The VIHF subject of a lot whose author is ``author_person`` (XCN) at ``institution`` (XON).

    A professional (XCN-13 IDNPS, name type D) is the subject: NameID = XCN-1, subject-id = "given family",
    role = his profession from the author specialty ``G15_<profession>/<savoir-faire>`` (TRE_G15,
    1.2.250.1.213.1.1.4.5) as JDV_J65 codes it, plus the savoir-faire for a médecin (volet: 2nd occurrence
    "uniquement et obligatoirement pour les médecins et pharmaciens"); a profession JDV_J65 does not list,
    or none, gives the configured roles (AUTOMATE). A device author keeps the whole configured subject.
    """
    xcn = author_person.split("^")
    xon = institution.split("^")
    structure_id = xon[9] if len(xon) > 9 and xon[9] else ""
    person = len(xcn) > 12 and xcn[9] == "D" and xcn[12] == "IDNPS" and bool(xcn[0])
    configured = [(r.code, r.code_system, r.display_name) for r in config.roles]
    if not person:
        return VihfSubject(config.name_id, config.subject_id, configured, structure_id, config.secteur_activite)
    # Volet: NameID = PRT-5.1, subject-id = PRT-5.2/5.3; the role from the professional's profession, else
    # "AUTOMATE" (the configured roles) "quand les autres cas ne sont pas possibles".
    name = " ".join(part for part in (xcn[2], xcn[1]) if part)
    roles = _roles(specialties) or configured
    return VihfSubject(xcn[0], name or xcn[0], roles, structure_id, config.secteur_activite or facility_code or None)


def _roles(specialties: tuple[str, ...]) -> list[tuple[str, str, str]]:
    roles = load_jdv("JDV_J65-SubjectRole-DMP")
    for specialty in specialties:
        code = specialty.split("^", 1)[0]
        profession, _, savoir_faire = code.removeprefix("G15_").partition("/")
        if not code.startswith("G15_") or (profession, PROFESSION_SYSTEM) not in roles:
            continue
        out = [(profession, PROFESSION_SYSTEM, roles.display(profession, PROFESSION_SYSTEM))]
        if profession == "10" and (savoir_faire, SAVOIR_FAIRE_SYSTEM) in roles:
            out.append((savoir_faire, SAVOIR_FAIRE_SYSTEM, roles.display(savoir_faire, SAVOIR_FAIRE_SYSTEM)))
        return out
    return []


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _attribute(parent: etree._Element, name: str, *values: str | etree._Element) -> None:
    attr = etree.SubElement(parent, _A + "Attribute", Name=name)
    for value in values:
        holder = etree.SubElement(attr, _A + "AttributeValue")
        if isinstance(value, str):
            holder.text = value
        else:
            holder.append(value)


def _ce(tag: str, code: str, system: str, display: str, system_name: str | None = None) -> etree._Element:
    el = etree.Element(f"{{{HL7}}}{tag}", nsmap={None: HL7, "xsi": XSI}, code=code, codeSystem=system)
    if system_name:
        el.set("codeSystemName", system_name)
    el.set("displayName", display)
    el.set(f"{{{XSI}}}type", "CE")
    return el


def build_assertion(
    config: VihfConfig,
    *,
    issuer: str,
    structure_id: str,
    resource_id: str,
    now: dt.datetime,
    assertion_id: str | None = None,
    subject: VihfSubject | None = None,
    tls_client: bool = False,
    secret_connection: bool = False,
) -> etree._Element:
    """The unsigned VIHF assertion, with a ``ds:Signature`` placeholder right after Issuer.

    SAML 2.0 core §2.3.3 fixes the child order (Issuer, Signature, Subject,
    Conditions, statements), so the enveloped signature must go after
    Issuer, not at the end where XML-DSig signers put it by default.
    ``resource_id`` is the patient's INS as an XDS CX (``…^^^&OID&ISO^NH``).
    ``subject`` (see :func:`subject_for`) replaces the configured NameID,
    subject-id, roles and Secteur_Activite for one lot; ``tls_client`` picks
    the TLSClient AuthnContextClassRef when none is configured.
    ``secret_connection`` (MetaDMPMSS CONNEXION_SECRETE=Y) adds the
    ``…:resource:patient:hl7:confidentiality-code`` attribute that the volet
    makes mandatory "si demande de connexion secrète au DMP", with
    INVISIBLE_REPRESENTANTS_LEGAUX (TRE_A07), the code the DMP integration
    guide's connector uses for it (the exact value encoding, a CE like Role,
    was not read in a primary text).
    """
    name_id = subject.name_id if subject else config.name_id
    subject_id = subject.subject_id if subject else config.subject_id
    roles = subject.roles if subject else [(r.code, r.code_system, r.display_name) for r in config.roles]
    secteur = (subject.secteur_activite if subject else None) or config.secteur_activite
    if not secteur:
        raise ValueError("VIHF Secteur_Activite unknown: set vihf.secteur_activite or send a facility type")
    class_ref = config.authn_context_class_ref or (TLS_CLIENT if tls_client else UNSPECIFIED)
    aid = assertion_id or f"_{uuid.uuid4()}"
    a = etree.Element(
        _A + "Assertion", nsmap={"saml2": SAML, "xsi": XSI}, ID=aid, IssueInstant=_iso(now), Version="2.0"
    )
    etree.SubElement(a, _A + "Issuer", Format="urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName").text = issuer
    etree.SubElement(a, f"{{{DS}}}Signature", nsmap={"ds": DS}, Id="placeholder")
    subject_el = etree.SubElement(a, _A + "Subject")
    etree.SubElement(subject_el, _A + "NameID").text = name_id
    if config.validity_secs:
        etree.SubElement(
            a,
            _A + "Conditions",
            NotBefore=_iso(now),
            NotOnOrAfter=_iso(now + dt.timedelta(seconds=config.validity_secs)),
        )
    authn = etree.SubElement(a, _A + "AuthnStatement", AuthnInstant=_iso(now))
    ctx = etree.SubElement(authn, _A + "AuthnContext")
    etree.SubElement(ctx, _A + "AuthnContextClassRef").text = class_ref
    stmt = etree.SubElement(a, _A + "AttributeStatement")
    _attribute(stmt, "VIHF_Version", config.vihf_version)
    _attribute(stmt, "Authentification_Mode", config.authentication_mode)
    _attribute(stmt, "Identifiant_Structure", structure_id)
    _attribute(stmt, "Secteur_Activite", f"{secteur}^{SECTEUR_ACTIVITE_SYSTEM}")
    _attribute(stmt, RESOURCE_ID, resource_id)
    _attribute(stmt, "Ressource_URN", "urn:dmp")
    _attribute(stmt, SUBJECT_ID, subject_id)
    _attribute(stmt, SUBJECT_ROLE, *(_ce("Role", code, system, display) for code, system, display in roles))
    purpose = _ce("PurposeOfUse", config.purpose_of_use, PURPOSE_OF_USE_SYSTEM, "Accès normal", "mode acces VIHF 1.0")
    _attribute(stmt, PURPOSE_OF_USE, purpose)
    _attribute(stmt, "LPS_Nom", config.lps_nom)
    _attribute(stmt, "LPS_Version", config.lps_version)
    if config.lps_id:
        _attribute(stmt, "LPS_ID", config.lps_id)
    if config.lps_homologation_dmp:
        _attribute(stmt, "LPS_ID_HOMOLOGATION_DMP", config.lps_homologation_dmp)
    if secret_connection:
        code = _ce(
            "ConfidentialityCode",
            "INVISIBLE_REPRESENTANTS_LEGAUX",
            VISIBILITY_SCHEME,
            "Non visible par les représentants légaux du patient",
        )
        _attribute(stmt, CONFIDENTIALITY_CODE, code)
    return a


class VihfSigner:
    """Loads the signing key and certificate once and signs assertions with them."""

    def __init__(self, config: VihfConfig, *, cert_file: str | None, key_file: str | None) -> None:
        cert_path, key_path = config.cert_file or cert_file, config.key_file or key_file
        if not cert_path or not key_path:
            raise ConfigError("vihf: a signing certificate and key are needed (vihf.cert_file/key_file or tls)")
        try:
            cert_pem = Path(cert_path).read_bytes()
            self._cert = x509.load_pem_x509_certificate(cert_pem)
            password = config.key_password.get_secret_value().encode() if config.key_password else None
            self._key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=password)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"vihf: cannot load the signing certificate or key ({type(exc).__name__})") from None
        if isinstance(self._key, rsa.RSAPrivateKey):
            default = "rsa-sha256"
        elif isinstance(self._key, ec.EllipticCurvePrivateKey):
            default = "ecdsa-sha256"
        else:
            raise ConfigError("vihf: the signing key must be RSA or EC")
        algorithm = default if config.signature_algorithm == "auto" else config.signature_algorithm
        if algorithm.split("-")[0] != default.split("-")[0]:
            raise ConfigError("vihf: signature_algorithm does not match the key type")
        method = _SIGNATURE_METHODS[algorithm]
        self._method = method.value
        self._hash = _HASHES[algorithm.split("-")[1]]
        # KeyInfo as signxml's signer writes it for this certificate (X509Data), taken once from a probe.
        probe = etree.Element(_A + "Assertion", nsmap={"saml2": SAML}, ID="_probe")
        etree.SubElement(probe, f"{{{DS}}}Signature", nsmap={"ds": DS}, Id="placeholder")
        probe_signer = XMLSigner(
            method=methods.enveloped,
            signature_algorithm=method,
            digest_algorithm=DigestAlgorithm.SHA256,
            c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
        )
        self._key_info = key_info_text(
            probe_signer.sign(probe, key=self._key, cert=[self._cert], reference_uri="#_probe", id_attribute="ID")
        )
        self.issuer = config.issuer or self._cert.subject.rfc4514_string()

    def lot_signer(self) -> LotSigner:
        """A XAdES signer of submission lots with the same key and certificate (DOMAIN.md §5.1)."""
        return LotSigner(self._key, self._cert)

    def sign(self, assertion: etree._Element) -> etree._Element:
        """A copy of the assertion with its enveloped signature in place of the placeholder.

        The signature signxml's enveloped signer writes (exclusive C14N, SHA-256 reference with the
        enveloped-signature and exc-c14n transforms, the certificate in KeyInfo), made from prepared
        text: one digest of the assertion without its signature (what the enveloped-signature
        transform gives a verifier, XML-DSig core §6.6.4), one of SignedInfo, the key operation.
        """
        signed = copy.deepcopy(assertion)
        placeholder = signed.find(f"{{{DS}}}Signature")
        if placeholder is None or placeholder.get("Id") != "placeholder":
            raise ValueError("the assertion has no ds:Signature placeholder")
        at = signed.index(placeholder)
        signed.remove(placeholder)
        digest = base64.b64encode(hashlib.sha256(etree.tostring(signed, method="c14n", exclusive=True)).digest())
        reference = escape(f"#{assertion.get('ID', '')}", {'"': "&quot;"})
        signature = etree.fromstring(
            f'<ds:Signature xmlns:ds="{DS}"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="{_EXC_C14N}"/>'
            f'<ds:SignatureMethod Algorithm="{self._method}"/><ds:Reference URI="{reference}"><ds:Transforms>'
            f'<ds:Transform Algorithm="{_ENVELOPED}"/><ds:Transform Algorithm="{_EXC_C14N}"/></ds:Transforms>'
            f'<ds:DigestMethod Algorithm="{_SHA256}"/><ds:DigestValue>{digest.decode("ascii")}</ds:DigestValue>'
            f"</ds:Reference></ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo>{self._key_info}</ds:KeyInfo>"
            "</ds:Signature>",
            _PARSER,
        )
        signed.insert(at, signature)
        signed_info = signature[0]
        value = signature_value_of(self._key, etree.tostring(signed_info, method="c14n", exclusive=True), self._hash)
        signature[1].text = base64.b64encode(value).decode("ascii")
        return signed


_EXC_C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0.value
_ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
_SHA256 = DigestAlgorithm.SHA256.value
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def verify_assertion(assertion: etree._Element, *, trusted_cert_pem: str | None = None) -> etree._Element:
    """Check the assertion's signature and return the signed assertion as verified.

    With ``trusted_cert_pem`` the signer must be that certificate (pinning);
    without it the signature is checked against the certificate the
    assertion carries, which proves integrity but not who signed. Callers
    must read attributes from the returned element, never from the input,
    so that a wrapped, unsigned copy cannot be read instead (signature
    wrapping). Raises :class:`VihfError`.
    """
    cert = trusted_cert_pem
    if cert is None:
        found = assertion.find(f"{{{DS}}}Signature/{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate")
        if found is None or not (found.text or "").strip():
            raise VihfError("VIHF signature carries no X509Certificate")
        body = "".join((found.text or "").split())
        cert = "-----BEGIN CERTIFICATE-----\n" + body + "\n-----END CERTIFICATE-----\n"
    try:
        result = XMLVerifier().verify(
            assertion, x509_cert=pem_certificate(cert), id_attribute="ID", expect_config=_ACCEPTED
        )
    except (InvalidSignature, InvalidInput) as exc:
        raise VihfError(f"VIHF signature invalid ({type(exc).__name__})") from None
    except (ValueError, TypeError) as exc:
        raise VihfError(f"VIHF signature unreadable ({type(exc).__name__})") from None
    signed = result.signed_xml  # type: ignore[union-attr]
    if signed is None or signed.tag != _A + "Assertion":
        raise VihfError("VIHF signature does not cover the assertion")
    return signed


def assertion_attributes(assertion: etree._Element) -> dict[str, list[str]]:
    """Attribute name → values; a structured value (Role, PurposeOfUse) reads as its ``code``."""
    out: dict[str, list[str]] = {}
    for attr in assertion.iterfind(f"{_A}AttributeStatement/{_A}Attribute"):
        values = out.setdefault(attr.get("Name", ""), [])
        for v in attr.iterfind(_A + "AttributeValue"):
            child = next(iter(v), None)
            values.append(child.get("code", "") if child is not None else (v.text or "").strip())
    name_id = assertion.find(f"{_A}Subject/{_A}NameID")
    if name_id is not None:
        out["Subject/NameID"] = [(name_id.text or "").strip()]
    issuer = assertion.find(_A + "Issuer")
    if issuer is not None:
        out["Issuer"] = [(issuer.text or "").strip()]
    return out
