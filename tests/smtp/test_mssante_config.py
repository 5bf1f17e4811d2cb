"""The shipped MSSanté demo config (`make run CONFIG=config/mssante/hub.yaml`) passes `hub check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hub.config import load_config
from tests.conftest import ROOT

CONFIG = ROOT / "config" / "mssante" / "hub.yaml"


def test_mssante_demo_config_passes_hub_check() -> None:
    hub = Path(sys.executable).with_name("hub")
    result = subprocess.run([str(hub), "check", "--config", str(CONFIG)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    settings = load_config(CONFIG)
    assert sorted(r.route for r in settings.routes) == sorted(p.stem for p in (CONFIG.parent / "routes").glob("*.yaml"))
    assert {e.type for e in settings.hub.listeners.values()} == {"smtp_mta", "smtp_submission"}
    assert settings.hub.sandboxes["mssante_peer"].type == "mssante_peer"
