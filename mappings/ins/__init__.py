"""INS identity in messages: read PAM FR identity feeds, stamp a known identity in HL7 v2, CDA R2 and FHIR.

Pure functions over bytes, no I/O and no logging; errors name a location and
a rule, never a value (DOMAIN.md §1-§4, §8-§9):

- `read_identity_feed` (`mappings.ins.pam`): an IHE PAM France ADT -> `IdentityFeed`
  (local ids, trusted INS or why it was ignored, PID-32 and RNIV status, strict
  traits, MRG-1 for A40/A47).
- `stamp_hl7v2`, `stamp_cda`, `stamp_fhir`: write a qualified `StampIdentity`
  into PID / recordTarget / Patient and return `Stamped` (bytes + metadata).
- `compare_with_registry`: which strict traits of a message disagree with the registry.
"""

from __future__ import annotations

from mappings.ins.pam import (
    ITI30_EVENTS,
    ITI31_EVENTS,
    AssigningAuthority,
    IdentityFeed,
    Ins,
    InsAction,
    InsIgnoredReason,
    PatientIdentifier,
    read_identity_feed,
)
from mappings.ins.stamp import Stamped, StampIdentity, compare_with_registry
from mappings.ins.stamp_cda import stamp_cda
from mappings.ins.stamp_fhir import FrCoreVersion, stamp_fhir
from mappings.ins.stamp_v2 import stamp_hl7v2

__all__ = [
    "ITI30_EVENTS",
    "ITI31_EVENTS",
    "AssigningAuthority",
    "FrCoreVersion",
    "IdentityFeed",
    "Ins",
    "InsAction",
    "InsIgnoredReason",
    "PatientIdentifier",
    "StampIdentity",
    "Stamped",
    "compare_with_registry",
    "read_identity_feed",
    "stamp_cda",
    "stamp_fhir",
    "stamp_hl7v2",
]
