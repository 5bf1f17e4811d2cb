"""One Bundle, one patient: every resource of an intake Bundle that names a patient names the Bundle's patient.

The hub stamps the INS of the Bundle's Patient on everything it forwards
(`hub.identity`), so a DocumentReference about someone else would leave under
the wrong INS, and a Bundle holding two Patients has no patient key to wait
on (it would wait for an identity forever). Both are refused (422,
``business-rule``), as FHIR R4 §3.1.0.4 answers for a business rule.

What names a patient: the ``subject`` and ``patient`` elements (a Reference)
of every resource in the Bundle, contained ones included. A reference names
the Bundle's patient when it is that Patient's ``fullUrl`` or
``Patient/<id>``, or when its ``identifier`` is one of that Patient's
identifiers. References to something that is not a patient (``Group/…``,
``Device/…``, ``Location/…``) are left alone. A Bundle without a Patient must
have all its references agree with each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings.fhir.common import Issue, iter_resources
from mappings.fhir.identifiers import active_ins, patient_key_of

__all__ = ["patient_consistency_issues"]

_PATIENT_ELEMENTS = ("subject", "patient")
_NOT_PATIENTS = ("Group/", "Device/", "Location/", "Organization/", "Practitioner/", "RelatedPerson/")


def _identity(ident: Any) -> tuple[str, str] | None:
    if isinstance(ident, Mapping) and isinstance(ident.get("value"), str):
        return str(ident.get("system") or ""), ident["value"]
    return None


def _patients(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], set[str]]]:
    """(FHIRPath, Patient, the names references may use for it) of each Patient entry of the Bundle."""
    out = []
    for i, entry in enumerate(doc.get("entry") or []):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
            continue
        names = set()
        if isinstance(entry.get("fullUrl"), str):
            names.add(entry["fullUrl"])
        if isinstance(resource.get("id"), str):
            names.add(f"Patient/{resource['id']}")
        out.append((f"Bundle.entry[{i}].resource", resource, names))
    return out


def _same_person(a: dict[str, Any], b: dict[str, Any]) -> bool:
    key_a, key_b = patient_key_of(a), patient_key_of(b)
    ins_a, ins_b = active_ins(a), active_ins(b)
    return bool((key_a and key_a == key_b) or (ins_a and ins_a == ins_b))


def patient_consistency_issues(doc: dict[str, Any]) -> list[Issue]:
    """The errors of a Bundle naming more than one patient (empty for anything else)."""
    if doc.get("resourceType") != "Bundle":
        return []
    patients = _patients(doc)
    if len(patients) > 1:
        first = patients[0][1]
        for where, other, _ in patients[1:]:
            if not _same_person(first, other):
                return [Issue("error", "business-rule", where, "the Bundle holds more than one patient")]
    names: set[str] = set()
    identifiers: set[tuple[str, str]] = set()
    for _, patient, refs in patients:
        names |= refs
        identifiers |= {i for i in map(_identity, patient.get("identifier") or []) if i is not None}
    seen: tuple[str, Any] | None = None  # without a Patient entry: the first reference, which the others must match
    issues = []
    for where, resource in iter_resources(doc):
        if resource.get("resourceType") == "Patient":
            continue
        for element in _PATIENT_ELEMENTS:
            ref = resource.get(element)
            if not isinstance(ref, Mapping):
                continue
            reference, ident = ref.get("reference"), _identity(ref.get("identifier"))
            if isinstance(reference, str) and reference.startswith(_NOT_PATIENTS):
                continue
            if patients:
                ok = (isinstance(reference, str) and reference in names) or (
                    reference is None and ident is not None and ident in identifiers
                )
            else:
                this = ("reference", reference) if isinstance(reference, str) else ("identifier", ident)
                seen = seen or this
                ok = this == seen
            if not ok:
                issues.append(
                    Issue("error", "business-rule", f"{where}.{element}", "names another patient than the Bundle's")
                )
    return issues
