"""The identity a stamper writes, what it returns, and the registry comparison.

Stamping writes a *known* identity (from the identity registry) into a message
in that format's own place (DOMAIN.md §9.4-§9.5):

- HL7 v2: `mappings.ins.stamp_v2.stamp_hl7v2` (PID-3, PID-5, PID-7, PID-8, PID-11, PID-32);
- CDA R2: `mappings.ins.stamp_cda.stamp_cda` (recordTarget/patientRole);
- FHIR R4 FR Core: `mappings.ins.stamp_fhir.stamp_fhir` (Patient, alone or in a Bundle).

Each takes the message bytes and a `StampIdentity` and returns `Stamped`: the
new bytes and a short metadata dict. Each refuses (`hub.errors.MappingError`)
an identity that is not *qualifiée*: RNIV [EXI SI 08], "le statut identité
qualifiée est le seul à permettre d'utiliser le matricule INS lors des
transmissions" (DOMAIN.md §1.4). The caller then holds the message.

Stamping is idempotent: stamping the output again gives the same bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import NamedTuple

from hub.errors import MappingError, ValidationError
from hub.identity import (
    INS_ROOTS,
    IdentityAttribute,
    IdentityStatus,
    InsAuthority,
    InsPolicy,
    InsProblem,
    StrictTraits,
    Trait,
    authority_for_oid,
    check_nir,
    compare_traits,
    may_carry_ins,
    name_key,
)
from mappings.ins.pam import IdentityFeed, PatientIdentifier

__all__ = ["StampIdentity", "Stamped", "compare_with_registry"]


@dataclasses.dataclass(frozen=True, slots=True, repr=False, kw_only=True)
class StampIdentity:
    """A known identity to write into a message; the repr never shows it.

    ``ins`` is the 15-character matricule with its key, ``ins_oid`` one of the
    four INS roots (DOMAIN.md §1.1). ``traits`` are the strict traits the INS
    was qualified with; ``traits.birth_given_names`` must hold the INSi list
    (every format carries it with an INS). ``used_family_name`` /
    ``used_given_name`` (nom / prénom utilisés, RNIV) are written only when
    set; None leaves the message's own used name alone. ``local_id`` is the
    registry key the identity was found under, for the caller's records: the
    stampers keep the message's local ids and never add one (an HL7 v2
    authority is no CDA root or FHIR system). ``source`` goes to the metadata.

    Construction checks shape only, raising `ValidationError` (no values):
    the OID must be an INS root and the matricule 15 digits (2A/2B allowed);
    the key is the `InsPolicy`'s business (pass one to the stampers).
    """

    ins: str
    ins_oid: str
    status: IdentityStatus
    traits: StrictTraits
    attributes: frozenset[IdentityAttribute] = frozenset()
    used_family_name: str | None = None
    used_given_name: str | None = None
    local_id: PatientIdentifier | None = None
    source: str = "registry"

    def __post_init__(self) -> None:
        if self.ins_oid not in INS_ROOTS:
            raise ValidationError("stamp identity: OID is not an INS root", code="103")
        if check_nir(self.ins).problem in (InsProblem.LENGTH, InsProblem.CHARACTERS):
            raise ValidationError("stamp identity: INS is not 15 digits", code="102")
        if not isinstance(self.traits, StrictTraits):
            raise ValidationError("stamp identity: traits must be StrictTraits")
        object.__setattr__(self, "status", IdentityStatus(self.status))
        object.__setattr__(self, "attributes", frozenset(IdentityAttribute(a) for a in self.attributes))
        for name in ("used_family_name", "used_given_name"):
            value = getattr(self, name)
            if value is not None and not name_key(value):
                object.__setattr__(self, name, None)

    def __repr__(self) -> str:
        return f"StampIdentity(<masked>, ins_oid={self.ins_oid!r}, status={self.status}, source={self.source!r})"

    @property
    def authority(self) -> InsAuthority:
        """The INS authority of `ins_oid`: HL7 v2 namespace, FHIR type code and use."""
        authority = authority_for_oid(self.ins_oid)
        assert authority is not None  # checked in __post_init__
        return authority

    @property
    def has_used_name(self) -> bool:
        """Whether a used name (family or given) is to be written."""
        return self.used_family_name is not None or self.used_given_name is not None

    @classmethod
    def from_feed(cls, feed: IdentityFeed, *, source: str = "adt") -> StampIdentity:
        """The identity an ADT feed establishes; `MappingError` if it has no trusted INS or traits."""
        traits = feed.traits
        if feed.ins is None or traits is None or feed.status is None:
            raise MappingError("identity feed has no trusted INS with complete strict traits")
        return cls(
            ins=feed.ins.matricule,
            ins_oid=feed.ins.oid,
            status=feed.status,
            traits=traits,
            attributes=feed.pid32.attributes,
            used_family_name=feed.used_family_name,
            used_given_name=feed.used_given_name,
            local_id=feed.local_ids[0],
            source=source,
        )


class Stamped(NamedTuple):
    """A stamper's result: the new message bytes and what was stamped (for `hub.message.Message` metadata).

    ``metadata`` keys: ``ins_stamped`` ("true"), ``ins``, ``ins_oid``,
    ``ins_source``, ``identity_status``. The metadata is stored with the
    message, never logged; the repr shows neither the body nor the INS.
    """

    body: bytes
    metadata: dict[str, str]

    def __repr__(self) -> str:
        return f"Stamped(<{len(self.body)} bytes>, keys={sorted(self.metadata)})"


def compare_with_registry(candidate: StrictTraits | IdentityFeed, registry: StrictTraits) -> tuple[Trait, ...]:
    """The strict traits on which a message disagrees with the registry, by name, in `Trait` order.

    ``candidate`` is the message's traits, or an `IdentityFeed` whose missing
    traits are then not compared (a feed without a birthplace does not
    disagree on it). Comparison is `hub.identity.compare_traits`: names by
    RNIV comparison key, unknown sex or birthplace undetermined, not
    disagreeing. Route a non-empty result to identity review (DESIGN.md §5).
    """
    if isinstance(candidate, IdentityFeed):
        traits = StrictTraits(
            birth_name=candidate.birth_name or registry.birth_name,
            first_birth_given_name=candidate.first_birth_given_name or registry.first_birth_given_name,
            birth_date=candidate.birth_date or registry.birth_date,
            sex=candidate.sex or registry.sex,
            birthplace_code=candidate.birthplace_code or registry.birthplace_code,
            birth_given_names=candidate.birth_given_names or "",
        )
    else:
        traits = candidate
    return compare_traits(registry, traits).disagreeing


def require_stampable(identity: StampIdentity, policy: InsPolicy | None) -> None:
    """Raise `MappingError` unless ``identity`` may be written into a message."""
    if identity.status is not IdentityStatus.QUALIFIEE:
        # RNIV [EXI SI 08]; PAM FR §6.6.1: the INS travels only with a qualified identity.
        raise MappingError(f"identity is {identity.status.value}, not qualifiee: the INS may not be stamped")
    if not may_carry_ins(identity.status, identity.attributes):
        raise MappingError("identity attributes forbid carrying the INS (DOUT/FICT require provisoire)")
    if not name_key(identity.traits.birth_given_names):
        # CDA schematron (given without qualifier), FR Core birth-list-given-name 1..1, PID-5 XPN-3
        # from INSi: a qualified identity comes from INSi, which always returns the list.
        raise MappingError("identity has no birth given-name list; a qualified identity needs the INSi list")
    if policy is not None:
        verdict = policy.check(identity.ins, identity.ins_oid)
        if verdict.errors:
            names = ", ".join(p.value for p in verdict.errors)
            raise MappingError(f"INS refused ({policy.environment.value}): {names}")


def stamp_metadata(identity: StampIdentity) -> dict[str, str]:
    """The metadata every stamper returns."""
    return {
        "ins_stamped": "true",
        "ins": identity.ins,
        "ins_oid": identity.ins_oid,
        "ins_source": identity.source,
        "identity_status": identity.status.value,
    }


def sorted_attributes(attributes: Iterable[IdentityAttribute]) -> list[IdentityAttribute]:
    """Attributes in a fixed order, so that stamping is deterministic."""
    return sorted(attributes, key=lambda a: a.value)
