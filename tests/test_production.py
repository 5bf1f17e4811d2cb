"""`environment: production` refuses sandboxes, test identities, development certificates and unauthenticated
listeners beyond loopback: `hub check` and `hub serve` both stop before anything listens."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import yaml

from hub.config import load_config
from hub.devpki import make_pki
from tests.conftest import ROOT, free_port
from tests.hubkit import HUB_BIN


def production_copy_of_the_shipped_config(folder: Path) -> Path:
    """config/hub.yaml with environment: production and its development PKI made under `folder`."""
    text = (ROOT / "config" / "hub.yaml").read_text()
    text = text.replace("environment: development\n", "environment: production\n", 1)
    pki = make_pki(folder / "pki")
    text = text.replace("var/pki/", f"{pki.ca.parent}/")
    (folder / "config").mkdir()
    (folder / "config" / "hub.yaml").write_text(text)
    (folder / "routes").symlink_to(ROOT / "routes")
    return folder / "config" / "hub.yaml"


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HUB_BIN), "check", "--config", str(config)], capture_output=True, text=True, check=False, cwd=config.parent
    )


def test_hub_check_refuses_the_development_setup_in_production(tmp_path: Path) -> None:
    result = check(production_copy_of_the_shipped_config(tmp_path))
    assert result.returncode != 0
    errors = result.stderr
    for sandbox in ("dpi_sandbox", "insi", "dmp_sandbox"):
        assert f"sandboxes.{sandbox}: no sandbox runs in production" in errors
    assert "endpoints.dmp.metadata.environment: 'test' accepts test identities" in errors
    assert "audit: give audit.key or audit.key_file" in errors
    assert "endpoints.dmp.tls.cert_file: a development/test certificate" in errors
    assert "endpoints.dmp.tls.ca_file: a development/test certificate" in errors
    # file:line for each, like every other `hub check` problem
    assert all(line.split(":", 2)[1].isdigit() for line in errors.splitlines() if "production" in line)


def minimal(folder: Path, **over: object) -> Path:
    config: dict[str, object] = {
        "environment": "production",
        "audit": {"key": "a-production-audit-key-of-32-chars-or-more"},
        "store": {"kind": "sqlite", "path": str(folder / "hub.db")},
        "http": {"listen": "127.0.0.1:0"},
        "listeners": {"in": {"type": "mllp", "listen": f"127.0.0.1:{free_port()}"}},
        "endpoints": {"out": {"type": "mllp", "endpoint": "127.0.0.1:1"}},
        "routes": ["routes/*.yaml"],
        **over,
    }
    (folder / "routes").mkdir(exist_ok=True)
    route = {"route": "r", "from": "in", "to": [{"destination": "out"}]}
    (folder / "routes" / "r.yaml").write_text(yaml.safe_dump(route))
    (folder / "hub.yaml").write_text(yaml.safe_dump(config))
    return folder / "hub.yaml"


def test_unauthenticated_listeners_beyond_loopback_are_refused_in_production(tmp_path: Path) -> None:
    assert load_config(minimal(tmp_path)).hub.environment == "production"  # loopback only: fine
    open_mllp = minimal(
        tmp_path, listeners={"in": {"type": "mllp", "listen": "0.0.0.0:2575"}}, http={"listen": "0.0.0.0:8080"}
    )
    errors = check(open_mllp).stderr
    assert "listeners.in.listen: MLLP without mutual TLS (tls.require_client_cert) bound beyond loopback" in errors
    assert "http.listen: plain HTTP (admin tokens and any intake in clear) bound beyond loopback" in errors
    assert "sandboxes" not in errors
    fhir = minimal(tmp_path, listeners={"in": {"type": "fhir", "environment": "production"}},
                   http={"listen": "10.1.2.3:8443", "tls": {"cert_file": "x.pem", "key_file": "x.key"}})  # fmt: skip
    assert "http.listen: FHIR intake (in) without mutual TLS" in check(fhir).stderr
    fhir_dev = minimal(tmp_path, listeners={"in": {"type": "fhir"}})
    assert "listeners.in.environment: 'development' accepts test identities" in check(fhir_dev).stderr


async def test_hub_serve_refuses_too_and_listens_on_nothing(tmp_path: Path) -> None:
    sandbox_port = free_port()
    config = minimal(tmp_path, sandboxes={"dpi": {"type": "mllp_receiver", "listen": f"127.0.0.1:{sandbox_port}"}})
    mllp_port = int(yaml.safe_load(config.read_text())["listeners"]["in"]["listen"].rpartition(":")[2])
    proc = await asyncio.create_subprocess_exec(
        str(HUB_BIN), "serve", "--config", str(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode != 0
    assert b"sandboxes.dpi: no sandbox runs in production" in err
    for port in (sandbox_port, mllp_port):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            continue
        writer.close()
        raise AssertionError(f"something listens on {port}")
