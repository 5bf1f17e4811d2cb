"""A DMP stand-in: an XDS.b repository + registry answering ITI-41 and ITI-18 the way the DMP would.

It listens on its own address (TLS optional, client certificate required
when configured: the DMP authenticates structures by mutual TLS) and
serves ``POST /repository`` and ``POST /registry``; both dispatch on the
WS-Addressing Action, so either path takes either transaction.

**ITI-41** requests are read as real ones are sent: SOAP 1.2, MTOM
``multipart/related`` with ``xop:Include`` resolution, or a plain SOAP
envelope with the document inline in base64. A submission is accepted
whole or refused whole (ITI-42 is atomic), and every problem found is
reported as one ``rs:RegistryError`` with the IHE code (ITI TF-3 Table
4.2.4.1-2) and a codeContext that names the metadata at fault, never a
patient value:

========================================  ==================================================================
XDSRegistryMetadataError                  a required slot, classification or identifier missing or
                                          malformed (DMP cardinalities, DOMAIN.md §5.1); a code outside
                                          the DMP value set, by code (JDV_J57 classCode, JDV_J58
                                          confidentialityCode, JDV_J60 formatCode, JDV_J66 typeCode, J04 practice
                                          setting, J61 facility, J59 contentTypeCode); a classCode that is
                                          not the one ASS_X04 gives the typeCode;
                                          patientId not ``INS^^^&OID&ISO^NH``; a uniqueId that is not
                                          an OID[^ext]; a missing HasMember; an unknown RPLC target; a folder
XDSRepositoryMetadataError                hash or size not those of the attached document (ITI TF-2b
                                          §3.41.4.1.3), a document that is not valid base64, a mimeType the
                                          DMP does not take
XDSMissingDocument / …Metadata            a DocumentEntry without its document, a document without its entry
XDSUnknownPatientId                       patientId root is not an accepted INS root, or the patient is not
                                          in ``known_patients``
XDSPatientIdDoesNotMatch                  DocumentEntry vs SubmissionSet patientId, RPLC target of another
                                          patient, VIHF resource-id of another patient
XDSDuplicateUniqueIdInRegistry            document or SubmissionSet uniqueId already registered (same content)
XDSNonIdenticalHash / XDSNonIdenticalSize uniqueId already registered with other content (ITI TF-3 4.2.4.1)
XDSRegistryDuplicateUniqueIdInMessage     the same uniqueId twice in one request
XDSRegistryDeprecatedDocumentError        replacing a document that is already Deprecated
========================================  ==================================================================

The VIHF (DOMAIN.md §5.2) is checked before the metadata: a missing
assertion or attribute is a SOAP Fault ``wsse:InvalidSecurity``, a bad
signature ``wsse:FailedCheck`` (OASIS WSS 1.1 §12). The signature is
verified against ``vihf_signer_cert_file`` when set, else only against the
certificate the assertion carries (integrity, not identity).

The lot must carry its XAdES signature document (IHE DSG, ``signs``
association), signed with the key that signed the VIHF and covering the
digest of every document; VIHF roles are checked against JDV_J65, and
Identifiant_Structure against the lot's authorInstitution. The full table of
checks, each with its source and answer, is ``DMP.md`` beside this module
(one test per row). typeCode is checked against JDV_J66, healthcareFacilityTypeCode against JDV_J61,
practiceSettingCode against JDV_J04, contentTypeCode against JDV_J59, all by code and code system, and
the classCode against the one ASS_X04 gives the typeCode (value sets and table shipped as data in
:mod:`mappings.xds.jdv` and :mod:`mappings.cda.value_sets`, each with its version). Not checked: the CDA
content (schematrons), consent, the author's habilitation, and the VIHF issuer's trust chain unless pinned.

FindDocuments leaves out MASQUE_PS documents for professionals other than
their authors; ``GET /sandboxes/<name>/patient-view`` (the patient's view)
leaves out INVISIBLE_PATIENT documents.

Replacement (RPLC) makes the previous entry Deprecated. **ITI-18**
FindDocuments answers by patientId and status (LeafClass or ObjectRef).
Accepted documents are kept in memory, oldest dropped past
``max_documents``, and listed as JSON at ``GET /sandboxes/<name>/documents``.

Fault knobs (config or ``POST /sandboxes/<name>/faults``): answer 503 the
next N times, answer a SOAP Receiver fault the next N times, wait before
answering.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
import hashlib
import re
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from lxml import etree
from pydantic import Field, ValidationError, field_validator

from adapters.sandboxes.http_site import serve_app
from adapters.sandboxes.insi import DEFAULT_FIXTURES
from adapters.tls import TlsConfig
from adapters.xds.mtom import MtomError, Multipart, content_type_params, decode_related, element_bytes, encode_related
from adapters.xds.soap import (
    ACTION_PNR,
    ACTION_PNR_RESPONSE,
    ACTION_STORED_QUERY,
    ACTION_STORED_QUERY_RESPONSE,
    WSA,
    WSSE,
    SoapError,
    SoapMessage,
    envelope,
    fault_envelope,
    read_envelope,
)
from adapters.xds.vihf import (
    REQUIRED_ATTRIBUTES,
    RESOURCE_ID,
    SAML,
    SUBJECT_ROLE,
    VihfError,
    assertion_attributes,
    verify_assertion,
)
from hub.errors import ConfigError
from hub.identity import INS_ROOTS
from hub.message import utcnow
from hub.registry import ComponentConfig, register
from mappings.cda.value_sets import value_set
from mappings.xds import (
    AVAILABILITY_APPROVED,
    AVAILABILITY_DEPRECATED,
    DE,
    FIND_DOCUMENTS,
    SS,
    ParsedSubmission,
    RegistryErrorInfo,
    RegistryObject,
    adhoc_query_response,
    read_find_documents_request,
    read_submission,
    registry_response,
)
from mappings.xds.ebrim import HAS_MEMBER, IDENTIFIER_NAMES, RPLC, SCHEME_NAMES, SIGNS, q
from mappings.xds.hl7 import is_dtm, parse_cx
from mappings.xds.jdv import load as load_jdv
from mappings.xds.jdv import load_map
from mappings.xds.signature import LotSignatureError, verify_lot_signature

__all__ = ["DmpSandbox", "DmpSandboxConfig", "StoredDocument"]

_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Z]{2})?")
_UUID_ID = re.compile(r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


_TRE_R02 = "1.2.250.1.71.4.2.4"  # TRE_R02-SecteurActivite, the code system of JDV_J61


def _published(name: str) -> dict[str, frozenset[str]]:
    """A CI-SIS value set shipped in mappings.cda.value_sets, as {code system: codes}."""
    vs = value_set(name)
    out: dict[str, set[str]] = {}
    for code, code_systems in vs.systems.items():
        for system in code_systems:
            out.setdefault(system, set()).add(code)
    return {system: frozenset(codes) for system, codes in out.items()}


def _dmp_jdv(name: str) -> dict[str, frozenset[str]]:
    """A DMP value set shipped in mappings.xds.jdv, as {code system: codes}."""
    out: dict[str, set[str]] = {}
    for code, system in load_jdv(name).concepts:
        out.setdefault(system, set()).add(code)
    return {system: frozenset(codes) for system, codes in out.items()}


# typeCode: JDV_J66-TypeCode-DMP, the DMP's subset of JDV_J07 (S18 OBR-4: "en cas d'envoi au DMP, le Gestionnaire
# doit contrôler que le type de document appartient au jeu de valeur défini par le DMP (JDV_J66-TypeCode-DMP)"),
# with ASTM E1762 for the lot's signature document.
TYPE_CODES = _dmp_jdv("JDV_J66-TypeCode-DMP")
# classCode: JDV_J57-ClassCode-DMP (TRE_A03, plus the digital signature class from TRE_A10 "URN").
CLASS_CODES = _dmp_jdv("JDV_J57-ClassCode-DMP")
# confidentialityCode: JDV_J58-ConfidentialityCode-DMP (HL7 N/R/V and the TRE_A07 visibility codes).
CONFIDENTIALITY_CODES = _dmp_jdv("JDV_J58-ConfidentialityCode-DMP")
# formatCode: JDV_J60-FormatCode-DMP (TRE_A06, TRE_A11, the DICOM KOS uid, the XML-DSig URN).
FORMAT_CODES = _dmp_jdv("JDV_J60-FormatCode-DMP")
# healthcareFacilityTypeCode: JDV_J61-HealthcareFacilityTypeCode-DMP (S18 mapping), by code and code system.
FACILITY_TYPE_CODES = _dmp_jdv("JDV_J61-HealthcareFacilityTypeCode-DMP")
# practiceSettingCode: JDV_J04-XdsPracticeSettingCode-CISIS (S18 mapping), by code and code system.
PRACTICE_SETTING_CODES = _published("JDV_J04_XdsPracticeSettingCode_CISIS")
# SubmissionSet contentTypeCode: JDV_J59-ContentTypeCode-DMP (S18 "Lot de soumission"), by code and code system.
CONTENT_TYPE_CODES = _dmp_jdv("JDV_J59-ContentTypeCode-DMP")
# typeCode -> classCode: ASS_X04-CorrespondanceType-Classe-CISIS (S18 mapping: "classCode est déduit du CDA (champ
# code) selon la table de correspondance ASS_X04").
TYPE_CLASS = load_map("ASS_X04-CorrespondanceType-Classe-CISIS")
MIME_TYPES = frozenset({"text/xml", "application/xslt+xml", "application/dicom"})
_DOCUMENT_SLOTS = ("creationTime", "languageCode", "legalAuthenticator", "serviceStartTime", "sourcePatientId")


class DmpSandboxConfig(ComponentConfig):
    listen: str = Field("127.0.0.1:8091", description="host:port to listen on (port 0: any free port).")
    tls: TlsConfig | None = Field(
        None, description="Serve HTTPS; set require_client_cert and ca_file for mutual TLS as the DMP does."
    )
    known_patients: list[str] | None = Field(
        default_factory=lambda: [p["ins"] for p in DEFAULT_FIXTURES],
        description="Patients that have a DMP: INS matricules, or full patientIds (INS^^^&OID&ISO^NH). "
        "Default: the people the INSi sandbox knows. null: any patient with an accepted INS root.",
    )
    accepted_ins_roots: list[str] = Field(
        default_factory=lambda: sorted(INS_ROOTS), description="INS roots accepted on patientId (DOMAIN.md §1.1)."
    )
    require_vihf: bool = Field(True, description="Refuse requests without a valid signed VIHF assertion.")
    require_signed_lot: bool = Field(
        True,
        description="Refuse a lot without its XAdES signature document (IHE DSG; PDSm4DMP TD2: the LPS "
        "'constitue un lot de soumission XDS et signe ce lot (XAdES)').",
    )
    vihf_signer_cert_file: str | None = Field(
        None, description="PEM certificate the VIHF must be signed with (pinning). Unset: the embedded one."
    )
    repository_unique_id: str = Field(
        "1.2.250.1.213.1.1.9.99.1", description="repositoryUniqueId stamped on stored entries."
    )
    max_documents: int = Field(1000, ge=1, le=1_000_000, description="Documents kept; the oldest go first.")
    max_request_bytes: int = Field(32 * 2**20, ge=65536, description="Largest request body accepted (413 above).")
    mtom_responses: bool = Field(True, description="Answer MTOM requests in MTOM, as Axis2/CXF services do.")
    fail_503_times: int = Field(0, ge=0, description="Answer 503 Service Unavailable to the next N requests.")
    soap_fault_times: int = Field(
        0, ge=0, description="Answer a SOAP Receiver fault (HTTP 500) to the next N requests."
    )
    delay_secs: float = Field(0.0, ge=0, description="Wait this long before answering each request.")
    retry_after_secs: int | None = Field(None, ge=0, description="Retry-After header sent with the 503 answers.")

    @field_validator("repository_unique_id")
    @classmethod
    def _oid(cls, value: str) -> str:
        if not _OID.fullmatch(value):
            raise ValueError("must be an OID")
        return value


class _Faults(ComponentConfig):
    fail_503_times: int | None = Field(None, ge=0, description="See DmpSandboxConfig.")
    soap_fault_times: int | None = Field(None, ge=0, description="See DmpSandboxConfig.")
    delay_secs: float | None = Field(None, ge=0, description="See DmpSandboxConfig.")
    retry_after_secs: int | None = Field(None, ge=0, description="See DmpSandboxConfig.")


@dataclasses.dataclass(slots=True, repr=False)
class StoredDocument:
    """One registered document: its entry (as submitted, status kept current) and its bytes."""

    entry_uuid: str
    unique_id: str
    patient_id: str
    status: str
    hash: str
    size: int
    mime_type: str
    type_code: str
    class_code: str
    confidentiality: list[str]
    submission_set: str
    submitted_at: str
    content: bytes
    entry: etree._Element
    replaces: str | None = None
    replaced_by: str | None = None
    author_ids: tuple[str, ...] = ()
    lot_author: str = ""
    lot_institution: str = ""
    vihf_name_id: str = ""
    vihf_structure: str = ""

    def visible_to_professional(self, name_id: str) -> bool:
        """MASQUE_PS hides a document from professionals other than its authors (TRE_A07)."""
        return "MASQUE_PS" not in self.confidentiality or name_id in self.author_ids

    def visible_to_patient(self) -> bool:
        """INVISIBLE_PATIENT hides a document from the patient's own view (Mon espace santé)."""
        return "INVISIBLE_PATIENT" not in self.confidentiality

    def __repr__(self) -> str:
        return f"StoredDocument({self.entry_uuid}, {self.status.rsplit(':', 1)[-1]})"

    def listing(self) -> dict[str, Any]:
        """JSON view for ``GET documents`` (a sandbox: test patients' ids are shown)."""
        return {
            "entry_uuid": self.entry_uuid,
            "unique_id": self.unique_id,
            "patient_id": self.patient_id,
            "status": self.status.rsplit(":", 1)[-1],
            "hash": self.hash,
            "size": self.size,
            "mime_type": self.mime_type,
            "type_code": self.type_code,
            "class_code": self.class_code,
            "confidentiality": self.confidentiality,
            "submission_set": self.submission_set,
            "submitted_at": self.submitted_at,
            "replaces": self.replaces,
            "replaced_by": self.replaced_by,
            "lot_author": self.lot_author,
            "lot_institution": self.lot_institution,
            "vihf_name_id": self.vihf_name_id,
            "vihf_structure": self.vihf_structure,
        }


