"""The CLI on the audit trail: commands on the store audited with their real outcome (those through the admin
API are audited by the API); export, offline verification, and a rewrite by someone with database access but
without the key found."""

from __future__ import annotations

import getpass
import json
import sqlite3
from datetime import datetime
from pathlib import Path

from hub.store.base import AUDIT_GENESIS, audit_hash
from tests.conftest import free_port
from tests.hubkit import hub_cli, running_hub, write_config


async def test_cli_store_commands_are_audited_and_the_export_verifies_offline(tmp_path: Path) -> None:
    config = write_config(tmp_path, peer_port=1)
    cfg = ["--config", str(config)]
    assert (await hub_cli("purge", "--older-than-days", "30", "--yes", *cfg)).returncode == 0
    export = await hub_cli("audit-chain", "export", *cfg)
    assert export.returncode == 0
    entries = [json.loads(line) for line in export.stdout.splitlines()]
    who = f"cli:{getpass.getuser()}"
    assert [(e["action"], e["outcome"], e["actor"], e["role"]) for e in entries] == [
        ("cli_purge", "started", who, "cli"),
        ("cli_purge", "ok", who, "cli"),
        ("cli_audit-chain_export", "started", who, "cli"),
    ]
    assert json.loads(entries[0]["detail"])["older_than_days"] == 30
    assert all(e["hash"].startswith("hmac-sha256:k1:") for e in entries)
    assert (tmp_path / "audit-key").stat().st_mode & 0o777 == 0o600  # made once, beside the database
    assert (tmp_path / "audit-key").read_bytes().strip() not in (tmp_path / "hub.db").read_bytes()

    trail = tmp_path / "trail.jsonl"
    trail.write_text(export.stdout)
    ok = await hub_cli("audit-chain", "verify", "--file", str(trail), *cfg)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    trail.write_text(export.stdout.replace('"ok"', '"failed"', 1))  # the purge made to look failed
    bad = await hub_cli("audit-chain", "verify", "--file", str(trail), *cfg)
    assert bad.returncode == 1 and json.loads(bad.stdout)["first_bad_id"] == 2


async def test_cli_commands_through_the_api_are_audited_under_the_tokens_user(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, peer_port=1, http={"listen": f"127.0.0.1:{port}"})
    async with running_hub(config) as hub:
        listing = await hub_cli("messages", "--patient-key", "P1@HOSP", "--json", "--config", str(config))
        assert listing.returncode == 0, listing.stderr
        entries = await hub.store.list_audit(limit=10)  # type: ignore[union-attr]
    assert [(e.action, e.actor, e.outcome) for e in entries][:1] == [("search_patient", "bootstrap", "ok")]


async def test_a_chain_rewritten_without_the_key_does_not_verify(tmp_path: Path) -> None:
    config = write_config(tmp_path, peer_port=1)
    cfg = ["--config", str(config)]
    assert (await hub_cli("purge", "--older-than-days", "30", "--yes", *cfg)).returncode == 0
    assert (await hub_cli("audit-chain", "verify", *cfg)).returncode == 0
    # Someone with write access to the database re-hashes every entry the way an unkeyed chain is made.
    db = sqlite3.connect(tmp_path / "hub.db", isolation_level=None)
    prev = AUDIT_GENESIS
    rows = db.execute("SELECT id, at, actor, role, action, message_id, target, detail, outcome FROM audit ORDER BY id")
    for number, at, actor, role, action, message_id, target, detail, outcome in rows.fetchall():
        digest = audit_hash(prev, number, datetime.fromisoformat(at), actor, role, action, message_id, target, detail,
                            outcome)  # fmt: skip
        db.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, number))
        prev = digest
    db.close()
    report = await hub_cli("audit-chain", "verify", *cfg)
    assert report.returncode == 1
    assert json.loads(report.stdout)["problem"] == "the newest entry is not keyed"
