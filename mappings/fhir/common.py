"""Shared FHIR R4 vocabulary for the hub's FHIR mappings, adapters and sandbox.

Pure helpers, no I/O: canonical URLs and code systems the mappings write,
OperationOutcome issues that never quote a value from the resource, JSON
in and out (compact UTF-8, keys kept in order), and FHIR search-token
escaping for conditional interactions.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from hub.errors import ParseError

__all__ = [
    "FR_CORE_V2_0203_SYSTEM",
    "LOINC_SYSTEM",
    "UCUM_SYSTEM",
    "V2_0203_SYSTEM",
    "Issue",
    "dump_json",
    "iter_resources",
    "load_json",
    "operation_outcome",
    "search_token",
    "stable_uuid",
]

"""The hub's content type for FHIR R4 JSON bodies (same value as `mappings.ins.steps.ContentType.FHIR`)."""

LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
SNOMED_SYSTEM = "http://snomed.info/sct"
V2_0203_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
FR_CORE_V2_0203_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
_HUB_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:interop-hub:fhir")

Severity = Literal["fatal", "error", "warning", "information"]


@dataclasses.dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome issue (FHIR R4 OperationOutcome.issue).

    ``code`` is from the IssueType value set (``structure``, ``required``,
    ``value``, ``invalid``, ``code-invalid``, ``business-rule``,
    ``invariant``, ``not-supported``, ``too-long``, ``duplicate``...).
    ``expression`` is a FHIRPath location such as
    ``Bundle.entry[0].resource.identifier[1].system``; ``diagnostics`` is
    the hub's own fixed text and never quotes the resource.
    """

    severity: Severity
    code: str
    expression: str
    diagnostics: str

    @property
    def is_error(self) -> bool:
        return self.severity in ("fatal", "error")

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = [self.expression]
        return out

    def __str__(self) -> str:
        where = f"{self.expression}: " if self.expression else ""
        return f"{where}{self.diagnostics}"


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource (JSON) listing ``issues`` (at least one, as R4 requires)."""
    listed = [i.as_json() for i in issues]
    if not listed:
        listed = [{"severity": "information", "code": "informational", "diagnostics": "ok"}]
    return {"resourceType": "OperationOutcome", "issue": listed}


def load_json(body: bytes) -> dict[str, Any]:
    """A JSON object from bytes; `ParseError` (no content quoted) otherwise."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ParseError("not JSON") from None
    except ValueError:
        # An integer of more than sys.get_int_max_str_digits() digits (CVE-2020-10735 limit): no FHIR value is.
        raise ParseError("a JSON number is too long") from None
    if not isinstance(doc, dict):
        raise ParseError("not a FHIR resource: the JSON is not an object")
    return doc


def dump_json(doc: Any) -> bytes:
    """Compact UTF-8 JSON, keys in insertion order: the same input always gives the same bytes."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def stable_uuid(*parts: str) -> str:
    """A UUIDv5 from ``parts``: the same message mapped twice gets the same fullUrls and ids."""
    return str(uuid.uuid5(_HUB_NS, "\x1f".join(parts)))


def iter_resources(doc: dict[str, Any], path: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(FHIRPath, resource) for ``doc``, its Bundle entries (recursively) and contained resources."""
    here = path or str(doc.get("resourceType") or "Resource")
    yield here, doc
    for i, contained in enumerate(doc.get("contained") or []):
        if isinstance(contained, dict):
            yield from iter_resources(contained, f"{here}.contained[{i}]")
    if doc.get("resourceType") == "Bundle":
        for i, entry in enumerate(doc.get("entry") or []):
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield from iter_resources(entry["resource"], f"{here}.entry[{i}].resource")


def _escape_token(value: str) -> str:
    # FHIR R4 search §3.1.1.5.7 (escaping): "\", "|", "," and "$" are escaped with a backslash.
    return value.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")


def search_token(system: str | None, value: str) -> str:
    """A token search value ``system|value`` (``|value`` for an identifier without system), escaped."""
    return f"{_escape_token(system)}|{_escape_token(value)}" if system else f"|{_escape_token(value)}"
