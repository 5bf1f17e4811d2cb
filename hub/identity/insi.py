"""The INSi resolver interface: ask the national identity service for an INS by strict traits.

The real téléservice INSi is SOAP over mutual TLS with a CPx/structure
certificate; it answers one of three outcomes (INSi "CR" codes): ``00`` one
identity found, ``01`` none, ``02`` several (the query must be narrowed).
A found identity carries the INS (matricule + OID) and the reference strict
traits the local identity must take (RNIV: récupérée once retrieved).

The hub talks to INSi only through :class:`InsiResolver`, so the sandbox
(``adapters/sandboxes/insi.py``, fixture identities on the test OID) and a
future client for the real service are interchangeable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any, Protocol

from hub.identity.names import name_key
from hub.identity.traits import Sex, StrictTraits

__all__ = [
    "InsiIdentity",
    "InsiOutcome",
    "InsiQuery",
    "InsiResolver",
    "InsiResult",
    "traits_from_json",
    "traits_to_json",
]


class InsiOutcome(enum.StrEnum):
    FOUND = "00"
    NOT_FOUND = "01"
    SEVERAL = "02"


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class InsiQuery:
    """A search by traits, as INSi takes it: birth name, given name(s), sex, birth date, optional birthplace."""

    birth_name: str
    given_names: str
    sex: Sex
    birth_date: dt.date
    birthplace_code: str | None = None

    def __repr__(self) -> str:
        return "InsiQuery(<masked>)"

    def matches(self, traits: StrictTraits) -> bool:
        """INSi-style match: same birth name, sex and birth date, first given name among the list, same place."""
        given = set(name_key(self.given_names).split())
        candidates = set(name_key(traits.birth_given_names or traits.first_birth_given_name).split())
        return (
            name_key(self.birth_name) == name_key(traits.birth_name)
            and self.sex == traits.sex
            and self.birth_date == traits.birth_date
            and bool(given)
            and given <= candidates | {name_key(traits.first_birth_given_name)}
            and (self.birthplace_code is None or self.birthplace_code == traits.birthplace_code)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "birth_name": self.birth_name,
            "given_names": self.given_names,
            "sex": self.sex.value,
            "birth_date": self.birth_date.isoformat(),
            "birthplace_code": self.birthplace_code,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InsiQuery:
        return cls(
            birth_name=str(data["birth_name"]),
            given_names=str(data["given_names"]),
            sex=Sex.parse(str(data["sex"])),
            birth_date=dt.date.fromisoformat(str(data["birth_date"])),
            birthplace_code=data.get("birthplace_code") or None,
        )


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class InsiIdentity:
    ins: str
    oid: str
    traits: StrictTraits

    def __repr__(self) -> str:
        return f"InsiIdentity(oid={self.oid!r}, <masked>)"


@dataclasses.dataclass(frozen=True, slots=True)
class InsiResult:
    outcome: InsiOutcome
    identity: InsiIdentity | None = None


class InsiResolver(Protocol):
    async def resolve(self, query: InsiQuery) -> InsiResult:
        """Ask INSi; raise hub.errors.Retryable when the service cannot answer now."""


def traits_to_json(traits: StrictTraits) -> dict[str, str]:
    """Strict traits as plain strings (the identity registry stores them this way)."""
    return {
        "birth_name": traits.birth_name,
        "first_birth_given_name": traits.first_birth_given_name,
        "birth_given_names": traits.birth_given_names,
        "birth_date": traits.birth_date.isoformat(),
        "sex": traits.sex.value,
        "birthplace_code": traits.birthplace_code,
    }


def traits_from_json(data: dict[str, Any]) -> StrictTraits:
    return StrictTraits(
        birth_name=str(data["birth_name"]),
        first_birth_given_name=str(data["first_birth_given_name"]),
        birth_given_names=str(data.get("birth_given_names", "")),
        birth_date=dt.date.fromisoformat(str(data["birth_date"])),
        sex=Sex.parse(str(data["sex"])),
        birthplace_code=str(data["birthplace_code"]),
    )