class _Fault(Exception):
    """Answer with a SOAP fault instead of a RegistryResponse."""

    def __init__(self, code: str, reason: str, subcode: tuple[str, str] | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.subcode = code, reason, subcode


def _err(code: str, context: str) -> RegistryErrorInfo:
    return RegistryErrorInfo(code=code, context=context)


@register("sandbox", "dmp", config=DmpSandboxConfig)
class DmpSandbox:
    """Fake DMP (XDS.b repository + registry): ITI-41 with DMP metadata rules, ITI-18, fault knobs."""

    def __init__(self, name: str = "dmp", config: DmpSandboxConfig | None = None) -> None:
        self.name = name
        self.config = config or DmpSandboxConfig(listen="127.0.0.1:0")
        self.fail_503_times = self.config.fail_503_times
        self.soap_fault_times = self.config.soap_fault_times
        self.delay_secs = self.config.delay_secs
        self.retry_after_secs = self.config.retry_after_secs
        self.documents: collections.OrderedDict[str, StoredDocument] = collections.OrderedDict()
        self._by_unique_id: dict[str, str] = {}
        self._lots: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.lot_signatures: dict[str, bytes] = {}
        self.requests = 0
        self.answered_503 = 0
        self.last_errors: list[RegistryErrorInfo] = []
        try:
            self._trusted = (
                Path(self.config.vihf_signer_cert_file).read_text() if self.config.vihf_signer_cert_file else None
            )
        except OSError as exc:
            raise ConfigError(f"dmp sandbox: cannot read vihf_signer_cert_file ({type(exc).__name__})") from None
        self._known = self._known_patients(self.config.known_patients)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------------------
    @staticmethod
    def _known_patients(entries: list[str] | None) -> set[tuple[str, str | None]] | None:
        if entries is None:
            return None
        out: set[tuple[str, str | None]] = set()
        for e in entries:
            cx = parse_cx(e) if "^" in e else None
            out.add((cx[0], cx[1]) if cx else (e, None))
        return out

    @property
    def base_url(self) -> str:
        scheme = "https" if self.config.tls else "http"
        host = self.config.listen.rpartition(":")[0] or "127.0.0.1"
        return f"{scheme}://{host}:{self.port}"

    @property
    def repository_url(self) -> str:
        """The ITI-41 endpoint."""
        return self.base_url + "/repository"

    @property
    def registry_url(self) -> str:
        """The ITI-18 endpoint."""
        return self.base_url + "/registry"

    async def start(self) -> None:
        app = web.Application(client_max_size=self.config.max_request_bytes)
        app.router.add_post("/repository", self._soap)
        app.router.add_post("/registry", self._soap)
        self._runner, self.port = await serve_app(app, self.config.listen, self.config.tls)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def describe(self) -> dict[str, Any]:
        return {
            "sandbox": self.name,
            "kind": "dmp",
            "listen": self.config.listen,
            "port": self.port,
            "repository": self.repository_url,
            "registry": self.registry_url,
            "documents": f"/sandboxes/{self.name}/documents",
        }

    def by_unique_id(self, unique_id: str) -> StoredDocument | None:
        """The stored document with this uniqueId, if any."""
        entry = self._by_unique_id.get(unique_id)
        return None if entry is None else self.documents.get(entry)

    # -- hub HTTP routes ----------------------------------------------------------------------------
    def http_routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", "documents", self._list),
            ("GET", "patient-view", self._patient_view),
            ("POST", "faults", self._faults),
        ]

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response([d.listing() for d in self.documents.values()])

    async def _patient_view(self, request: web.Request) -> web.Response:
        """What the patient sees of his DMP (a stand-in for Mon espace santé): ``?patient_id=INS^^^&OID&ISO^NH``."""
        patient = request.query.get("patient_id", "")
        return web.json_response(
            [
                d.listing()
                for d in self.documents.values()
                if d.patient_id == patient and d.status == AVAILABILITY_APPROVED and d.visible_to_patient()
            ]
        )

    def _knobs(self) -> dict[str, Any]:
        return {
            "fail_503_times": self.fail_503_times,
            "soap_fault_times": self.soap_fault_times,
            "delay_secs": self.delay_secs,
            "retry_after_secs": self.retry_after_secs,
        }

    async def _faults(self, request: web.Request) -> web.Response:
        try:
            knobs = _Faults.model_validate(await request.json())
        except (ValueError, ValidationError):
            return web.json_response({"error": "expected a JSON object of known fault knobs"}, status=400)
        for key, value in knobs.model_dump(exclude_unset=True).items():
            setattr(self, key, value)
        return web.json_response(self._knobs())

    # -- SOAP endpoint ------------------------------------------------------------------------------
    async def _soap(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.delay_secs:
            await asyncio.sleep(self.delay_secs)
        if self.fail_503_times > 0:
            self.fail_503_times -= 1
            self.answered_503 += 1
            headers = {"Retry-After": str(self.retry_after_secs)} if self.retry_after_secs is not None else {}
            return web.Response(status=503, text="Service Unavailable", headers=headers)
        body = await request.read()
        media, _ = content_type_params(request.headers.get("Content-Type", "application/octet-stream"))
        mtom = media == "multipart/related"
        if not mtom and media != "application/soap+xml":
            return web.Response(status=415, text="expected application/soap+xml or multipart/related (MTOM)")
        try:
            multipart = decode_related(body, request.headers["Content-Type"]) if mtom else None
            soap = read_envelope(multipart.root.body if multipart else body, max_bytes=self.config.max_request_bytes)
        except (MtomError, SoapError) as exc:
            return self._fault_response(_Fault("Sender", str(exc)), mtom=mtom, relates_to="")
        if self.soap_fault_times > 0:
            self.soap_fault_times -= 1
            return self._fault_response(_Fault("Receiver", "sandbox fault knob"), mtom=mtom, relates_to=soap.message_id)
        try:
            if soap.action == ACTION_PNR:
                result = self._provide_and_register(soap, multipart)
                return self._respond(result, ACTION_PNR_RESPONSE, soap.message_id, mtom)
            if soap.action == ACTION_STORED_QUERY:
                return self._respond(self._stored_query(soap), ACTION_STORED_QUERY_RESPONSE, soap.message_id, mtom)
            raise _Fault("Sender", "unsupported wsa:Action", (WSA, "ActionNotSupported"))
        except _Fault as fault:
            return self._fault_response(fault, mtom=mtom, relates_to=soap.message_id)

    def _respond(self, payload: etree._Element, action: str, relates_to: str, mtom: bool) -> web.Response:
        env = envelope(payload, action=action, relates_to=relates_to)
        xml = etree.tostring(env, xml_declaration=True, encoding="UTF-8")
        if mtom and self.config.mtom_responses:
            data, ctype = encode_related(xml, [], action=action)
            return web.Response(body=data, headers={"Content-Type": ctype})
        return web.Response(
            body=xml, headers={"Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'}
        )

    def _fault_response(self, fault: _Fault, *, mtom: bool, relates_to: str) -> web.Response:
        env = fault_envelope(fault.code, fault.reason, subcode=fault.subcode, relates_to=relates_to)
        xml = etree.tostring(env, xml_declaration=True, encoding="UTF-8")
        # SOAP 1.2 part 2 §7.5.2: Sender faults are HTTP 400, the others 500.
        status = 400 if fault.code == "Sender" else 500
        return web.Response(status=status, body=xml, headers={"Content-Type": "application/soap+xml; charset=UTF-8"})

    # -- VIHF ---------------------------------------------------------------------------------------
    def _vihf(self, soap: SoapMessage) -> tuple[dict[str, list[str]], str] | None:
        """The verified VIHF's attributes and the PEM certificate that signed it (None when not required)."""
        if not self.config.require_vihf:
            return None
        sec = None if soap.header is None else soap.header.find(f"{{{WSSE}}}Security")
        assertion = None if sec is None else sec.find(f"{{{SAML}}}Assertion")
        if assertion is None:
            raise _Fault("Sender", "VIHF assertion missing from wsse:Security", (WSSE, "InvalidSecurity"))
        try:
            signed = verify_assertion(assertion, trusted_cert_pem=self._trusted)
        except VihfError as exc:
            raise _Fault("Sender", str(exc), (WSSE, "FailedCheck")) from None
        attrs = assertion_attributes(signed)
        missing = [a for a in (*REQUIRED_ATTRIBUTES, "Subject/NameID", "Issuer") if not any(attrs.get(a, []))]
        if missing:
            raise _Fault("Sender", "VIHF attributes missing: " + ", ".join(missing), (WSSE, "InvalidSecurity"))
        if attrs["Ressource_URN"][0] != "urn:dmp":
            raise _Fault("Sender", "VIHF Ressource_URN must be urn:dmp", (WSSE, "InvalidSecurity"))
        _check_vihf_values(signed, attrs)
        return attrs, self._trusted or _embedded_pem(assertion)

    # -- ITI-41 -------------------------------------------------------------------------------------
    def _provide_and_register(self, soap: SoapMessage, multipart: Multipart | None) -> etree._Element:
        if soap.body is None or soap.body.tag != q("xdsb", "ProvideAndRegisterDocumentSetRequest"):
            raise _Fault("Sender", "body is not a ProvideAndRegisterDocumentSetRequest")
        vihf = self._vihf(soap)
        attrs = vihf[0] if vihf is not None else None
        check = _Submission(self, read_submission(soap.body), multipart, signer_pem=vihf[1] if vihf else None)
        errors = check.run()
        if attrs is not None and check.lot is not None:
            institutions = [
                xon.split("^")[9] if xon.count("^") >= 9 else ""
                for a in check.lot.codes(SS.AUTHOR)
                for xon in a.slots.get("authorInstitution", [])
            ]
            if institutions and attrs["Identifiant_Structure"][0] not in institutions:
                raise _Fault(
                    "Sender",
                    "VIHF Identifiant_Structure differs from the lot's authorInstitution",
                    (WSSE, "InvalidSecurity"),
                )
            lot_patient = check.lot.identifiers.get(SS.PATIENT_ID, "")
            if attrs.get(RESOURCE_ID, [""])[0] != lot_patient:
                errors.append(
                    _err("XDSPatientIdDoesNotMatch", "VIHF resource-id differs from the submission patientId")
                )
        self.last_errors = errors
        if errors:
            return registry_response("Failure", errors)
        check.commit(attrs)
        return registry_response("Success")

    def _store(self, doc: StoredDocument) -> None:
        self.documents[doc.entry_uuid] = doc
        self._by_unique_id[doc.unique_id] = doc.entry_uuid
        while len(self.documents) > self.config.max_documents:
            _, old = self.documents.popitem(last=False)
            self._by_unique_id.pop(old.unique_id, None)

    def _remember_lot(self, unique_id: str) -> None:
        self._lots[unique_id] = None
        while len(self._lots) > self.config.max_documents:
            old, _ = self._lots.popitem(last=False)
            self.lot_signatures.pop(old, None)

    # -- ITI-18 -------------------------------------------------------------------------------------
    def _stored_query(self, soap: SoapMessage) -> etree._Element:
        if soap.body is None or soap.body.tag != q("query", "AdhocQueryRequest"):
            raise _Fault("Sender", "body is not an AdhocQueryRequest")
        vihf = self._vihf(soap)
        name_id = vihf[0].get("Subject/NameID", [""])[0] if vihf is not None else ""
        query_id, return_type, params = read_find_documents_request(soap.body)
        if query_id != FIND_DOCUMENTS:
            return adhoc_query_response("Failure", errors=[_err("XDSUnknownStoredQuery", "only FindDocuments")])
        patient = params.get("$XDSDocumentEntryPatientId", [])
        statuses = params.get("$XDSDocumentEntryStatus", [])
        if len(patient) != 1 or not statuses:
            missing = "$XDSDocumentEntryPatientId" if len(patient) != 1 else "$XDSDocumentEntryStatus"
            return adhoc_query_response("Failure", errors=[_err("XDSStoredQueryMissingParam", missing)])
        found = [
            d
            for d in self.documents.values()
            if d.patient_id == patient[0] and d.status in statuses and d.visible_to_professional(name_id)
        ]
        if return_type == "ObjectRef":
            objects = [etree.Element(q("rim", "ObjectRef"), id=d.entry_uuid) for d in found]
        else:
            objects = []
            for d in found:
                eo = copy.deepcopy(d.entry)
                eo.set("status", d.status)
                objects.append(eo)
        return adhoc_query_response("Success", objects)


VIHF_VERSIONS = frozenset({"3.0", "4.0"})  # the ANS table says 4.0, both real requests carry 3.0 (DOMAIN.md §5.2)
AUTHENTICATION_MODES = frozenset({"INDIRECTE", "DIRECTE"})
_SECTEUR = re.compile(r"SA[0-9]{2}\^1\.2\.250\.1\.71\.4\.2\.4")


def _check_vihf_values(signed: etree._Element, attrs: dict[str, list[str]]) -> None:
    """Values of the signed VIHF: roles in JDV_J65, known version, mode and sector (SOAP faults)."""

    def fault(reason: str) -> _Fault:
        return _Fault("Sender", reason, (WSSE, "InvalidSecurity"))

    if attrs["VIHF_Version"][0] not in VIHF_VERSIONS:
        raise fault("VIHF_Version unknown")
    if attrs["Authentification_Mode"][0] not in AUTHENTICATION_MODES:
        raise fault("Authentification_Mode unknown")
    if not _SECTEUR.fullmatch(attrs["Secteur_Activite"][0]):
        raise fault("Secteur_Activite must be a TRE_R02 SAnn code ^1.2.250.1.71.4.2.4 (JDV_J61)")
    roles = load_jdv("JDV_J65-SubjectRole-DMP")
    found = [
        (r.get("code", ""), r.get("codeSystem", ""))
        for a in signed.iterfind(f"{{{SAML}}}AttributeStatement/{{{SAML}}}Attribute[@Name='{SUBJECT_ROLE}']")
        for r in a.iter("{urn:hl7-org:v3}Role")
    ]
    if not 1 <= len(found) <= 2:
        raise fault("subject:role: 1 or 2 occurrences expected")
    if any(role not in roles for role in found):
        raise fault("subject:role not in JDV_J65-SubjectRole-DMP")


def _embedded_pem(assertion: etree._Element) -> str:
    """The X509Certificate a (verified) signature carries, as PEM."""
    found = assertion.find(".//{http://www.w3.org/2000/09/xmldsig#}X509Certificate")
    body = "".join((found.text or "").split()) if found is not None else ""
    return "-----BEGIN CERTIFICATE-----\n" + body + "\n-----END CERTIFICATE-----\n"


def _ctx(obj: RegistryObject, what: str) -> str:
    label = "SubmissionSet" if obj.kind == "submission_set" else "DocumentEntry"
    return f"{label} {obj.id or '(no id)'}: {what}"


class _Submission:
    """Validation of one ITI-41 request against the registry state, then its commit."""

    def __init__(
        self, sandbox: DmpSandbox, parsed: ParsedSubmission, multipart: Multipart | None, *, signer_pem: str | None
    ) -> None:
        self.sb = sandbox
        self.p = parsed
        self.signer_pem = signer_pem
        self.multipart = multipart
        self.errors: list[RegistryErrorInfo] = []
        self.lot: RegistryObject | None = None
        self.contents: dict[str, bytes] = {}
        self.replacements: dict[str, str] = {}  # new entry id -> replaced entry uuid
        self.signatures: list[RegistryObject] = []  # entries that "sign" the SubmissionSet

    def err(self, code: str, context: str) -> None:
        self.errors.append(_err(code, context))

    def run(self) -> list[RegistryErrorInfo]:
        p = self.p
        if len(p.submission_sets) != 1:
            self.err("XDSRegistryMetadataError", f"exactly one SubmissionSet expected, found {len(p.submission_sets)}")
        else:
            self.lot = p.submission_sets[0]
            self.submission_set(self.lot)
        for pkg in p.packages:
            if pkg.kind != "submission_set":
                self.err("XDSRegistryMetadataError", f"RegistryPackage {pkg.id}: folders are not accepted by the DMP")
        if not p.entries:
            self.err("XDSRegistryMetadataError", "no DocumentEntry in the submission")
        seen: set[str] = set()
        for entry in p.entries:
            self.document_entry(entry, seen)
        for doc_id in p.unlinked_documents:
            self.err("XDSMissingDocumentMetadata", f"Document {doc_id or '(no id)'} has no DocumentEntry")
        self.associations()
        self.lot_signature()
        return self.errors

    # -- shared checks
    def coded(
        self,
        obj: RegistryObject,
        scheme: str,
        systems: dict[str, frozenset[str]] | frozenset[str],
        *,
        low: int = 1,
        high: int = 1,
    ) -> None:
        name = SCHEME_NAMES[scheme]
        found = obj.codes(scheme)
        if not low <= len(found) <= high:
            self.err("XDSRegistryMetadataError", _ctx(obj, f"{name}: {low}..{high} expected, found {len(found)}"))
            return
        for c in found:
            if not c.code or not c.coding_scheme or not c.display:
                self.err("XDSRegistryMetadataError", _ctx(obj, f"{name}: code, codingScheme and Name are required"))
            elif c.coding_scheme not in systems:
                self.err("XDSRegistryMetadataError", _ctx(obj, f"{name}: code system {c.coding_scheme} not allowed"))
            elif isinstance(systems, dict) and c.code not in systems[c.coding_scheme]:
                self.err("XDSRegistryMetadataError", _ctx(obj, f"{name}: code {c.code} not in the DMP value set"))

    def authors(self, obj: RegistryObject, scheme: str) -> None:
        authors = obj.codes(scheme)
        if not authors:
            self.err("XDSRegistryMetadataError", _ctx(obj, "author is required"))
        for a in authors:
            person = a.slots.get("authorPerson", [])
            if len(person) != 1 or not person[0].strip("^"):
                self.err("XDSRegistryMetadataError", _ctx(obj, "author: exactly one authorPerson is required"))

    def patient_id(self, obj: RegistryObject, scheme: str) -> str:
        value = obj.identifiers.get(scheme, "")
        name = IDENTIFIER_NAMES[scheme]
        if not value:
            self.err("XDSRegistryMetadataError", _ctx(obj, f"{name} is required"))
            return ""
        cx = parse_cx(value)
        # DOMAIN.md §5.1: CX-1, CX-4 (&OID&ISO, empty namespace) and CX-5 = NH are mandatory.
        if cx is None or not cx[0] or cx[2] != "ISO" or cx[3] != "NH" or value.split("^")[3].split("&")[0]:
            self.err("XDSRegistryMetadataError", _ctx(obj, f"{name} must be INS^^^&OID&ISO^NH"))
            return value
        if cx[1] not in self.sb.config.accepted_ins_roots:
            self.err("XDSUnknownPatientId", _ctx(obj, f"{name} is not issued by an accepted INS authority"))
        elif (
            self.sb._known is not None and (cx[0], cx[1]) not in self.sb._known and (cx[0], None) not in self.sb._known
        ):
            self.err("XDSUnknownPatientId", _ctx(obj, f"{name}: patient unknown to the DMP"))
        return value

    def unique_id_format(self, obj: RegistryObject, value: str, name: str, *, allow_extension: bool) -> bool:
        root, sep, ext = value.partition("^")
        # DocumentEntry.uniqueId (ITI TF-3 §4.2.3.2): root OID up to 64 characters, extension up to 16.
        ok = bool(_OID.fullmatch(root)) and len(root) <= 64 and (not sep or (allow_extension and 0 < len(ext) <= 16))
        if not ok:
            form = "an OID[^extension]" if allow_extension else "an OID"
            self.err("XDSRegistryMetadataError", _ctx(obj, f"{name} must be {form}"))
        return ok

    # -- SubmissionSet
    def submission_set(self, lot: RegistryObject) -> None:
        st = lot.slots.get("submissionTime", [])
        if len(st) != 1 or not is_dtm(st[0]):
            self.err("XDSRegistryMetadataError", _ctx(lot, "submissionTime must be one DTM"))
        self.authors(lot, SS.AUTHOR)
        self.coded(lot, SS.CONTENT_TYPE_CODE, CONTENT_TYPE_CODES)
        self.patient_id(lot, SS.PATIENT_ID)
        source = lot.identifiers.get(SS.SOURCE_ID, "")
        if not _OID.fullmatch(source):
            self.err("XDSRegistryMetadataError", _ctx(lot, "XDSSubmissionSet.sourceId must be an OID"))
        unique = lot.identifiers.get(SS.UNIQUE_ID, "")
        valid = self.unique_id_format(lot, unique, "XDSSubmissionSet.uniqueId", allow_extension=False)
        if valid and unique in self.sb._lots:
            self.err("XDSDuplicateUniqueIdInRegistry", _ctx(lot, "XDSSubmissionSet.uniqueId already registered"))

    # -- DocumentEntry
    def document_entry(self, e: RegistryObject, seen: set[str]) -> None:
        if not e.id:
            self.err("XDSRegistryMetadataError", "DocumentEntry without id")
        if e.object_type != DE.OBJECT_TYPE_STABLE:
            self.err("XDSRegistryMetadataError", _ctx(e, "objectType must be the stable DocumentEntry type"))
        if e.mime_type not in MIME_TYPES:
            self.err("XDSRepositoryMetadataError", _ctx(e, "mimeType not accepted by the DMP"))
        self.document_slots(e)
        if not e.title:
            self.err("XDSRegistryMetadataError", _ctx(e, "title (Name) is required"))
        self.authors(e, DE.AUTHOR)
        self.document_codes(e)

        patient = self.patient_id(e, DE.PATIENT_ID)
        if self.lot is not None and patient and patient != self.lot.identifiers.get(SS.PATIENT_ID):
            self.err("XDSPatientIdDoesNotMatch", _ctx(e, "patientId differs from the SubmissionSet patientId"))

        content = self.document_content(e)
        unique = e.identifiers.get(DE.UNIQUE_ID, "")
        if not unique:
            self.err("XDSRegistryMetadataError", _ctx(e, "XDSDocumentEntry.uniqueId is required"))
        elif self.unique_id_format(e, unique, "XDSDocumentEntry.uniqueId", allow_extension=True):
            self.document_unique_id(e, unique, content, seen)

    def document_slots(self, e: RegistryObject) -> None:
        """The DocumentEntry's required slots, once each, and the form of their values."""
        for name in _DOCUMENT_SLOTS:
            if len(e.slots.get(name, [])) != 1 or not e.slot(name):
                self.err("XDSRegistryMetadataError", _ctx(e, f"slot {name} is required once"))
        for name in ("creationTime", "serviceStartTime", "serviceStopTime"):
            if e.slot(name) and not is_dtm(e.slot(name)):
                self.err("XDSRegistryMetadataError", _ctx(e, f"slot {name} is not a DTM"))
        if e.slot("languageCode") and not _LANGUAGE.fullmatch(e.slot("languageCode")):
            self.err("XDSRegistryMetadataError", _ctx(e, "slot languageCode is not a language tag"))
        legal = e.slot("legalAuthenticator").split("^")
        if e.slot("legalAuthenticator") and (not legal[0] or len(legal) < 9 or "&" not in legal[8]):
            self.err("XDSRegistryMetadataError", _ctx(e, "legalAuthenticator must be an XCN with id and authority"))
        if e.slot("sourcePatientId") and parse_cx(e.slot("sourcePatientId")) is None:
            self.err("XDSRegistryMetadataError", _ctx(e, "sourcePatientId must be a CX"))

    def document_codes(self, e: RegistryObject) -> None:
        """The DocumentEntry's classifications, each from its DMP value set, and classCode from ASS_X04."""
        self.coded(e, DE.CLASS_CODE, CLASS_CODES)
        self.coded(e, DE.TYPE_CODE, TYPE_CODES)
        self.type_class(e)
        self.coded(e, DE.FORMAT_CODE, FORMAT_CODES)
        self.coded(e, DE.HEALTHCARE_FACILITY_TYPE_CODE, FACILITY_TYPE_CODES)
        self.coded(e, DE.PRACTICE_SETTING_CODE, PRACTICE_SETTING_CODES)
        self.coded(e, DE.CONFIDENTIALITY_CODE, CONFIDENTIALITY_CODES, high=4)
        levels = [c for c in e.codes(DE.CONFIDENTIALITY_CODE) if c.coding_scheme == "2.16.840.1.113883.5.25"]
        if len(levels) != 1:
            self.err("XDSRegistryMetadataError", _ctx(e, "confidentialityCode: exactly one of N, R, V is required"))

    def type_class(self, e: RegistryObject) -> None:
        """The classCode is the one ASS_X04 gives the typeCode (when the shipped table has a row for it)."""
        typ, cls = e.code(DE.TYPE_CODE), e.code(DE.CLASS_CODE)
        if typ is None or cls is None:
            return
        expected = TYPE_CLASS.target(typ.code, typ.coding_scheme)
        if expected is not None and expected != (cls.code, cls.coding_scheme):
            self.err(
                "XDSRegistryMetadataError",
                _ctx(e, f"classCode: {cls.code} is not the class of typeCode {typ.code} (ASS_X04 gives {expected[0]})"),
            )

    def document_unique_id(self, e: RegistryObject, unique: str, content: bytes | None, seen: set[str]) -> None:
        """A well-formed uniqueId not used twice in the request nor already registered (or with other content)."""
        if unique in seen:
            self.err("XDSRegistryDuplicateUniqueIdInMessage", _ctx(e, "uniqueId used twice in this request"))
        seen.add(unique)
        existing = self.sb.by_unique_id(unique)
        if existing is not None and content is not None:
            # ITI TF-3 Table 4.2.4.1-2: a known uniqueId with other content is NonIdentical*, else a duplicate.
            if existing.hash != hashlib.sha1(content).hexdigest():
                self.err("XDSNonIdenticalHash", _ctx(e, "uniqueId already registered with another hash"))
            elif existing.size != len(content):
                self.err("XDSNonIdenticalSize", _ctx(e, "uniqueId already registered with another size"))
            else:
                self.err("XDSDuplicateUniqueIdInRegistry", _ctx(e, "uniqueId already registered"))
        elif existing is not None:
            self.err("XDSDuplicateUniqueIdInRegistry", _ctx(e, "uniqueId already registered"))
        elif _UUID_ID.fullmatch(e.id) and e.id in self.sb.documents:
            self.err("XDSRegistryMetadataError", _ctx(e, "entryUUID already in the registry"))

    def document_content(self, e: RegistryObject) -> bytes | None:
        doc = self.p.documents.get(e.id)
        if doc is None:
            self.err("XDSMissingDocument", _ctx(e, "no Document attached for this entry"))
            return None
        try:
            content = element_bytes(doc, self.multipart)
        except MtomError as exc:
            code = "XDSMissingDocument" if "missing MIME part" in str(exc) else "XDSRepositoryMetadataError"
            self.err(code, _ctx(e, str(exc)))
            return None
        # ITI TF-2b §3.41.4.1.3: hash and size, when sent, must be those of the received document.
        digest = hashlib.sha1(content).hexdigest()
        if e.slot("hash") and e.slot("hash").lower() != digest:
            self.err("XDSRepositoryMetadataError", _ctx(e, "hash does not match the attached document"))
        if e.slot("size") and e.slot("size") != str(len(content)):
            self.err("XDSRepositoryMetadataError", _ctx(e, "size does not match the attached document"))
        self.contents[e.id] = content
        return content

    # -- Associations
    def associations(self) -> None:
        entries = {e.id: e for e in self.p.entries}
        lot_id = self.lot.id if self.lot is not None else None
        members: set[str] = set()
        targets: set[str] = set()
        for a in self.p.associations:
            where = f"Association {a.id or '(no id)'}"
            if a.type == HAS_MEMBER:
                if a.source != lot_id or a.target not in entries:
                    self.err("XDSRegistryMetadataError", f"{where}: HasMember must link the SubmissionSet to an entry")
                elif a.slots.get("SubmissionSetStatus") != ["Original"]:
                    self.err("XDSRegistryMetadataError", f"{where}: SubmissionSetStatus must be Original")
                else:
                    members.add(a.target)
            elif a.type == RPLC:
                self.replacement(where, a.source, a.target, entries, targets)
            elif a.type == SIGNS:
                if a.source not in entries or a.target != lot_id:
                    self.err("XDSRegistryMetadataError", f"{where}: signs must link a signature to the SubmissionSet")
                else:
                    self.signatures.append(entries[a.source])
            else:
                self.err("XDSRegistryMetadataError", f"{where}: association type not accepted by the DMP")
        for entry_id in entries:
            if entry_id not in members:
                self.err("XDSRegistryMetadataError", f"DocumentEntry {entry_id}: no HasMember from the SubmissionSet")

    def replacement(
        self, where: str, source: str, target: str, entries: dict[str, RegistryObject], targets: set[str]
    ) -> None:
        if source not in entries:
            self.err("XDSRegistryMetadataError", f"{where}: RPLC source must be an entry of this submission")
            return
        previous = self.sb.documents.get(target)
        if previous is None:
            self.err("XDSRegistryMetadataError", f"{where}: RPLC target is not in the registry")
            return
        if target in targets:
            self.err("XDSRegistryMetadataError", f"{where}: the same entry is replaced twice")
            return
        targets.add(target)
        if previous.status != AVAILABILITY_APPROVED:
            self.err("XDSRegistryDeprecatedDocumentError", f"{where}: RPLC target is already deprecated")
        if previous.patient_id != entries[source].identifiers.get(DE.PATIENT_ID):
            self.err("XDSPatientIdDoesNotMatch", f"{where}: RPLC target belongs to another patient")
        self.replacements[source] = target

    # -- the lot's XAdES signature (IHE DSG; DOMAIN.md §5.1)
    def lot_signature(self) -> None:
        signature_class = "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1"
        declared = [e for e in self.p.entries if (c := e.code(DE.CLASS_CODE)) is not None and c.code == signature_class]
        if not self.sb.config.require_signed_lot and not declared:
            return
        if len(self.signatures) != 1 or len(declared) != 1 or self.signatures[0] is not declared[0]:
            self.err(
                "XDSRegistryMetadataError",
                "SubmissionSet: exactly one signature document (classCode Digital Signature) with a signs "
                "association is required",
            )
            return
        sig = self.signatures[0]
        typ, fmt = sig.code(DE.TYPE_CODE), sig.code(DE.FORMAT_CODE)
        if typ is None or (typ.code, typ.coding_scheme) != ("E1762", "ASTM"):
            self.err("XDSRegistryMetadataError", _ctx(sig, "signature typeCode must be E1762 (ASTM)"))
        if fmt is None or (fmt.code, fmt.coding_scheme) != ("http://www.w3.org/2000/09/xmldsig#", "URN"):
            self.err("XDSRegistryMetadataError", _ctx(sig, "signature formatCode must be xmldsig# (URN)"))
        content = self.contents.get(sig.id)
        if content is None:
            return  # already reported as a missing document
        documents = {
            e.identifiers.get(DE.UNIQUE_ID, ""): self.contents[e.id]
            for e in self.p.entries
            if e is not sig and e.id in self.contents
        }
        try:
            # The lot is signed with the structure's certificate, the one that signed the VIHF.
            verify_lot_signature(content, documents, trusted_cert_pem=self.signer_pem)
        except LotSignatureError as exc:
            code = "XDSRepositoryMetadataError" if "digest differs" in str(exc) else "XDSRegistryMetadataError"
            self.err(code, _ctx(sig, f"lot signature: {exc}"))

    def is_signature(self, e: RegistryObject) -> bool:
        return any(e is s for s in self.signatures)

    # -- commit (only when no error)
    def commit(self, vihf: dict[str, list[str]] | None) -> None:
        assert self.lot is not None
        lot_author = next(iter(self.lot.codes(SS.AUTHOR)), None)
        who = {
            "lot_author": lot_author.slots.get("authorPerson", [""])[0] if lot_author else "",
            "lot_institution": (lot_author.slots.get("authorInstitution") or [""])[0] if lot_author else "",
            "vihf_name_id": (vihf or {}).get("Subject/NameID", [""])[0],
            "vihf_structure": (vihf or {}).get("Identifiant_Structure", [""])[0],
        }
        now = utcnow().isoformat()
        lot_unique = self.lot.identifiers.get(SS.UNIQUE_ID, "")
        ids = {e.id: e.id if _UUID_ID.fullmatch(e.id) else f"urn:uuid:{uuid.uuid4()}" for e in self.p.entries}
        for e in self.p.entries:
            content = self.contents[e.id]
            if self.is_signature(e):
                self.sb.lot_signatures[lot_unique] = content  # kept beside the lot, not listed as a document
                continue
            entry = copy.deepcopy(e.element)
            entry.set("id", ids[e.id])
            entry.set("status", AVAILABILITY_APPROVED)
            self._stamp(entry, content)
            cls = e.code(DE.CLASS_CODE)
            typ = e.code(DE.TYPE_CODE)
            doc = StoredDocument(
                entry_uuid=ids[e.id],
                unique_id=e.identifiers.get(DE.UNIQUE_ID, ""),
                patient_id=e.identifiers.get(DE.PATIENT_ID, ""),
                status=AVAILABILITY_APPROVED,
                hash=hashlib.sha1(content).hexdigest(),
                size=len(content),
                mime_type=e.mime_type,
                type_code=typ.code if typ else "",
                class_code=cls.code if cls else "",
                confidentiality=[c.code for c in e.codes(DE.CONFIDENTIALITY_CODE)],
                author_ids=tuple(a.slots.get("authorPerson", [""])[0].split("^", 1)[0] for a in e.codes(DE.AUTHOR)),
                submission_set=lot_unique,
                submitted_at=now,
                content=content,
                entry=entry,
                **who,
            )
            target = self.replacements.get(e.id)
            if target is not None:
                previous = self.sb.documents[target]
                previous.status = AVAILABILITY_DEPRECATED  # ITI TF-3 §4.2.2.2: RPLC deprecates the target
                previous.entry.set("status", AVAILABILITY_DEPRECATED)
                previous.replaced_by = doc.entry_uuid
                doc.replaces = target
            self.sb._store(doc)
        self.sb._remember_lot(lot_unique)

    def _stamp(self, entry: etree._Element, content: bytes) -> None:
        """What the repository adds before registering (ITI TF-2b §3.41.4.1.3): repositoryUniqueId, hash, size."""
        present = {s.get("name") for s in entry.findall(q("rim", "Slot"))}
        values = {
            "repositoryUniqueId": self.sb.config.repository_unique_id,
            "hash": hashlib.sha1(content).hexdigest(),
            "size": str(len(content)),
        }
        anchor = 0
        for name, value in values.items():
            if name in present:
                continue
            slot = etree.Element(q("rim", "Slot"), name=name)
            etree.SubElement(etree.SubElement(slot, q("rim", "ValueList")), q("rim", "Value")).text = value
            entry.insert(anchor, slot)  # slots come first in a RegistryObject
            anchor += 1
