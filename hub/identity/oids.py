"""The four INS assigning authorities and the per-environment policy over them.

DOMAIN.md §1.1: ``.8`` INS-NIR production, ``.9`` INS-NIA production, ``.10``
INS-NIR *test*, ``.11`` INS-NIR *demonstration*. ``.11`` is not "NIA test":
no NIA test OID exists in IHE-France Appendix N, FR Core or the CI-SIS
schematron, so none is defined here.

The OID alone does not make an identifier an INS in HL7 v2: the billing NIR
(``ASIP-SANTE-NIR``, CX-5 ``NH``) uses the same ``.8`` OID as the INS-NIR
(CX-5 ``INS``), DOMAIN.md §2.2 and §9.2. Callers must check CX-5 too.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from hub.environments import Environment
from hub.errors import ConfigError, ValidationError
from hub.identity.nir import InsProblem, check_nir

__all__ = [
    "INS_AUTHORITIES",
    "INS_CX5",
    "INS_C_OIDS",
    "INS_NIA_OID",
    "INS_NIR_DEMO_OID",
    "INS_NIR_OID",
    "INS_NIR_TEST_OID",
    "INS_ROOTS",
    "Environment",
    "InsAuthority",
    "InsKind",
    "InsPolicy",
    "InsUsage",
    "InsVerdict",
    "authority_for_oid",
    "cx4_assigning_authority",
    "ins_oid",
]

INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"
INS_NIR_TEST_OID = "1.2.250.1.213.1.4.10"
INS_NIR_DEMO_OID = "1.2.250.1.213.1.4.11"

INS_ROOTS = frozenset({INS_NIR_OID, INS_NIA_OID, INS_NIR_TEST_OID, INS_NIR_DEMO_OID})
"""Exactly the roots the CI-SIS schematron treats as INS (DOMAIN.md §1.1 [S5])."""

INS_C_OIDS = frozenset({"1.2.250.1.213.1.4.2", "1.2.250.1.213.1.4.6", "1.2.250.1.213.1.4.7"})
"""Legacy INS-C (production / test / demo cards): recognised, never an INS (DOMAIN.md §1.1)."""

INS_CX5 = "INS"
"""CX-5 identifier type code of an INS in PID-3 (DOMAIN.md §2.2)."""


class InsKind(enum.StrEnum):
    """Which national register the matricule comes from."""

    NIR = "NIR"
    NIA = "NIA"


class InsUsage(enum.StrEnum):
    """What an INS root is for."""

    PRODUCTION = "production"
    TEST = "test"
    DEMO = "demo"


@dataclass(frozen=True, slots=True)
class InsAuthority:
    """One INS root with its names in each format (DOMAIN.md §1.1, §2.2, §4.1)."""

    oid: str
    kind: InsKind
    usage: InsUsage
    hl7_namespace: str
    """CX-4.1 (HD namespace id), e.g. ``ASIP-SANTE-INS-NIR``; test/demo roots use the NIR name."""
    fhir_type: str
    """FR Core ``fr-core-cs-v2-0203`` identifier type code: INS-NIR, INS-NIA, INS-NIR-TEST, INS-NIR-DEMO."""
    fhir_use: str
    """FR Core identifier ``use``: ``official``, or ``temp`` for an NIA."""

    @property
    def fhir_system(self) -> str:
        """The FHIR ``Identifier.system``: ``urn:oid:`` + the OID."""
        return f"urn:oid:{self.oid}"


INS_AUTHORITIES: Mapping[str, InsAuthority] = MappingProxyType(
    {
        a.oid: a
        for a in (
            InsAuthority(
                INS_NIR_OID, InsKind.NIR, InsUsage.PRODUCTION, "ASIP-SANTE-INS-NIR", "INS-NIR", "official"
            ),
            InsAuthority(
                INS_NIA_OID, InsKind.NIA, InsUsage.PRODUCTION, "ASIP-SANTE-INS-NIA", "INS-NIA", "temp"
            ),
            InsAuthority(
                INS_NIR_TEST_OID, InsKind.NIR, InsUsage.TEST, "ASIP-SANTE-INS-NIR", "INS-NIR-TEST", "official"
            ),
            InsAuthority(
                INS_NIR_DEMO_OID, InsKind.NIR, InsUsage.DEMO, "ASIP-SANTE-INS-NIR", "INS-NIR-DEMO", "official"
            ),
        )
    }
)
"""The four INS roots by OID."""


def authority_for_oid(oid: str) -> InsAuthority | None:
    """Return the INS authority for ``oid``, or None if it is not an INS root (INS-C included)."""
    return INS_AUTHORITIES.get(oid)


def cx4_assigning_authority(oid: str) -> str:
    """HL7 v2 CX-4 (HD) for an INS root, e.g. ``ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO``.

    Raises `ValueError` for an OID that is not an INS root.
    """
    authority = authority_for_oid(oid)
    if authority is None:
        raise ValueError("not an INS root OID")
    return f"{authority.hl7_namespace}&{authority.oid}&ISO"


@dataclass(frozen=True, slots=True)
class InsVerdict:
    """What `InsPolicy.check` found; holds problem names only, never the number.

    ``errors`` make the INS unusable in this environment; ``warnings`` are
    tolerated by the policy (a wrong key outside production).
    """

    errors: tuple[InsProblem, ...] = ()
    warnings: tuple[InsProblem, ...] = ()

    @property
    def accepted(self) -> bool:
        """True when the policy lets the INS through (warnings allowed)."""
        return not self.errors


def _default_roots(environment: Environment) -> frozenset[str]:
    if environment is Environment.PRODUCTION:
        return frozenset({INS_NIR_OID, INS_NIA_OID})
    return INS_ROOTS


@dataclass(frozen=True, slots=True, kw_only=True)
class InsPolicy:
    """Which INS roots an environment accepts and stamps, and how strict the key check is.

    Build it with `InsPolicy.for_environment`. Production accepts only ``.8``
    and ``.9`` and cannot be configured to accept the test or demo roots
    (DOMAIN.md §9.1): that raises `ConfigError`. Test and integration accept
    all four roots, stamp ``.10`` on NIRs, and only warn on a wrong key,
    because official test samples have wrong keys (DOMAIN.md §1.2, §9.6).

    There is no NIA test root, so every environment stamps NIAs with ``.9``
    (a decision: the alternative is to refuse NIAs outside production).
    Pass ``nir_oid=INS_NIR_DEMO_OID`` to stamp demonstration identities.
    """

    environment: Environment
    accepted_roots: frozenset[str] = field(default=frozenset())
    strict_key: bool | None = None
    nir_oid: str | None = None
    nia_oid: str = INS_NIA_OID

    def __post_init__(self) -> None:
        env = Environment(self.environment)
        object.__setattr__(self, "environment", env)
        if not self.accepted_roots:
            object.__setattr__(self, "accepted_roots", _default_roots(env))
        if self.strict_key is None:
            object.__setattr__(self, "strict_key", env is Environment.PRODUCTION)
        if self.nir_oid is None:
            nir_oid = INS_NIR_OID if env is Environment.PRODUCTION else INS_NIR_TEST_OID
            object.__setattr__(self, "nir_oid", nir_oid)
        problems = []
        unknown = self.accepted_roots - INS_ROOTS
        if unknown:
            problems.append(f"ins policy: {len(unknown)} accepted root(s) are not INS roots")
        if env is Environment.PRODUCTION and self.accepted_roots & {INS_NIR_TEST_OID, INS_NIR_DEMO_OID}:
            problems.append("ins policy: production must not accept the INS test or demo roots")
        for kind, oid in ((InsKind.NIR, self.nir_oid), (InsKind.NIA, self.nia_oid)):
            authority = authority_for_oid(oid or "")
            if authority is None or authority.kind is not kind:
                problems.append(f"ins policy: {kind.value} stamping OID is not an INS-{kind.value} root")
            elif oid not in self.accepted_roots:
                problems.append(f"ins policy: {kind.value} stamping OID is not an accepted root")
        if problems:
            raise ConfigError(problems)

    @classmethod
    def for_environment(cls, environment: Environment | str) -> InsPolicy:
        """The default policy of an environment (``production``, ``integration`` or ``test``)."""
        return cls(environment=Environment(environment))

    def accepts_root(self, oid: str) -> bool:
        """True when ``oid`` is an INS root this environment accepts."""
        return oid in self.accepted_roots

    def oid_for(self, kind: InsKind | str) -> str:
        """The OID to stamp on a new INS of this kind in this environment."""
        oid = self.nir_oid if InsKind(kind) is InsKind.NIR else self.nia_oid
        assert oid is not None  # set in __post_init__
        return oid

    def check(self, matricule: str, oid: str) -> InsVerdict:
        """Check an INS (matricule + OID) against this policy; never raises."""
        errors: list[InsProblem] = []
        warnings: list[InsProblem] = []
        if oid not in INS_ROOTS:
            errors.append(InsProblem.UNKNOWN_ROOT)
        elif oid not in self.accepted_roots:
            errors.append(InsProblem.ROOT_REFUSED)
        nir = check_nir(matricule)
        if nir.problem is not None:
            if nir.acceptable(strict_key=bool(self.strict_key)):
                warnings.append(nir.problem)
            else:
                errors.append(nir.problem)
        return InsVerdict(tuple(errors), tuple(warnings))

    def require(self, matricule: str, oid: str, *, location: str = "") -> InsVerdict:
        """Like `check`, but raise `ValidationError` (naming problems, not values) on errors."""
        verdict = self.check(matricule, oid)
        if verdict.errors:
            names = ", ".join(p.value for p in verdict.errors)
            # HL7 table 0357: 103 "table value not found" for the OID, 102 "data type error" for the number.
            code = "103" if verdict.errors[0] in (InsProblem.UNKNOWN_ROOT, InsProblem.ROOT_REFUSED) else "102"
            reason = f"INS refused ({self.environment.value}): {names}"
            raise ValidationError(reason, code=code, location=location)
        return verdict


def ins_oid(kind: InsKind | str, environment: Environment | str) -> str:
    """The OID to stamp for ``kind`` in ``environment`` under the default policy."""
    return InsPolicy.for_environment(environment).oid_for(kind)
