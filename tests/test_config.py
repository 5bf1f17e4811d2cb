"""Config and routes: every shipped file passes `hub check`; every mistake is reported as file:line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from hub import registry
from hub.config import HubConfig, RouteConfig, load_config
from hub.errors import ConfigError
from tests.conftest import ROOT

SHIPPED_CONFIGS = sorted((ROOT / "config").glob("**/*.yaml"))
HUB = Path(sys.executable).with_name("hub")


def test_the_default_config_runs_every_shipped_route() -> None:
    settings = load_config(ROOT / "config" / "hub.yaml")
    assert sorted(r.route for r in settings.routes) == sorted(p.stem for p in (ROOT / "routes").glob("*.yaml"))
    assert {e.type for e in settings.hub.listeners.values()} == {"mllp", "fhir", "smtp_mta", "smtp_submission", "imap"}


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "config")))
def test_every_shipped_config_and_route_passes_hub_check(path: Path) -> None:
    result = subprocess.run([str(HUB), "check", "--config", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")
    settings = load_config(path)
    # Convention: a route file is named after its route.
    assert settings.routes and all(settings.route_files[r.route].stem == r.route for r in settings.routes)


def write(folder: Path, hub_yaml: str, routes: dict[str, str] | None = None) -> Path:
    (folder / "routes").mkdir(exist_ok=True)
    (folder / "hub.yaml").write_text(hub_yaml)
    for name, text in (routes or {}).items():
        (folder / "routes" / name).write_text(text)
    return folder / "hub.yaml"


BASE = """\
listeners:
  in:
    type: mllp
    listen: 127.0.0.1:0
endpoints:
  out:
    type: mllp
    endpoint: 127.0.0.1:1
