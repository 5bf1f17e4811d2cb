"""INSi sandbox: the national identity service played with fixture identities on the test OID.

Served on the hub's HTTP port under ``/sandboxes/<name>/``: ``POST search``
takes an :class:`InsiQuery` as JSON and answers ``{"outcome": "00"|"01"|"02",
"identity": {...}}``; ``GET identities`` lists the fixtures. Like the real
service it refuses an incomplete query (HTTP 400), and never answers with an
identity when the traits match several people (outcome 02). Both routes take
the admin API's token (a viewer's is enough; each call is audited,
:mod:`hub.admin.sandbox_guard`), since an INS found from traits is identity data. The fixtures are
synthetic people whose NIR keys are valid, on INS-NIR *test* (OID .10), which
production refuses.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from hub.errors import ValidationError
from hub.identity.insi import InsiIdentity, InsiOutcome, InsiQuery, InsiResult, traits_from_json, traits_to_json
from hub.identity.nir import check_nir
from hub.identity.oids import INS_NIR_TEST_OID
from hub.registry import ComponentConfig, register

__all__ = ["DEFAULT_FIXTURES", "InsiSandbox", "InsiSandboxConfig"]

#: Synthetic people (valid NIR keys, test OID). Twins share a birth date and a birth name.
DEFAULT_FIXTURES: list[dict[str, str]] = [
    {"ins": "279035121518989", "birth_name": "PAT-TROIS", "first_birth_given_name": "DOMINIQUE",
     "birth_given_names": "DOMINIQUE", "birth_date": "1979-03-28", "sex": "F", "birthplace_code": "51215"},
    {"ins": "185077505612323", "birth_name": "EXEMPLE", "first_birth_given_name": "CAMILLE",
     "birth_given_names": "CAMILLE ANDRE", "birth_date": "1985-07-12", "sex": "M", "birthplace_code": "75056"},
    {"ins": "290017505600145", "birth_name": "JUMEAU", "first_birth_given_name": "LEA",
     "birth_given_names": "LEA MARIE", "birth_date": "1990-01-01", "sex": "F", "birthplace_code": "75056"},
    {"ins": "290017505600244", "birth_name": "JUMEAU", "first_birth_given_name": "LOU",
     "birth_given_names": "LOU MARIE", "birth_date": "1990-01-01", "sex": "F", "birthplace_code": "75056"},
]  # fmt: skip


class InsiSandboxConfig(ComponentConfig):
    oid: str = Field(INS_NIR_TEST_OID, description="OID of the INS returned (the INS-NIR test root by default).")
    identities: list[dict[str, str]] = Field(
        default_factory=lambda: list(DEFAULT_FIXTURES),
        description="Fixture people: ins, birth_name, first_birth_given_name, birth_given_names, birth_date "
        "(YYYY-MM-DD), sex (M/F), birthplace_code (INSEE).",
    )


@register("sandbox", "insi", config=InsiSandboxConfig)
class InsiSandbox:
    """INSi stand-in answering searches by traits from fixture identities."""

    #: POST routes that only read (a viewer's token is enough; hub.admin.sandbox_guard).
    http_reads = frozenset({"search"})

    def __init__(self, name: str = "insi", config: InsiSandboxConfig | None = None) -> None:
        self.name = name
        self.config = config or InsiSandboxConfig()
        self.people = [
            InsiIdentity(ins=p["ins"], oid=self.config.oid, traits=traits_from_json(p)) for p in self.config.identities
        ]
        for person in self.people:
            if not check_nir(person.ins).valid:
                raise ValidationError("INSi sandbox fixture with an invalid NIR")
        self.queries = 0

    async def start(self) -> None:
        """Nothing to open: it answers on the hub's HTTP port."""

    async def stop(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "sandbox": self.name,
            "kind": "insi",
            "search": f"/sandboxes/{self.name}/search",
            "identities": len(self.people),
        }

    def search(self, query: InsiQuery) -> InsiResult:
        found = [p for p in self.people if query.matches(p.traits)]
        if not found:
            return InsiResult(InsiOutcome.NOT_FOUND)
        if len(found) > 1:
            return InsiResult(InsiOutcome.SEVERAL)
        return InsiResult(InsiOutcome.FOUND, found[0])

    def http_routes(self) -> list[tuple[str, str, Any]]:
        return [("POST", "search", self._search), ("GET", "identities", self._list)]

    async def _search(self, request: web.Request) -> web.Response:
        self.queries += 1
        try:
            query = InsiQuery.from_json(await request.json())
        except (ValueError, KeyError, TypeError, ValidationError):
            return web.json_response({"error": "query needs birth_name, given_names, sex, birth_date"}, status=400)
        result = self.search(query)
        body: dict[str, Any] = {"outcome": result.outcome.value}
        if result.identity:
            body["identity"] = {
                "ins": result.identity.ins,
                "oid": result.identity.oid,
                **traits_to_json(result.identity.traits),
            }
        return web.json_response(body)

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response([{"ins": p.ins, "oid": p.oid, **traits_to_json(p.traits)} for p in self.people])
