"""The INSi sandbox over real HTTP, through the resolver interface the hub uses."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import aiohttp
import yaml

from adapters.insi.http import HttpInsiResolver
from hub.identity.insi import InsiOutcome, InsiQuery
from hub.identity.oids import INS_NIR_TEST_OID
from hub.identity.traits import Sex
from tests.hubkit import running_hub, write_config
from tests.sandboxauth import admin_headers, admin_token


def query(name: str, given: str, born: str, sex: str = "F", place: str | None = None) -> InsiQuery:
    return InsiQuery(
        birth_name=name,
        given_names=given,
        sex=Sex.parse(sex),
        birth_date=dt.date.fromisoformat(born),
        birthplace_code=place,
    )


async def test_insi_sandbox_finds_refuses_and_tells_twins_apart(tmp_path: Path) -> None:
    config = write_config(tmp_path, peer_port=1, sandboxes={"insi": {"type": "insi"}})
    async with running_hub(config) as hub:
        url = f"http://127.0.0.1:{hub.http_port}/sandboxes/insi/search"
        insi = HttpInsiResolver(url, token=admin_token(hub))
        found = await insi.resolve(query("Pat-Trois", "dominique", "1979-03-28"))
        assert found.outcome is InsiOutcome.FOUND and found.identity is not None
        assert (found.identity.ins, found.identity.oid) == ("279035121518989", INS_NIR_TEST_OID)
        assert found.identity.traits.birthplace_code == "51215"
        assert "279035121518989" not in repr(found)
        # Twins: same birth name and date, told apart by the given name.
        lea = await insi.resolve(query("JUMEAU", "LEA", "1990-01-01"))
        lou = await insi.resolve(query("JUMEAU", "LOU", "1990-01-01"))
        assert lea.identity and lou.identity and lea.identity.ins != lou.identity.ins
        # Without a given name that tells them apart: several, and no identity given.
        both = await insi.resolve(query("JUMEAU", "LEA LOU", "1990-01-01"))
        assert both.outcome is InsiOutcome.NOT_FOUND
        assert (await insi.resolve(query("JUMEAU", "MARIE", "1990-01-01"))).outcome is InsiOutcome.SEVERAL
        assert (await insi.resolve(query("PAT-TROIS", "DOMINIQUE", "1979-03-29"))).outcome is InsiOutcome.NOT_FOUND
        assert (await insi.resolve(query("PAT-TROIS", "DOMINIQUE", "1979-03-28", sex="M"))).identity is None
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json={"birth_name": "X"}, headers=admin_headers(hub)) as resp,
        ):
            assert resp.status == 400
        sandbox = hub.sandboxes["insi"]
        assert sandbox.queries == 8
        assert yaml.safe_dump(sandbox.describe())


async def test_hub_identity_insi_asks_the_configured_sandbox(tmp_path: Path) -> None:
    import json

    from tests.hubkit import hub_cli

    config = write_config(tmp_path, peer_port=1, sandboxes={"insi": {"type": "insi"}})
    async with running_hub(config) as hub:
        url = f"http://127.0.0.1:{hub.http_port}/sandboxes/insi/search"
        found = await hub_cli(
            "identity",
            "insi",
            "--birth-name",
            "PAT-TROIS",
            "--given-names",
            "DOMINIQUE",
            "--sex",
            "F",
            "--birth-date",
            "1979-03-28",
            "--url",
            url,
            "--config",
            str(config),
        )
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["ins"] == "279035121518989"
        twins = await hub_cli(
            "identity",
            "insi",
            "--birth-name",
            "JUMEAU",
            "--given-names",
            "MARIE",
            "--sex",
            "F",
            "--birth-date",
            "1990-01-01",
            "--url",
            url,
            "--config",
            str(config),
        )
        assert twins.returncode == 2 and json.loads(twins.stdout) == {"outcome": "02"}
