"""The `hub` command goes through the admin API: same store, roles, and every action in the audit trail."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from hub.cli import build_parser
from tests.admin.adminkit import NAMES, TOKENS, admin_section
from tests.hubkit import MllpClient, adt, hub_cli, mllp_port, running_hub, running_peer, wait_until, write_config


async def test_every_cli_action_is_audited_with_its_user(tmp_path: Path) -> None:
    async with running_peer(ack="AR") as peer:
        config = write_config(tmp_path, peer_port=peer.port, admin=admin_section())
        async with running_hub(config) as hub:
            store = hub.store
            assert store is not None
            client = await MllpClient.connect(mllp_port(hub))
            try:
                await client.send(adt("CLIA1", patient="IPP77"))
            finally:
                await client.close()

            async def dead() -> bool:
                return len(await store.find_deliveries(status="dead")) == 1

            await wait_until(dead, timeout=20)
            peer.ack = "AA"
            token_file = tmp_path / "operator.token"
            token_file.write_text(TOKENS["operator"] + "\n")
            cli = ("--config", str(config))
            as_operator = {"env": {"HUB_TOKEN": TOKENS["operator"]}, "hub": hub}

            # Reads: the failed message by --status dead, since yesterday, by IPP (a patient look-up: audited).
            listed = await hub_cli(
                "messages", *cli, "--json", "--status", "dead", "--since", "yesterday", **as_operator
            )
            assert listed.returncode == 0, listed.stderr
            [row] = [json.loads(line) for line in listed.stdout.splitlines()]
            assert row["control_id"] == "CLIA1" and row["status"] == "failed"
            assert row["deliveries"][0]["status"] == "dead" and row["deliveries"][0]["last_error"].startswith("AR")
            by_ipp = await hub_cli(
                "messages", *cli, "--json", "--ipp", "IPP77", "--token-file", str(token_file), hub=hub
            )
            assert [json.loads(x)["id"] for x in by_ipp.stdout.splitlines()] == [row["id"]]
            found = await hub_cli("messages", *cli, "--json", "--content", "PID-5.1=testnom", **as_operator)
            assert [json.loads(x)["id"] for x in found.stdout.splitlines()] == [row["id"]], found.stderr
            mixed = await hub_cli("messages", *cli, "--content", "TESTNOM", "--ipp", "IPP77", **as_operator)
            assert mixed.returncode == 1 and "--content" in mixed.stderr and "Traceback" not in mixed.stderr
            shown = await hub_cli("show", row["id"], *cli, "--json", "--body", **as_operator)
            assert json.loads(shown.stdout)["body"].startswith("MSH|")
            # The AR as the receiver wrote it, beside what was sent (--sent: operator, audited).
            [delivery] = json.loads(shown.stdout)["deliveries"]
            assert delivery["attempts_log"][0]["reply"]["summary"] == "AR" and "replies" not in delivery
            with_sent = json.loads((await hub_cli("show", row["id"], *cli, "--json", "--sent", **as_operator)).stdout)
            [delivery] = with_sent["deliveries"]
            assert delivery["sent_body"]["text"].startswith("MSH|") and "CLIA1" in delivery["sent_body"]["text"]
            assert [(r["summary"], r["outcome"]) for r in delivery["replies"]] == [("AR", "reject")]
            assert "MSA|AR" in delivery["replies"][0]["text"]
            exported = await hub_cli("export", *cli, "--payloads", "--control-id", "CLIA1", **as_operator)
            [item] = [json.loads(x) for x in exported.stdout.splitlines()]
            assert item["id"] == row["id"] and "PID|" in item["body"]
            folder = tmp_path / "export"
            await hub_cli("export", *cli, "--payloads", "--control-id", "CLIA1", "--dir", str(folder), **as_operator)
            assert sorted(p.name for p in folder.iterdir()) == [f"{row['id']}.hl7", f"{row['id']}.json"]
            assert (folder / f"{row['id']}.hl7").read_bytes().startswith(b"MSH|")

            # Actions: each asks for --yes in a script, then goes through.
            refused = await hub_cli("requeue", *cli, "--all-dead", **as_operator)
            assert refused.returncode == 1 and "--yes" in refused.stderr and "Traceback" not in refused.stderr
            assert len(await store.find_deliveries(status="dead")) == 1
            requeued = await hub_cli("requeue", *cli, "--all-dead", "--yes", **as_operator)
            assert json.loads(requeued.stdout)["requeued"] == 1
            await wait_until(lambda: peer.count == 2, timeout=20)
            replayed = await hub_cli("replay", row["id"], *cli, "--destination", "dpi", "--yes", **as_operator)
            assert json.loads(replayed.stdout)["deliveries"] == 1
            await wait_until(lambda: peer.count == 3, timeout=20)
            paused = await hub_cli("pause", "dpi", *cli, "--yes", **as_operator)
            assert json.loads(paused.stdout)["workers"] == [{"route": "adt", "paused": True}]
            resumed = await hub_cli("resume", "dpi", *cli, **as_operator)
            assert json.loads(resumed.stdout)["workers"] == [{"route": "adt", "paused": False}]

            # A second dead letter, given up for good.
            peer.ack = "AR"
            client = await MllpClient.connect(mllp_port(hub))
            try:
                await client.send(adt("CLIA2", patient="IPP78"))
            finally:
                await client.close()
            await wait_until(dead, timeout=20)
            discarded = await hub_cli("discard", *cli, "--all-dead", "--yes", **as_operator)
            assert json.loads(discarded.stdout)["discarded"] == 1, discarded.stderr
            assert await store.find_deliveries(status="dead") == []
            peer.ack = "AA"

            stats = await hub_cli("stats", *cli, "--json", **as_operator)
            rows = [json.loads(x) for x in stats.stdout.splitlines()]
            [queue] = [r for r in rows if r["item"] == "queue"]
            assert queue["destination"] == "dpi" and queue["state"] == "running"
            totals = {(r["route"], r["destination"]): r for r in rows if r["item"] == "totals"}
            assert totals[("adt", "dpi")]["dead"] == 2 and totals[("adt", "dpi")]["delivered"] == 2
            assert totals[("", "mllp_in")]["received"] == 2
            assert len([r for r in rows if r["item"] == "hour"]) == 24

            # A viewer may not act: a one-line error, and the refusal is in the audit trail too.
            denied = await hub_cli("replay", row["id"], *cli, "--yes", env={"HUB_TOKEN": TOKENS["viewer"]}, hub=hub)
            assert denied.returncode == 1 and "needs operator" in denied.stderr and "Traceback" not in denied.stderr

            audit = await hub_cli("audit", *cli, "--json", "--limit", "50", env={"HUB_TOKEN": TOKENS["admin"]}, hub=hub)
            entries = [json.loads(x) for x in audit.stdout.splitlines()]
            done = {(e["action"], e["actor"], e["outcome"]) for e in entries}
            operator = NAMES["operator"]
            for action in (
                "search_patient", "search_content", "view_payload", "requeue", "replay", "pause", "resume", "discard",
            ):  # fmt: skip
                assert (action, operator, "ok") in done, action
            assert ("replay", NAMES["viewer"], "denied") in done
            assert [e["action"] for e in entries].count("view_payload") == 3  # show --body, two exports with payloads


async def test_usage_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    bad_time = await hub_cli("messages", "--since", "the day before", "--url", "http://127.0.0.1:9")
    assert bad_time.returncode == 2 and "cannot read 'the day before' as a time" in bad_time.stderr
    assert "Traceback" not in bad_time.stderr
    bad_status = await hub_cli("messages", "--status", "lost", "--url", "http://127.0.0.1:9")
    assert bad_status.returncode == 2 and "invalid choice" in bad_status.stderr
    down = await hub_cli("messages", "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach the hub" in down.stderr and "Traceback" not in down.stderr
    config = write_config(tmp_path, peer_port=1)
    port_zero = await hub_cli("dead", "--config", str(config))
    assert port_zero.returncode == 1 and "--url" in port_zero.stderr
    # Every option of every command says what it is for (read from the parser itself: no process per command).
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        for full, p in [(name, sub)] + [(f"{name} {n}", q) for a in nested for n, q in a.choices.items()]:
            assert not _options_without_help(p.format_help()), (full, _options_without_help(p.format_help()))
    assert len(commands) >= 19

def _options_without_help(text: str) -> list[str]:
    """Options in an argparse --help whose description is missing (neither on their line nor the next)."""
    lines = text.split("options:", 1)[1].splitlines() if "options:" in text else []
    missing = []
    for i, line in enumerate(lines):
        if re.match(r"^  -", line) and len(re.split(r"\s{2,}", line.strip())) < 2:
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if not re.match(r"^\s{6,}\S", following):
                missing.append(line.strip())
    return missing

async def test_a_config_this_shell_cannot_fully_load_still_finds_the_hub(tmp_path: Path) -> None:
    import yaml

    async with running_peer() as peer:
        config = write_config(tmp_path, peer_port=peer.port)
        async with running_hub(config) as hub:
            # The operator's shell lacks the hub's secrets (here the store's DSN): the CLI needs only where the
            # hub listens and its bootstrap token, and reads them from the sections it can.
            doc = yaml.safe_load(config.read_text())
            doc["http"]["listen"] = f"127.0.0.1:{hub.http_port}"
            doc["store"]["dsn"] = "${HUB_I14_DSN_ONLY_THE_HUB_HAS}"
            partial = tmp_path / "operator.yaml"
            partial.write_text(yaml.safe_dump(doc))
            listed = await hub_cli("messages", "--config", str(partial), "--json")
            assert listed.returncode == 0, listed.stderr
            checked = await hub_cli("check", "--config", str(partial))
            assert checked.returncode == 1 and "HUB_I14_DSN_ONLY_THE_HUB_HAS" in checked.stderr
