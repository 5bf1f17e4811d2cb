"""IHE XDS.b metadata for the DMP: CDA → ITI-41 ProvideAndRegisterDocumentSetRequest, and the registry side.

Pure functions and pydantic models, no I/O:

* :mod:`mappings.xds.metadata` — :class:`XdsMetadataConfig`, :func:`build_submission`
  (CDA bytes → :class:`XdsSubmission`), :func:`submit_objects_request`,
  :func:`provide_and_register_request`;
* :mod:`mappings.xds.ebrim` — the ebRIM scheme UUIDs (ITI TF-3 §4.2.5) and
  :func:`read_submission`, which reads a request back into dataclasses;
* :mod:`mappings.xds.registry` — RegistryResponse and FindDocuments (ITI-18);
* :mod:`mappings.xds.hl7` — CX / XCN / XON / DTM formatting.
"""

from mappings.xds.ebrim import (
    AVAILABILITY_APPROVED,
    AVAILABILITY_DEPRECATED,
    DE,
    NS,
    SS,
    Association,
    Classification,
    ParsedSubmission,
    RegistryObject,
    read_submission,
)
from mappings.xds.metadata import (
    Author,
    Code,
    DocumentEntry,
    DocumentTypeMapping,
    Replacement,
    StructureIdentity,
    SubmissionSetMeta,
    SubmitterIdentity,
    XdsCode,
    XdsMetadataConfig,
    XdsSubmission,
    build_submission,
    entry_uuid_for,
    provide_and_register_request,
    submission_set_unique_id,
    submit_objects_request,
)
from mappings.xds.registry import (
    FIND_DOCUMENTS,
    RegistryErrorInfo,
    RegistryResult,
    adhoc_query_response,
    find_documents_request,
    read_find_documents_request,
    read_registry_response,
    redact_context,
    registry_response,
)

__all__ = [
    "AVAILABILITY_APPROVED",
    "AVAILABILITY_DEPRECATED",
    "DE",
    "FIND_DOCUMENTS",
    "NS",
    "SS",
    "Association",
    "Author",
    "Classification",
    "Code",
    "DocumentEntry",
    "DocumentTypeMapping",
    "ParsedSubmission",
    "RegistryErrorInfo",
    "RegistryObject",
    "RegistryResult",
    "Replacement",
    "StructureIdentity",
    "SubmissionSetMeta",
    "SubmitterIdentity",
    "XdsCode",
    "XdsMetadataConfig",
    "XdsSubmission",
    "adhoc_query_response",
    "build_submission",
    "entry_uuid_for",
    "find_documents_request",
    "provide_and_register_request",
    "read_find_documents_request",
    "read_registry_response",
    "read_submission",
    "redact_context",
    "registry_response",
    "submission_set_unique_id",
    "submit_objects_request",
]
