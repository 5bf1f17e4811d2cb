"""Content search through the admin API over HTTP: operators only, audited without the text, time-bounded."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from hub.message import utcnow
from tests.admin.adminkit import admin_hub
from tests.hubkit import MllpClient, adt, mllp_port, wait_until


def named(control_id: str, name: str) -> bytes:
    return adt(control_id).replace(b"TESTNOM^TESTPRENOM", f"{name}^JEAN".encode())


async def test_operators_search_payloads_audited_without_the_text(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as (hub, _dpi, apis):
        client = await MllpClient.connect(mllp_port(hub))
        try:
            for control_id, name in (("CS1", "DUPONT"), ("CS2", "DUPONTEL"), ("CS3", "MARTIN")):
                await client.send(named(control_id, name))  # the ACK comes after the commit
        finally:
            await client.close()
        viewer, operator, admin = apis["viewer"], apis["operator"], apis["admin"]
        # indexed after the commit, shortly after the ACK
        await wait_until(lambda: _found(operator, "DUPONT", 2), timeout=10)

        await viewer.get("/api/search/content", expect=403, text="DUPONT")
        page = await operator.get("/api/search/content", text="dupont")
        assert sorted(i["control_id"] for i in page["items"]) == ["CS1", "CS2"] and not page["truncated"]
        page = await operator.get("/api/search/content", text="DUPONT", limit=1)
        assert [i["control_id"] for i in page["items"]] == ["CS2"] and page["truncated"]  # newest first
        # an HL7 v2 field condition: the whole component, not a substring
        page = await operator.get("/api/search/content", text="PID-5.1=dupont")
        assert [i["control_id"] for i in page["items"]] == ["CS1"]
        assert (await operator.get("/api/search/content", text="PID-5.2=DUPONT"))["items"] == []

        # bounded in time: a window that excludes them, a window too long, a window upside down
        past = utcnow() - timedelta(days=3)
        page = await operator.get("/api/search/content", text="DUPONT", since=past.isoformat(),
                                  until=(past + timedelta(days=1)).isoformat())  # fmt: skip
        assert page["items"] == []
        await operator.get(
            "/api/search/content", expect=400, text="DUPONT", since=(past - timedelta(days=30)).isoformat()
        )
        await operator.get("/api/search/content", expect=400, text="DUPONT", since=utcnow().isoformat(),
                           until=past.isoformat())  # fmt: skip
        await operator.get("/api/search/content", expect=400, text="DU")

        trail = (await admin.get("/api/audit", limit=50))["items"]
        searches = [e for e in trail if e["action"] == "search_content"]
        assert {e["outcome"] for e in searches} == {"ok", "denied"}
        assert all("DUPONT" not in str(e).upper() for e in searches)
        fields = [e["detail"] for e in searches if e["detail"].get("kind") == "field"]
        assert sorted(d["field"] for d in fields) == ["PID-5.1", "PID-5.2"] and {d["text"] for d in fields} == {
            "6 chars"
        }
        assert any(e["actor"] == "vera" and e["outcome"] == "denied" for e in searches)


async def _found(api: object, text: str, count: int) -> bool:
    page = await api.get("/api/search/content", text=text)  # type: ignore[attr-defined]
    return len(page["items"]) == count and page["index_pending"] == 0


async def test_a_search_says_when_the_index_lags_behind_the_commits(tmp_path: Path) -> None:
    # The indexer lets commits gather for an hour: the ACKed message is stored, not yet indexed.
    store = {"kind": "sqlite", "path": str(tmp_path / "hub.db"), "index_delay_secs": 3600}
    async with admin_hub(tmp_path, store=store) as (hub, _dpi, apis):
        await hub.store._indexer.caught_up.wait()  # type: ignore[union-attr]  # the catch-up at start is done
        client = await MllpClient.connect(mllp_port(hub))
        try:
            await client.send(named("LAG1", "LAGUERRE"))
        finally:
            await client.close()
        page = await apis["operator"].get("/api/search/content", text="LAGUERRE")
        assert page["items"] == [] and page["index_pending"] == 1 and page["index_pending_since"]
        # a window that ends before the pending message: nothing of it can be missing
        until = utcnow() - timedelta(hours=1)
        page = await apis["operator"].get("/api/search/content", text="LAGUERRE", until=until.isoformat())
        assert page["index_pending"] == 0 and page["index_pending_since"] is None
        await hub.store.index_content(100)  # type: ignore[union-attr]  # what the indexer does after its delay
        page = await apis["operator"].get("/api/search/content", text="LAGUERRE")
        assert [i["control_id"] for i in page["items"]] == ["LAG1"] and page["index_pending"] == 0
