"""FHIR R4: validation (structure + FR Core INS rules), routing metadata, and the FHIR mappings.

Importing the package registers the ``application/fhir+json`` reader and the steps
``v2_adt_to_fhir_patient``, ``v2_oru_to_fhir_report``, ``cda_to_mhd_bundle`` and
``fhir_patient_to_v2_adt``. All pure: bytes in, bytes and metadata out, no I/O.
"""

from __future__ import annotations

from mappings.fhir import cda_mhd as _cda_mhd  # noqa: F401  (registers cda_to_mhd_bundle)
from mappings.fhir import patient_v2 as _patient_v2  # noqa: F401  (registers fhir_patient_to_v2_adt)
from mappings.fhir import v2_adt as _v2_adt  # noqa: F401  (registers v2_adt_to_fhir_patient)
from mappings.fhir import v2_oru as _v2_oru  # noqa: F401  (registers v2_oru_to_fhir_report)
from mappings.fhir.common import Issue, operation_outcome
from mappings.fhir.identifiers import active_ins, business_identifier, patient_key_of
from mappings.fhir.reader import fhir_metadata, read_fhir_metadata
from mappings.fhir.validate import validate_fhir, validate_structure

__all__ = [
    "Issue",
    "active_ins",
    "business_identifier",
    "fhir_metadata",
    "operation_outcome",
    "patient_key_of",
    "read_fhir_metadata",
    "validate_fhir",
    "validate_structure",
]
