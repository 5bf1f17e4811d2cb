"""Issue #18, deliverable 3: the sandboxes' HTTP listings and knobs on the hub's port answer only with the admin
API's token, in every environment, and each read of a listing is audited (hub/admin/sandbox_guard.py)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from hub.admin.auth import hash_token
from hub.admin.sandbox_guard import required_role
from tests.hubkit import running_hub, write_config
from tests.integration.test_default_config_flows import default_config_in

VIEWER, OPERATOR = secrets.token_urlsafe(32), secrets.token_urlsafe(32)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def with_tokens(config: Path) -> Path:
    data = yaml.safe_load(config.read_text())
    data.setdefault("admin", {})["tokens"] = [
        {"name": "ward-viewer", "role": "viewer", "token_hash": hash_token(VIEWER)},
        {"name": "ward-operator", "role": "operator", "token_hash": hash_token(OPERATOR)},
    ]
    config.write_text(yaml.safe_dump(data))
    return config


def routes(hub: Any) -> list[tuple[str, str, str, Any]]:
    """(sandbox name, method, path, sandbox) of every route the sandboxes put on the hub's port."""
    return [
        (name, method, path, sandbox)
        for name, sandbox in hub.sandboxes.items()
        for method, path, _ in sandbox.http_routes()
    ]


async def test_every_sandbox_route_needs_a_token_and_listings_are_audited(tmp_path: Path) -> None:
    config, _ = default_config_in(tmp_path)  # every sandbox of the README tour, development environment
    async with running_hub(with_tokens(config)) as hub, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{hub.http_port}"
        found = routes(hub)
        assert {name for name, *_ in found} >= {"dpi_sandbox", "insi", "dmp_sandbox", "mssante_peer"}
        for name, method, path, sandbox in [*found, ("", "GET", "", None)]:
            url = f"{base}/sandboxes/{name}/{path}" if name else f"{base}/sandboxes"
            for headers in ({}, bearer("not-a-token-" + "x" * 30), {"Authorization": "Basic dXNlcjpwdw=="}):
                async with http.request(method, url, headers=headers, json={}) as resp:
                    assert resp.status == 401, (method, url)
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            if name and required_role(sandbox, method, path) == "operator":
                async with http.request(method, url, headers=bearer(VIEWER), json={}) as resp:
                    assert resp.status == 403, (method, url)

        # A viewer reads every listing; each read is in the audit trail under the token's name, path only.
        listings = [(name, path) for name, method, path, _ in found if method == "GET"]
        for name, path in listings:
            async with http.get(f"{base}/sandboxes/{name}/{path}", headers=bearer(VIEWER)) as resp:
                assert resp.status in (200, 404), (name, path)  # 404: ca.pem of a peer with configured certificates
        async with http.get(f"{base}/sandboxes", headers=bearer(VIEWER)) as resp:
            assert resp.status == 200 and {s["sandbox"] for s in await resp.json()} >= {"insi", "dpi_sandbox"}
        async with http.get(f"{base}/sandboxes/dpi_sandbox/messages", headers=bearer(VIEWER)) as resp:
            assert resp.status == 200 and isinstance(await resp.json(), list)
        # INSi's search only reads: a viewer may, and it is audited as a view.
        query = {"birth_name": "PAT-TROIS", "given_names": "DOMINIQUE", "sex": "F", "birth_date": "1979-03-28"}
        async with http.post(f"{base}/sandboxes/insi/search", json=query, headers=bearer(VIEWER)) as resp:
            assert resp.status == 200 and (await resp.json())["identity"]["ins"] == "279035121518989"
        # Knobs change state: an operator's token.
        async with http.post(f"{base}/sandboxes/dpi_sandbox/faults", json={"ack": "AE"}, headers=bearer(OPERATOR)) as r:
            assert r.status == 200 and (await r.json())["ack"] == "AE"
        assert hub.sandboxes["dpi_sandbox"].ack == "AE"

        assert hub.store is not None
        entries = await hub.store.list_audit(limit=500)
        views = {(e.actor, e.target) for e in entries if e.action == "sandbox_view" and e.outcome == "ok"}
        assert {("ward-viewer", f"/sandboxes/{n}/{p}") for n, p in listings} <= views
        assert ("ward-viewer", "/sandboxes/insi/search") in views
        actions = [(e.actor, e.target) for e in entries if e.action == "sandbox_action" and e.outcome == "ok"]
        assert actions == [("ward-operator", "/sandboxes/dpi_sandbox/faults")]
        # Every viewer's attempt at an operator's knob (the 403s above) is in the trail as denied.
        denied = {(e.actor, e.target) for e in entries if e.action == "sandbox_action" and e.outcome == "denied"}
        operator_routes = {
            f"/sandboxes/{name}/{path}" for name, method, path, sandbox in found
            if required_role(sandbox, method, path) == "operator"
        }  # fmt: skip
        assert operator_routes and denied == {("ward-viewer", target) for target in operator_routes}
        # Refused calls ran no handler and wrote no entry under an unknown name.
        assert all(e.actor in ("ward-viewer", "ward-operator") for e in entries if e.action.startswith("sandbox_"))


async def test_sandboxes_refuse_everyone_when_the_admin_api_is_off(tmp_path: Path) -> None:
    config = write_config(tmp_path, peer_port=1, sandboxes={"insi": {"type": "insi"}}, admin={"enabled": False})
    async with running_hub(config) as hub, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{hub.http_port}/sandboxes/insi/identities"
        async with http.get(url) as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert hub.sandboxes["insi"].queries == 0


def readme_tour_sandbox_calls() -> str:
    """The README tour's shell lines that set the token and call a sandbox, continuation lines joined."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text().replace("\\\n", " ")
    keep = [
        line
        for line in text.splitlines()
        if line.startswith(("TOKEN=", "AUTH=")) or (line.startswith("curl ") and "/sandboxes/" in line)
    ]
    return "\n".join(keep)


async def test_the_readme_tour_reads_the_sandboxes_with_the_admin_token(tmp_path: Path) -> None:
    import asyncio

    tour = readme_tour_sandbox_calls()
    assert tour.count("/sandboxes/") >= 5 and tour.startswith("TOKEN=")
    config, _ = default_config_in(tmp_path)  # no admin user: the bootstrap token in var/admin-token, as in the tour
    async with running_hub(config) as hub:
        # Every curl prints only its status; the tour runs from the checkout, where var/ is.
        script = "curl() { command curl -o /dev/null -w '%{http_code}\\n' \"$@\"; }\n" + tour.replace(
            "127.0.0.1:8080", f"127.0.0.1:{hub.http_port}"
        )
        anonymous = "\n".join(line for line in script.splitlines() if not line.startswith(("TOKEN=", "AUTH=")))
        for body, want in ((script, "200"), (anonymous, "401")):
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", body, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            out, err = await proc.communicate()
            codes = out.decode().split()
            assert proc.returncode == 0 and codes == [want] * tour.count("curl "), (codes, err.decode())
