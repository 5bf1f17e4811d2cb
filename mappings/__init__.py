"""Built-in pipeline steps (pure functions Message -> Message). Importing a module registers it."""

from mappings.cda import crbio as _cda_crbio  # noqa: F401  (imports and registers cda.hl7v2_documents too)
from mappings.cda import select as _cda_select  # noqa: F401  (registers the xpath selector)
from mappings.fhir import fieldmap as _fhir_fieldmap  # noqa: F401  (registers fhir_map)
from mappings.fhir import reader as _fhir  # noqa: F401  (the package registers the FHIR reader and steps)
from mappings.fhir import select as _fhir_select  # noqa: F401  (registers the fhirpath selector)
from mappings.hl7v2 import field_search as _hl7v2_field_search  # noqa: F401  (content search: PID-5.1=...)
from mappings.hl7v2 import fieldmap as _hl7v2_fieldmap  # noqa: F401
from mappings.hl7v2 import reader as _hl7v2_reader  # noqa: F401
from mappings.hl7v2 import validate as _hl7v2_validate  # noqa: F401
from mappings.ins import feed as _ins_feed  # noqa: F401  (registers the HL7 v2 identity feed reader)
from mappings.ins import steps as _ins_steps  # noqa: F401
from mappings.mssante import mdm as _mssante_mdm  # noqa: F401  (registers cda_to_v2_mdm_t02)
from mappings.xds import v2_context as _xds_v2_context  # noqa: F401  (registers v2_dmp_context)