routes: [routes/*.yaml]
"""
ROUTE = """\
route: r1
from: in
to:
  - destination: out
"""


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_a_valid_minimal_config_loads(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, BASE, {"r.yaml": ROUTE}))
    assert [r.route for r in settings.routes] == ["r1"]
    assert settings.hub.store.kind == "sqlite"


def test_unknown_keys_are_errors_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "colour: blue\n", {"r.yaml": ROUTE + "    retries: 3\n"})
    [p] = problems(path)
    assert p == f"{path}:10: colour: unknown key"
    path = write(tmp_path, BASE, {"r.yaml": ROUTE + "    retries: 3\n"})
    [p] = problems(path)
    assert p == f"{tmp_path}/routes/r.yaml:5: to.0.retries: unknown key"


def test_adapter_settings_are_checked_against_the_adapter_model(tmp_path: Path) -> None:
    path = write(
        tmp_path, BASE.replace("endpoint: 127.0.0.1:1", "endpoint: 127.0.0.1:1\n    ack_timeout: 3"), {"r.yaml": ROUTE}
    )
    assert problems(path) == [f"{path}:9: endpoints.out.ack_timeout: unknown key"]
    path = write(tmp_path, BASE.replace("type: mllp\n    endpoint", "type: pigeon\n    endpoint"), {"r.yaml": ROUTE})
    [p] = problems(path)
    assert p.startswith(f"{path}:7: endpoints.out.type: unknown outbound adapter 'pigeon'")


def test_route_cross_references_are_checked(tmp_path: Path) -> None:
    bad = """\
route: r1
from: nowhere
steps:
  - hl7v2_validate
  - make_coffee
to:
  - destination: out
  - destination: missing
"""
    path = write(tmp_path, BASE, {"r.yaml": bad, "s.yaml": ROUTE})
    got = problems(path)
    rfile = tmp_path / "routes" / "r.yaml"
    assert f"{rfile}:2: from: unknown listener 'nowhere'" in got
    assert any(p.startswith(f"{rfile}:5: steps.1: unknown step 'make_coffee'") for p in got)
    assert f"{rfile}:8: to.1.destination: unknown endpoint 'missing'" in got
    assert any(p.startswith(f"{tmp_path / 'routes' / 's.yaml'}:1: route 'r1' is also defined in") for p in got)


def test_yaml_errors_missing_env_and_bad_values(tmp_path: Path) -> None:
    path = write(tmp_path, BASE, {"r.yaml": "route: r1\nfrom: [in\n"})
    [p] = problems(path)
    assert p.startswith(f"{tmp_path / 'routes' / 'r.yaml'}:3: invalid YAML")
    path = write(tmp_path, "store:\n  kind: postgres\n  dsn: ${HUB_TEST_SURELY_UNSET_VAR}\n" + BASE, {"r.yaml": ROUTE})
    assert problems(path) == [f"{path}:1: environment variable HUB_TEST_SURELY_UNSET_VAR is not set"]
    path = write(tmp_path, BASE, {"r.yaml": ROUTE + "    max_in_flight: 0\n"})
    [p] = problems(path)
    assert p.startswith(f"{tmp_path / 'routes' / 'r.yaml'}:5: to.0.max_in_flight: Input should be greater")
    path = write(tmp_path, "store:\n  kind: postgres\n" + BASE, {"r.yaml": ROUTE})
    [p] = problems(path)
    assert p.startswith(f"{path}:1: store: Value error, a postgres store needs a dsn")


def test_env_references_are_interpolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_TEST_PEER", "127.0.0.1:2999")
    path = write(
        tmp_path,
        BASE.replace("127.0.0.1:1", "${HUB_TEST_PEER}").replace(
            "listen: 127.0.0.1:0", "listen: ${HUB_TEST_LISTEN:-127.0.0.1:2577}"
        ),
        {"r.yaml": ROUTE},
    )
    settings = load_config(path)
    assert settings.endpoint_config("out").endpoint == "127.0.0.1:2999"  # type: ignore[attr-defined]
    assert settings.listener_config("in").listen == "127.0.0.1:2577"  # type: ignore[attr-defined]


def _models() -> list[type[BaseModel]]:
    registry.load_builtin()
    seen: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [HubConfig, RouteConfig]
    todo += [
        c.config
        for k in ("inbound", "outbound", "sandbox")
        for n in registry.names(k)  # type: ignore[misc]
        if (c := registry.get(k, n)) is not None
    ]  # type: ignore[arg-type]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
                for inner in (arg, *getattr(arg, "__args__", ())):
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        todo.append(inner)
    return seen


def test_every_config_field_has_a_description() -> None:
    missing = [
        f"{m.__name__}.{name}"
        for m in _models()
        for name, f in m.model_fields.items()
        if not f.description and m.__name__ != "ComponentEntry"
    ]
    assert missing == []
    assert len(_models()) >= 8


def test_one_config_two_stores_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = ROOT / "config" / "hub.yaml"
    for name in ("HUB_STORE", "HUB_PG_DSN", "HUB_NODE"):
        monkeypatch.delenv(name, raising=False)
    sqlite = load_config(shipped)
    assert sqlite.hub.store.kind == "sqlite" and sqlite.hub.store.path == "var/hub.db"
    monkeypatch.setenv("HUB_STORE", "postgres")
    with pytest.raises(ConfigError) as missing:
        load_config(shipped)  # no DSN: never a database picked by default
    assert any("HUB_PG_DSN" in p for p in missing.value.problems)
    monkeypatch.setenv("HUB_PG_DSN", "postgresql://hub@db.example:5432/hub")
    monkeypatch.setenv("HUB_NODE", "hub-2")
    pg = load_config(shipped)
    assert (pg.hub.store.kind, pg.hub.store.dsn, pg.hub.store.schema_, pg.hub.node) == (
        "postgres", "postgresql://hub@db.example:5432/hub", "hub", "hub-2",
    )  # fmt: skip
    # The same endpoints and routes on both: one list, nothing to keep alike by hand.
    assert pg.hub.endpoints == sqlite.hub.endpoints and [r.route for r in pg.routes] == [r.route for r in sqlite.routes]
