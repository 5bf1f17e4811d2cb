"""Validate a FHIR R4 resource the way the hub relies on it: structure, a few bindings, FR Core INS rules.

Three layers, each giving :class:`mappings.fhir.common.Issue` values (never a
value from the resource, so they can be returned to the sender, stored and
logged):

1. **Structure** with fhir.resources' R4B models (DOMAIN.md §4.3: the 8.x
   default classes are R5; R4B accepts R4 content for the resources the
   hub carries). Unknown elements, wrong JSON types, malformed dates,
   missing required elements: severity error, code ``structure`` /
   ``required`` / ``value``.
2. **Required bindings** fhir.resources does not enforce (it checks codes
   for syntax only) on the elements routing depends on, **Bundle rules**
   (bdl-3 request in transaction/batch, bdl-7 unique fullUrl, bdl-9
   document identifier, first entry Composition/MessageHeader), and, with
   ``check_attachments``, the DocumentReference/Binary content the hub
   forwards (declared content type, base64, a PDF that is one, a CDA that
   parses with the safe XML reader).
3. **FR Core INS rules** on every Patient (DOMAIN.md §4.1-§4.2, FR Core
   ``fr-core-patient-ins``), applied when an INS is carried or a reliability
   extension is present:

   - an INS-typed identifier has its slice's system (``urn:oid:`` + .8/.9/.10/.11),
     ``use`` (official or old; temp or old for the NIA) and a 15-character value
     (a wrong key is a *warning*: official samples carry wrong keys, §9.6);
   - an identifier on an INS system says what it is (INS type, or NH for the
     billing NIR sharing .8);
   - the INS travels only with a qualified identity (RNIV [EXI SI 08]):
     ``identityStatus`` QUAL (FR Core >= 2.2) or VALI (FR Core 2.1, table 0445);
   - ``identityStatus`` is present once, from a known system, with a code of it;
     DOUT/FICT only with PROV (RNIV §3.2.3);
   - with an INS: gender (male/female/unknown), birthDate, the official name with
     one given name and ``birth-list-given-name``, birthPlace with its INSEE
     code from TRE_R13;
   - in production, the test (.10) and demonstration (.11) roots are refused (§9.1).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from hub.environments import HubEnvironment
from hub.errors import MessageError
from hub.identity import (
    FR_CORE_IDENTITY_STATUS_SYSTEM,
    FR_CORE_STATUS_COMMENT_SYSTEM,
    FR_CORE_V2_0445_SYSTEM,
    INS_AUTHORITIES,
    INS_NIR_DEMO_OID,
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    TABLE_0445_CODES,
    InsProblem,
    check_nir,
)
from mappings.fhir.common import FR_CORE_V2_0203_SYSTEM, Issue, iter_resources
from mappings.fhir.identifiers import active_ins, is_ins_identifier, type_codes

__all__ = [
    "BIRTH_LIST_GIVEN_NAME_URL",
    "BIRTH_PLACE_URL",
    "IDENTITY_RELIABILITY_URL",
    "INSEE_CODE_SYSTEM",
    "INSEE_CODE_URL",
    "model_class",
    "validate_fhir",
    "validate_structure",
]

IDENTITY_RELIABILITY_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
BIRTH_LIST_GIVEN_NAME_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name"
BIRTH_PLACE_URL = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
INSEE_CODE_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
INSEE_CODE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"

_FR_CORE_STATUS_CODES = frozenset({"PROV", "RECUP", "VALI", "QUAL"})

# Required bindings of FHIR R4 on the elements the hub routes or maps on (fhir.resources checks only syntax).
_BINDINGS: dict[tuple[str, str], frozenset[str]] = {
    ("Bundle", "type"): frozenset(
        [
            "document",
            "message",
            "transaction",
            "transaction-response",
            "batch",
            "batch-response",
            "history",
            "searchset",
            "collection",
        ]
    ),
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("DocumentReference", "status"): frozenset({"current", "superseded", "entered-in-error"}),
    ("DocumentReference", "docStatus"): frozenset({"preliminary", "final", "amended", "entered-in-error"}),
    ("Observation", "status"): frozenset(
        ["registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"]
    ),
    ("DiagnosticReport", "status"): frozenset(
        [
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        ]
    ),
    ("Encounter", "status"): frozenset(
        [
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        ]
    ),
    ("List", "status"): frozenset({"current", "retired", "entered-in-error"}),
    ("List", "mode"): frozenset({"working", "snapshot", "changes"}),
    ("Specimen", "status"): frozenset({"available", "unavailable", "unsatisfactory", "entered-in-error"}),
}
_HTTP_VERBS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})
_IDENTIFIER_USES = frozenset({"usual", "official", "temp", "secondary", "old"})
_INS_USES = {"INS-NIA": frozenset({"temp", "old"})}
_DEFAULT_INS_USES = frozenset({"official", "old"})
_INS_SYSTEMS = {a.fhir_system: a for a in INS_AUTHORITIES.values()}
_INS_TYPES = {a.fhir_type: a for a in INS_AUTHORITIES.values()}
_TEST_ROOTS = frozenset({INS_NIR_TEST_OID, INS_NIR_DEMO_OID})
_BASE64 = re.compile(rb"[A-Za-z0-9+/\s]*={0,2}\s*")

_class_cache: dict[str, Any] = {}


def model_class(resource_type: str) -> Any | None:
    """The fhir.resources R4B model of ``resource_type``, or None when R4B has no such resource."""
    if not resource_type or not resource_type[:1].isupper() or not resource_type.isalpha():
        return None
    if resource_type not in _class_cache:
        from fhir.resources.R4B import get_fhir_model_class

        try:
            _class_cache[resource_type] = get_fhir_model_class(resource_type)
        except (KeyError, ValueError, AttributeError, ImportError):
            _class_cache[resource_type] = None
    return _class_cache[resource_type]


def _fhirpath(base: str, loc: Iterable[Any]) -> str:
    out = base
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("resource_type",):
            out += ".resourceType"
        elif isinstance(part, str) and part:
            out += "." + (part[: -len("__ext")] if part.endswith("__ext") else part)
    return out


def _pydantic_issue(base: str, err: dict[str, Any]) -> Issue:
    kind = str(err.get("type", ""))
    where = _fhirpath(base, err.get("loc", ()))
    # Pydantic's own messages quote the input (a birth date, a name): never pass them on.
    if kind.endswith("missing"):
        return Issue("error", "required", where, "required element is missing")
    if kind == "extra_forbidden":
        return Issue("error", "structure", where, "unknown element for this resource type")
    if kind.endswith("_type") or kind in ("model_type", "list_type", "dict_type", "model_attributes_type"):
        return Issue("error", "structure", where, "wrong JSON type for this element")
    if "wrong-resource-type" in kind:
        return Issue("error", "structure", where, "resourceType does not match the expected resource")
    if kind == "value_error" and not err.get("loc"):
        return Issue("error", "invariant", where, "only one of the choice elements [x] may be present")
    return Issue("error", "value", where, "value does not match its FHIR data type")


def validate_structure(doc: dict[str, Any], path: str | None = None) -> list[Issue]:
    """Layer 1: resource types are known everywhere, then the R4B model validates the whole resource."""
    issues: list[Issue] = []
    base = path or str(doc.get("resourceType") or "Resource")
    for where, resource in iter_resources(doc, base):
        kind = resource.get("resourceType")
        if not isinstance(kind, str) or not kind:
            issues.append(Issue("error", "required", f"{where}.resourceType", "resource without resourceType"))
        elif model_class(kind) is None:
            issues.append(Issue("error", "not-supported", f"{where}.resourceType", "unknown FHIR R4 resource type"))
    if issues:
        return issues
    cls = model_class(str(doc["resourceType"]))
    try:
        cls.model_validate(doc)  # type: ignore[union-attr]
    except PydanticValidationError as exc:
        seen: set[tuple[str, str]] = set()
        for err in exc.errors():
            issue = _pydantic_issue(base, dict(err))
            if (issue.expression, issue.code) not in seen:
                seen.add((issue.expression, issue.code))
                issues.append(issue)
    except (ValueError, TypeError, KeyError, RecursionError):
        issues.append(Issue("error", "structure", base, "resource could not be read as FHIR R4"))
    return issues


def _check_bindings(where: str, resource: dict[str, Any], issues: list[Issue]) -> None:
    kind = str(resource.get("resourceType"))
    for (rtype, element), codes in _BINDINGS.items():
        if rtype == kind and element in resource and resource[element] not in codes:
            issues.append(Issue("error", "code-invalid", f"{where}.{element}", "code outside the required value set"))


def _check_bundle(where: str, bundle: dict[str, Any], issues: list[Issue]) -> None:
    kind = bundle.get("type")
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    full_urls: set[str] = set()
    for i, entry in enumerate(entries):
        at = f"{where}.entry[{i}]"
        url = entry.get("fullUrl")
        if isinstance(url, str) and url:
            # bdl-7: fullUrl must be unique in a bundle (ignoring versions).
            if url in full_urls:
                issues.append(Issue("error", "invariant", f"{at}.fullUrl", "fullUrl used twice in the Bundle (bdl-7)"))
            full_urls.add(url)
        request = entry.get("request")
        if kind in ("transaction", "batch"):
            if not isinstance(request, dict):
                issues.append(
                    Issue("error", "required", f"{at}.request", "transaction/batch entry without request (bdl-3)")
                )
            else:
                if request.get("method") not in _HTTP_VERBS:
                    issues.append(Issue("error", "code-invalid", f"{at}.request.method", "not an HTTP verb"))
                if not request.get("url"):
                    issues.append(Issue("error", "required", f"{at}.request.url", "request without url"))
                if request.get("method") in ("POST", "PUT") and not isinstance(entry.get("resource"), dict):
                    issues.append(Issue("error", "required", f"{at}.resource", "POST/PUT entry without resource"))
        elif request is not None and kind not in ("history",):
            # bdl-3: entry.request only in batch, transaction or history bundles.
            issues.append(Issue("error", "invariant", f"{at}.request", "request only in transaction/batch (bdl-3)"))
    first = entries[0].get("resource") if entries else None
    first_type = first.get("resourceType") if isinstance(first, dict) else None
    if kind == "document":
        ident = bundle.get("identifier")
        if not isinstance(ident, dict) or not ident.get("system") or not ident.get("value"):
            issues.append(Issue("error", "invariant", f"{where}.identifier", "a document needs identifier (bdl-9)"))
        if first_type != "Composition":
            issues.append(Issue("error", "invariant", f"{where}.entry[0]", "a document starts with a Composition"))
    if kind == "message" and first_type != "MessageHeader":
        issues.append(Issue("error", "invariant", f"{where}.entry[0]", "a message starts with a MessageHeader"))


def _attachment_issues(at: str, attachment: Any, content_types: frozenset[str] | None) -> list[Issue]:
    if not isinstance(attachment, dict):
        return [Issue("error", "required", at, "content without attachment")]
    issues: list[Issue] = []
    ctype = str(attachment.get("contentType") or "").split(";")[0].strip().lower()
    if not ctype:
        issues.append(Issue("error", "required", f"{at}.contentType", "attachment without contentType"))
    elif content_types is not None and ctype not in content_types:
        issues.append(Issue("error", "not-supported", f"{at}.contentType", "attachment content type not accepted"))
    data = attachment.get("data")
    if data is None:
        if not attachment.get("url"):
            issues.append(Issue("error", "required", f"{at}.data", "attachment with neither data nor url"))
        return issues
    raw = _b64(data)
    if raw is None:
        return [*issues, Issue("error", "value", f"{at}.data", "attachment data is not base64")]
    issues += _content_issues(f"{at}.data", ctype, raw)
    return issues


def _b64(data: Any) -> bytes | None:
    if not isinstance(data, str) or not _BASE64.fullmatch(data.encode("ascii", "replace")):
        return None
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None


def _content_issues(at: str, ctype: str, raw: bytes) -> list[Issue]:
    if ctype == "application/pdf" and raw.lstrip()[:5] != b"%PDF-":
        return [Issue("error", "value", at, "content declared PDF is not a PDF")]
    if ctype in ("text/xml", "application/xml", "application/hl7-v3+xml", "application/cda+xml"):
        from mappings.cda.header import read_cda_header

        try:
            read_cda_header(raw)
        except MessageError:
            return [Issue("error", "value", at, "XML content is not a readable CDA R2 document")]
    return []


def _check_documents(
    where: str, resource: dict[str, Any], issues: list[Issue], content_types: frozenset[str] | None
) -> None:
    kind = resource.get("resourceType")
    if kind == "DocumentReference":
        for i, content in enumerate(resource.get("content") or []):
            attachment = content.get("attachment") if isinstance(content, dict) else None
            issues += _attachment_issues(f"{where}.content[{i}].attachment", attachment, content_types)
    elif kind == "Binary" and content_types is not None:
        ctype = str(resource.get("contentType") or "").split(";")[0].strip().lower()
        raw = _b64(resource.get("data")) if resource.get("data") is not None else b""
        if raw is None:
            issues.append(Issue("error", "value", f"{where}.data", "Binary data is not base64"))
        elif raw:
            issues += _content_issues(f"{where}.data", ctype, raw)


# --------------------------------------------------------------------------------------- FR Core


def _reliability(patient: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [
        (i, e)
        for i, e in enumerate(patient.get("extension") or [])
        if isinstance(e, dict) and e.get("url") == IDENTITY_RELIABILITY_URL
    ]


def _check_reliability(where: str, patient: dict[str, Any], issues: list[Issue]) -> tuple[str, str] | None:
    """Check the reliability extension; return (system, code) of identityStatus when readable."""
    found = _reliability(patient)
    if len(found) > 1:
        issues.append(Issue("error", "invariant", f"{where}.extension", "identity reliability given more than once"))
    if not found:
        return None
    index, ext = found[0]
    at = f"{where}.extension[{index}]"
    subs = [s for s in ext.get("extension") or [] if isinstance(s, dict)]
    statuses = [(j, s) for j, s in enumerate(subs) if s.get("url") == "identityStatus"]
    if len(statuses) != 1:
        issues.append(Issue("error", "required", f"{at}.extension", "identity reliability needs one identityStatus"))
        return None
    j, sub = statuses[0]
    coding = sub.get("valueCoding")
    sat = f"{at}.extension[{j}].valueCoding"
    if not isinstance(coding, dict):
        issues.append(Issue("error", "required", sat, "identityStatus needs a valueCoding"))
        return None
    system, code = coding.get("system"), coding.get("code")
    if system == FR_CORE_IDENTITY_STATUS_SYSTEM:
        known = code in _FR_CORE_STATUS_CODES
    elif system == FR_CORE_V2_0445_SYSTEM:
        known = code in TABLE_0445_CODES
    else:
        issues.append(Issue("error", "code-invalid", f"{sat}.system", "identityStatus system is not an FR Core one"))
        return None
    if not known:
        issues.append(Issue("error", "code-invalid", f"{sat}.code", "identityStatus code unknown in its system"))
        return None
    comments = set()
    for k, s in enumerate(subs):
        if s.get("url") != "comment":
            continue
        concept = s.get("valueCodeableConcept")
        for c in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(c, dict) and c.get("system") == FR_CORE_STATUS_COMMENT_SYSTEM:
                comments.add(c.get("code"))
        if not isinstance(concept, dict):
            issues.append(Issue("error", "structure", f"{at}.extension[{k}]", "comment needs a CodeableConcept"))
    if comments & {"DOUT", "FICT"} and code != "PROV":
        issues.append(Issue("error", "business-rule", sat, "DOUT or FICT only with a provisional identity (RNIV)"))
    if {"DOUT", "FICT"} <= comments:
        issues.append(Issue("error", "business-rule", f"{at}.extension", "FICT and DOUT cannot be combined (RNIV)"))
    return str(system), str(code)


def _untyped_ins_system_issue(at: str, system: str, codes: set[tuple[str | None, str | None]]) -> Issue:
    """The issue of an identifier on an INS system that is not typed INS (nor NH)."""
    if system == f"urn:oid:{INS_NIR_OID}":
        return Issue("error", "required", f"{at}.type", "identifier on the NIR system must be typed INS or NH")
    if not codes:
        return Issue("warning", "required", f"{at}.type", "INS identifier without its FR Core type")
    return Issue("error", "invalid", f"{at}.type", "identifier on an INS system with another type")


def _ins_value_issues(at: str, value: str) -> list[Issue]:
    """The issues of an INS value: its shape (15 characters) and its key."""
    problem = check_nir(value).problem
    if problem in (InsProblem.LENGTH, InsProblem.CHARACTERS):
        return [Issue("error", "value", f"{at}.value", "an INS is 15 characters: 13 digits and a 2-digit key")]
    if problem is InsProblem.KEY:
        return [Issue("warning", "value", f"{at}.value", "the INS key does not match its first 13 characters")]
    return []


def _check_ins_identifiers(where: str, patient: dict[str, Any], environment: str, issues: list[Issue]) -> int:
    """Slice rules on every identifier; return how many INS identifiers are in force."""
    active = 0
    for i, ident in enumerate(patient.get("identifier") or []):
        if not isinstance(ident, dict):
            continue
        at = f"{where}.identifier[{i}]"
        system = ident.get("system")
        codes = type_codes(ident)
        ins_types = [code for s, code in codes if s == FR_CORE_V2_0203_SYSTEM and code in _INS_TYPES]
        if ident.get("use") is not None and ident.get("use") not in _IDENTIFIER_USES:
            issues.append(Issue("error", "code-invalid", f"{at}.use", "identifier use outside the value set"))
        if not ins_types:
            if system in _INS_SYSTEMS and not any(code == "NH" for _, code in codes):
                issues.append(_untyped_ins_system_issue(at, str(system), codes))
            if not is_ins_identifier(ident):
                continue
        authority = _INS_TYPES[ins_types[0]] if ins_types else _INS_SYSTEMS[str(system)]
        if system != authority.fhir_system:
            issues.append(Issue("error", "invalid", f"{at}.system", "INS identifier system does not match its type"))
        uses = _INS_USES.get(authority.fhir_type, _DEFAULT_INS_USES)
        if ident.get("use") not in uses:
            issues.append(Issue("error", "code-invalid", f"{at}.use", "INS identifier use not allowed for its slice"))
        value = ident.get("value")
        if not isinstance(value, str) or not value:
            issues.append(Issue("error", "required", f"{at}.value", "INS identifier without value"))
            continue
        issues.extend(_ins_value_issues(at, value))
        if environment == HubEnvironment.PRODUCTION and authority.oid in _TEST_ROOTS:
            issues.append(Issue("error", "business-rule", f"{at}.system", "test or demonstration INS in production"))
        if ident.get("use") != "old":
            active += 1
    return active


def _check_ins_traits(where: str, patient: dict[str, Any], issues: list[Issue]) -> None:
    if patient.get("gender") not in ("male", "female", "unknown"):
        issues.append(Issue("error", "required", f"{where}.gender", "with an INS, gender is male, female or unknown"))
    if not patient.get("birthDate"):
        issues.append(Issue("error", "required", f"{where}.birthDate", "with an INS, birthDate is required"))
    names = [
        (i, n) for i, n in enumerate(patient.get("name") or []) if isinstance(n, dict) and n.get("use") == "official"
    ]
    if len(names) != 1:
        issues.append(Issue("error", "required", f"{where}.name", "with an INS, exactly one official name"))
    else:
        i, name = names[0]
        if not name.get("family"):
            issues.append(Issue("error", "required", f"{where}.name[{i}].family", "official name without family"))
        if len(name.get("given") or []) != 1:
            issues.append(Issue("error", "invariant", f"{where}.name[{i}].given", "official name has one given name"))
        lists = [
            e for e in name.get("extension") or [] if isinstance(e, dict) and e.get("url") == BIRTH_LIST_GIVEN_NAME_URL
        ]
        if len(lists) != 1 or not lists[0].get("valueString"):
            issues.append(
                Issue("error", "required", f"{where}.name[{i}].extension", "official name needs birth-list-given-name")
            )
    places = [
        (i, e)
        for i, e in enumerate(patient.get("extension") or [])
        if isinstance(e, dict) and e.get("url") == BIRTH_PLACE_URL
    ]
    if len(places) != 1:
        issues.append(Issue("error", "required", f"{where}.extension", "with an INS, one birthPlace extension"))
        return
    i, place = places[0]
    address = place.get("valueAddress")
    codes = [
        e
        for e in (address.get("extension") or [] if isinstance(address, dict) else [])
        if isinstance(e, dict) and e.get("url") == INSEE_CODE_URL
    ]
    coding = codes[0].get("valueCoding") if len(codes) == 1 else None
    if not isinstance(coding, dict) or coding.get("system") != INSEE_CODE_SYSTEM or not coding.get("code"):
        issues.append(
            Issue(
                "error", "required", f"{where}.extension[{i}].valueAddress", "birthPlace needs its TRE_R13 INSEE code"
            )
        )


def _check_patient(where: str, patient: dict[str, Any], environment: str, issues: list[Issue]) -> None:
    active = _check_ins_identifiers(where, patient, environment, issues)
    status = _check_reliability(where, patient, issues)
    if active and status is None and not _reliability(patient):
        issues.append(
            Issue("error", "required", f"{where}.extension", "an INS needs the fr-core-identity-reliability extension")
        )
    if active and status is not None:
        qualified = status in ((FR_CORE_IDENTITY_STATUS_SYSTEM, "QUAL"), (FR_CORE_V2_0445_SYSTEM, "VALI"))
        if not qualified:
            issues.append(
                Issue("error", "business-rule", f"{where}.identifier", "an INS is sent only with a qualified identity")
            )
    if status == (FR_CORE_IDENTITY_STATUS_SYSTEM, "QUAL") and active_ins(patient) is None:
        issues.append(Issue("error", "invariant", f"{where}.identifier", "a qualified identity carries its INS"))
    if active:
        _check_ins_traits(where, patient, issues)


def validate_fhir(
    doc: dict[str, Any],
    *,
    environment: str = "development",
    check_attachments: bool = False,
    attachment_content_types: Iterable[str] | None = None,
    structure: bool = True,
) -> list[Issue]:
    """Every issue of ``doc`` (errors and warnings), structure first; see the module docstring.

    ``environment`` ``production`` refuses the test and demonstration INS
    roots. ``check_attachments`` checks DocumentReference and Binary content
    (base64, PDF magic, CDA readable), restricted to
    ``attachment_content_types`` when given. ``structure=False`` skips layer 1
    for a caller that ran `validate_structure` itself.
    """
    issues = validate_structure(doc) if structure else []
    if any(i.is_error and i.expression.endswith("resourceType") for i in issues):
        return issues
    allowed = frozenset(c.lower() for c in attachment_content_types) if attachment_content_types is not None else None
    for where, resource in iter_resources(doc):
        _check_bindings(where, resource, issues)
        kind = resource.get("resourceType")
        if kind == "Bundle":
            _check_bundle(where, resource, issues)
        elif kind == "Patient":
            _check_patient(where, resource, environment, issues)
        if check_attachments:
            _check_documents(where, resource, issues, allowed)
    return issues
