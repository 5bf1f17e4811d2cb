"""The INS identity model: pure functions and values, no I/O, no logging.

- `hub.identity.nir`: NIR/NIA matricule check (length, characters, key,
  Corsica 2A/2B) and decoding (sex digit, birth year/month, birthplace).
- `hub.identity.oids`: the four INS roots, their HL7 v2 / FHIR names, and
  `InsPolicy`, which roots an environment accepts and stamps.
- `hub.identity.rniv`: RNIV statuses and attributes, their combination rules,
  PID-32 reading, and whether an INS may be carried.
- `hub.identity.traits`, `.names`, `.dates`: strict identity traits, RNIV
  name normalisation, incomplete birth dates, and trait comparison.

Nothing here puts a name, date or matricule in an exception text or a repr:
errors and results name the problem or the trait, never the value.
"""

from __future__ import annotations

from hub.identity.dates import complete_birth_date, parse_birth_date
from hub.identity.names import first_given_name_consistent, name_key, normalize_name
from hub.identity.nir import (
    NIR_LENGTH,
    InsProblem,
    NirCheck,
    NirParts,
    check_nir,
    decode_nir,
    nir_key,
    require_nir,
)
from hub.identity.oids import (
    INS_AUTHORITIES,
    INS_C_OIDS,
    INS_CX5,
    INS_NIA_OID,
    INS_NIR_DEMO_OID,
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    INS_ROOTS,
    Environment,
    InsAuthority,
    InsKind,
    InsPolicy,
    InsUsage,
    InsVerdict,
    authority_for_oid,
    cx4_assigning_authority,
    ins_oid,
)
from hub.identity.rniv import (
    FR_CORE_IDENTITY_STATUS_SYSTEM,
    FR_CORE_STATUS_COMMENT_SYSTEM,
    FR_CORE_V2_0445_SYSTEM,
    TABLE_0445_CODES,
    IdentityAttribute,
    IdentityStatus,
    Pid32Reading,
    RnivRule,
    may_call_insi,
    may_carry_ins,
    pid32_allows_ins,
    read_pid32,
    rniv_violations,
)
from hub.identity.traits import (
    BLOCKING_TRAITS,
    UNKNOWN_BIRTHPLACE,
    Sex,
    StrictTraits,
    Trait,
    TraitDiff,
    compare_traits,
    nir_trait_disagreements,
)

__all__ = [
    "BLOCKING_TRAITS",
    "FR_CORE_IDENTITY_STATUS_SYSTEM",
    "FR_CORE_STATUS_COMMENT_SYSTEM",
    "FR_CORE_V2_0445_SYSTEM",
    "INS_AUTHORITIES",
    "INS_CX5",
    "INS_C_OIDS",
    "INS_NIA_OID",
    "INS_NIR_DEMO_OID",
    "INS_NIR_OID",
    "INS_NIR_TEST_OID",
    "INS_ROOTS",
    "NIR_LENGTH",
    "TABLE_0445_CODES",
    "UNKNOWN_BIRTHPLACE",
    "Environment",
    "IdentityAttribute",
    "IdentityStatus",
    "InsAuthority",
    "InsKind",
    "InsPolicy",
    "InsProblem",
    "InsUsage",
    "InsVerdict",
    "NirCheck",
    "NirParts",
    "Pid32Reading",
    "RnivRule",
    "Sex",
    "StrictTraits",
    "Trait",
    "TraitDiff",
    "authority_for_oid",
    "check_nir",
    "compare_traits",
    "complete_birth_date",
    "cx4_assigning_authority",
    "decode_nir",
    "first_given_name_consistent",
    "ins_oid",
    "may_call_insi",
    "may_carry_ins",
    "name_key",
    "nir_key",
    "nir_trait_disagreements",
    "normalize_name",
    "parse_birth_date",
    "pid32_allows_ins",
    "read_pid32",
    "require_nir",
    "rniv_violations",
]
