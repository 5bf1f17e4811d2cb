"""RegistryResponse and stored queries: read and write the registry side of XDS.b.

* :func:`read_registry_response` / :func:`registry_response` — the answer to
  ITI-41/42 and the status part of an ITI-18 answer (ITI TF-3 §4.2.4: status
  Success / Failure / PartialSuccess, RegistryErrorList of RegistryError
  with errorCode, codeContext, severity, location).
* :func:`find_documents_request` / :func:`read_find_documents_request` /
  :func:`adhoc_query_response` — ITI-18 FindDocuments (ITI TF-2a §3.18.4.1.2.3.7.1).
* :func:`redact_context` — a codeContext reduced to what may go into an
  exception text: registries write free text there, sometimes quoting
  identifiers.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from lxml import etree

from mappings.xds.ebrim import NS, q

__all__ = [
    "FIND_DOCUMENTS",
    "RegistryErrorInfo",
    "RegistryResult",
    "adhoc_query_response",
    "find_documents_request",
    "read_find_documents_request",
    "read_registry_response",
    "redact_context",
    "registry_response",
]

STATUS_SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
STATUS_FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
STATUS_PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
SEVERITY_WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
"""Stored query id of FindDocuments (ITI TF-2a §3.18.4.1.2.3.7.1)."""

_STATUS_NAMES = {STATUS_SUCCESS: "Success", STATUS_FAILURE: "Failure", STATUS_PARTIAL: "PartialSuccess"}


@dataclasses.dataclass(frozen=True, slots=True)
class RegistryErrorInfo:
    """One rs:RegistryError, as returned (context unredacted: redact before using it in a text)."""

    code: str
    context: str = ""
    severity: str = SEVERITY_ERROR
    location: str = ""

    @property
    def is_error(self) -> bool:
        """True for severity Error (a Warning does not make a submission fail)."""
        return not self.severity.endswith(":Warning")


@dataclasses.dataclass(frozen=True, slots=True)
class RegistryResult:
    """The status of a RegistryResponse / AdhocQueryResponse and its errors."""

    status: str
    """``Success``, ``Failure``, ``PartialSuccess``, or the raw value when it is none of them."""
    errors: tuple[RegistryErrorInfo, ...] = ()

    def codes(self) -> list[str]:
        """The distinct errorCodes, in order."""
        return list(dict.fromkeys(e.code for e in self.errors))


def read_registry_response(root: etree._Element) -> RegistryResult:
    """Read the status and errors of an rs:RegistryResponse or a query:AdhocQueryResponse element.

    Raises ``ValueError`` when the element is neither.
    """
    if root.tag not in (q("rs", "RegistryResponse"), q("query", "AdhocQueryResponse")):
        raise ValueError("not a RegistryResponse")
    raw = root.get("status", "")
    errors = tuple(
        RegistryErrorInfo(
            code=e.get("errorCode", ""),
            context=e.get("codeContext", ""),
            severity=e.get("severity", SEVERITY_ERROR),
            location=e.get("location", ""),
        )
        for e in root.iterfind(f"{q('rs', 'RegistryErrorList')}/{q('rs', 'RegistryError')}")
    )
    return RegistryResult(_STATUS_NAMES.get(raw, raw), errors)


def _error_list(parent: etree._Element, errors: Iterable[RegistryErrorInfo]) -> None:
    errors = list(errors)
    if not errors:
        return
    highest = SEVERITY_ERROR if any(e.is_error for e in errors) else SEVERITY_WARNING
    rel = etree.SubElement(parent, q("rs", "RegistryErrorList"), highestSeverity=highest)
    for e in errors:
        etree.SubElement(
            rel,
            q("rs", "RegistryError"),
            codeContext=e.context,
            errorCode=e.code,
            location=e.location,
            severity=e.severity,
        )


def _status_uri(status: str) -> str:
    return {"Success": STATUS_SUCCESS, "Failure": STATUS_FAILURE, "PartialSuccess": STATUS_PARTIAL}[status]


def registry_response(status: str, errors: Iterable[RegistryErrorInfo] = ()) -> etree._Element:
    """An rs:RegistryResponse with ``status`` (Success / Failure / PartialSuccess) and its errors."""
    root = etree.Element(q("rs", "RegistryResponse"), nsmap={"rs": NS["rs"]}, status=_status_uri(status))
    _error_list(root, errors)
    return root


def find_documents_request(
    patient_id: str,
    *,
    statuses: Iterable[str] = ("urn:oasis:names:tc:ebxml-regrep:StatusType:Approved",),
    return_type: str = "LeafClass",
) -> etree._Element:
    """A query:AdhocQueryRequest for FindDocuments by patient id and availability status."""
    root = etree.Element(q("query", "AdhocQueryRequest"), nsmap={"query": NS["query"], "rim": NS["rim"]})
    etree.SubElement(root, q("query", "ResponseOption"), returnComposedObjects="true", returnType=return_type)
    aq = etree.SubElement(root, q("rim", "AdhocQuery"), id=FIND_DOCUMENTS)
    # ITI TF-2a §3.18.4.1.2.3 (parameter values): values are SQL-like literals: 'x' and ('a','b').
    for name, value in (
        ("$XDSDocumentEntryPatientId", f"'{patient_id}'"),
        ("$XDSDocumentEntryStatus", "(" + ",".join(f"'{s}'" for s in statuses) + ")"),
    ):
        slot = etree.SubElement(aq, q("rim", "Slot"), name=name)
        etree.SubElement(etree.SubElement(slot, q("rim", "ValueList")), q("rim", "Value")).text = value
    return root


_LITERAL = re.compile(r"'((?:[^']|'')*)'")


def read_find_documents_request(root: etree._Element) -> tuple[str, str, dict[str, list[str]]]:
    """(query id, return type, parameters) of an AdhocQueryRequest; parameter values unquoted.

    ``('a','b')`` lists are flattened, repeated Value elements too (ITI TF-2a
    §3.18.4.1.2.3 allows both forms). Raises ``ValueError`` when the element
    is not an AdhocQueryRequest.
    """
    if root.tag != q("query", "AdhocQueryRequest"):
        raise ValueError("not an AdhocQueryRequest")
    option = root.find(q("query", "ResponseOption"))
    return_type = "LeafClass" if option is None else option.get("returnType", "LeafClass")
    aq = root.find(q("rim", "AdhocQuery"))
    query_id = "" if aq is None else aq.get("id", "")
    params: dict[str, list[str]] = {}
    for slot in [] if aq is None else aq.findall(q("rim", "Slot")):
        values = params.setdefault(slot.get("name", ""), [])
        for v in slot.iterfind(f"{q('rim', 'ValueList')}/{q('rim', 'Value')}"):
            text = (v.text or "").strip()
            found = _LITERAL.findall(text)
            values.extend(s.replace("''", "'") for s in found) if found else values.append(text)
    return query_id, return_type, params


def adhoc_query_response(
    status: str, objects: Iterable[etree._Element] = (), errors: Iterable[RegistryErrorInfo] = ()
) -> etree._Element:
    """A query:AdhocQueryResponse holding ``objects`` (ExtrinsicObjects or ObjectRefs)."""
    nsmap = {"query": NS["query"], "rim": NS["rim"], "rs": NS["rs"]}
    root = etree.Element(q("query", "AdhocQueryResponse"), nsmap=nsmap, status=_status_uri(status))
    _error_list(root, errors)
    rol = etree.SubElement(root, q("rim", "RegistryObjectList"))
    for obj in objects:
        rol.append(obj)
    return root


_DIGITS = re.compile(r"[0-9][0-9.\s-]{3,}[0-9AB]")
_HL7ISH = re.compile(r"\S*[\^&~|]\S*")


def redact_context(context: str, *, limit: int = 120) -> str:
    """A codeContext fit for an exception text: HL7-structured tokens and digit runs masked, length capped.

    Registries put free text in codeContext and may quote a patient id or a
    document id; what could be an identifier (a CX/XCN token, 4+ digits) is
    replaced with ``…``. Names cannot be recognised in free text, so callers
    that must be strictly PHI-free drop the context altogether.
    """
    text = _HL7ISH.sub("…", context)
    text = _DIGITS.sub("…", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
