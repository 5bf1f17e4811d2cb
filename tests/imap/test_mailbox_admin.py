"""Mailbox administration through the admin API: create, suspend, resume, delete, export; audited; live on
IMAP, submission and the MTA port."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.sandboxes.mssante_peer import MssantePeer
from adapters.sandboxes.psc import PscSandbox
from hub import cli
from hub.runtime import Hub
from tests.admin.adminkit import NAMES, TOKENS, Api, admin_section
from tests.conftest import free_port
from tests.hubkit import hub_cli, running_hub, running_peer, wait_until
from tests.imap.imapkit import DOCTOR_ID, ImapSetup, imap_hub_config, inbox, login_bearer
from tests.imap.test_imap_access import refused
from tests.smtp.smtpkit import DOCTOR, HUB_DOMAIN

pytestmark = pytest.mark.usefixtures("needs_dovecot")

NEW = f"dr.durand@{HUB_DOMAIN}"
DURAND_ID = "810000000002"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, ImapSetup, dict[str, Api]]]:
    setup = ImapSetup(tmp_path)
    config = imap_hub_config(setup, dpi_port=1, admin=admin_section())
    async with running_peer(), running_hub(config) as running, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{running.http_port}"
        apis = {role: Api(http, base, token) for role, token in TOKENS.items()}
        yield running, setup, apis


async def delete(api: Api, path: str, expect: int) -> Any:
    async with api.session.delete(api.base + path, headers=api._headers()) as r:
        data = await r.json(content_type=None)
        assert r.status == expect, (r.status, data)
        return data


async def test_a_created_mailbox_receives_opens_is_suspended_and_deleted(
    hub: tuple[Hub, ImapSetup, dict[str, Api]],
) -> None:
    running, setup, api = hub
    body = {"address": NEW, "kind": "personal", "owner": DURAND_ID, "quota_bytes": 5_000_000, "retention_days": 365}
    await api["operator"].post("/api/mailboxes", body, expect=403)  # admins only
    created = await api["admin"].post("/api/mailboxes", body, expect=201)
    assert created["source"] == "directory" and created["status"] == "active"
    await api["admin"].post("/api/mailboxes", body, expect=409)  # exists
    await api["admin"].post("/api/mailboxes", {**body, "address": DOCTOR}, expect=409)  # declared in the config

    # The peer operator can now write to it, and Dr Durand's PSC token opens it over IMAP.
    peer = running.sandboxes["mssante_peer"]
    psc = running.sandboxes["psc"]
    assert isinstance(peer, MssantePeer) and isinstance(psc, PscSandbox)
    code, _ = await peer.send_mail([NEW], peer.sample_mail([NEW]))
    assert code == 250
    token = psc.issue(DURAND_ID)

    async def count() -> int:
        return len(await asyncio.to_thread(lambda: inbox(login_bearer(setup, NEW, token))))

    await wait_until(count, timeout=10)

    # Suspended: no login, and mail to it is refused.
    await api["admin"].post(f"/api/mailboxes/{NEW}/suspend", {"reason": "departure"})
    assert await asyncio.to_thread(refused, lambda: login_bearer(setup, NEW, token))
    code, reply = await peer.send_mail([NEW], peer.sample_mail([NEW]))
    assert code == 550 and "5.2.1" in reply
    listed = {m["address"]: m for m in (await api["viewer"].get("/api/mailboxes"))["mailboxes"]}
    assert listed[NEW]["status"] == "suspended" and listed[DOCTOR]["source"] == "config"
    assert "password_hash" not in listed[NEW]

    await api["admin"].post(f"/api/mailboxes/{NEW}/resume", {})
    assert await count() == 1
    await delete(api["admin"], f"/api/mailboxes/{DOCTOR}", expect=409)  # the config's: changed in git
    await delete(api["admin"], f"/api/mailboxes/{NEW}", expect=200)
    await delete(api["admin"], f"/api/mailboxes/{NEW}", expect=404)
    assert await asyncio.to_thread(refused, lambda: login_bearer(setup, NEW, token))

    # Every change is in the audit trail, with who made it (and the refused attempt).
    trail = (await api["admin"].get("/api/audit", limit=50))["items"]
    actions = [(e["action"], e["actor"], e["outcome"]) for e in trail if e["action"].startswith("mailbox_")]
    assert ("mailbox_create", "oscar", "denied") in actions
    assert {a for a, who, outcome in actions if who == "ada" and outcome == "ok"} == {
        "mailbox_create", "mailbox_suspend", "mailbox_resume", "mailbox_delete"}  # fmt: skip
    assert (await api["admin"].get("/api/audit/verify"))["ok"] is True


async def test_the_annuaire_export_lists_active_mailboxes_with_type_and_owner(
    hub: tuple[Hub, ImapSetup, dict[str, Api]],
) -> None:
    _, _, api = hub
    await api["admin"].post("/api/mailboxes", {"address": NEW, "kind": "personal", "owner": DURAND_ID}, expect=201)
    await api["viewer"].get("/api/mailboxes/annuaire", expect=403)
    rows = {r["mailbox_mss"]: r for r in (await api["operator"].get("/api/mailboxes/annuaire"))["rows"]}
    assert rows[NEW] == {
        "mailbox_mss_type": "PER", "mailbox_mss": NEW, "owner_identifier_system": "urn:oid:1.2.250.1.71.4.2.1",
        "owner_identifier": DURAND_ID, "description": "",
    }  # fmt: skip
    assert rows[DOCTOR]["owner_identifier"] == DOCTOR_ID
    assert {r["mailbox_mss_type"] for r in rows.values()} == {"PER", "ORG", "APP"}
    await api["admin"].post(f"/api/mailboxes/{NEW}/suspend", {})
    rows = {r["mailbox_mss"] for r in (await api["operator"].get("/api/mailboxes/annuaire"))["rows"]}
    assert NEW not in rows  # a suspended mailbox is not published
    doc = await api["viewer"].get("/api/openapi.json")
    assert "/api/mailboxes/{address}/suspend" in doc["paths"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`hub ...` in this process (what the script would print and return), without a Python start per call."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


async def test_the_hub_mailbox_command_goes_through_the_admin_api(tmp_path: Path) -> None:
    setup = ImapSetup(tmp_path)
    port = free_port()
    config = imap_hub_config(setup, dpi_port=1, admin=admin_section(), http={"listen": f"127.0.0.1:{port}"})
    async with running_hub(config) as hub:
        common = ("--config", str(config), "--token", TOKENS["admin"])
        # Once as a script runs it; then in this process (the same code, without a Python start per call).
        made = await hub_cli("mailbox", "create", NEW, "--kind", "personal", "--owner", DURAND_ID, "--json", *common)
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["address"] == NEW
        again = await asyncio.to_thread(run_cli, "mailbox", "create", NEW, "--kind", "personal", *common)
        assert again.returncode == 1 and "409" in again.stderr
        suspended = await asyncio.to_thread(run_cli, "mailbox", "suspend", NEW, "--reason", "leave", *common)
        assert suspended.returncode == 0
        listed = await asyncio.to_thread(run_cli, "mailbox", "list", "--json", *common)
        rows = {r["address"]: r for r in map(json.loads, listed.stdout.splitlines())}
        assert rows[NEW]["status"] == "suspended" and rows[DOCTOR]["source"] == "config"
        viewer = await asyncio.to_thread(
            run_cli, "mailbox", "delete", NEW, "--config", str(config), "--token", TOKENS["viewer"]
        )
        assert viewer.returncode == 1 and "403" in viewer.stderr
        annuaire = await asyncio.to_thread(run_cli, "mailbox", "annuaire", *common)
        assert annuaire.returncode == 0 and NEW not in annuaire.stdout and DOCTOR in annuaire.stdout
        # Every action of the command is in the audit trail with the token's user, refusals included.
        assert hub.store is not None
        trail = {(e.action, e.actor, e.outcome, e.target) for e in await hub.store.list_audit(limit=100)}
        assert ("mailbox_create", NAMES["admin"], "ok", NEW) in trail
        assert ("mailbox_suspend", NAMES["admin"], "ok", NEW) in trail
        assert ("mailbox_delete", NAMES["viewer"], "denied", f"/api/mailboxes/{NEW}") in trail  # refused: its path
    gone = await asyncio.to_thread(run_cli, "mailbox", "list", *common)
    assert gone.returncode == 3  # the hub is stopped
