"""The user's own Python steps (`python: module:function`): checked at load, run with the built-in contract."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.config import load_config
from hub.content_types import ContentType
from hub.errors import ConfigError, MappingError
from hub.message import Message
from hub.pipeline import Pipeline
from hub.userstep import add_python_path

MODULE = '''
from pydantic import BaseModel, ConfigDict
from hub.errors import MappingError
from hub.message import Message

class Suffix(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str

def add_suffix(message: Message, *, config: Suffix) -> Message:
    return message.derive(body=message.body + config.text.encode())

def refuse(message: Message) -> Message:
    raise MappingError("PID-3 has no IPP")

def crash(message: Message) -> Message:
    raise KeyError("SECRET-PATIENT-NAME")

def nothing(message: Message) -> Message:
    return None

def untyped(message, *, config):
    return message
'''

BASE = """\
listeners:
  in: {type: mllp, listen: 127.0.0.1:0}
endpoints:
  out: {type: mllp, endpoint: 127.0.0.1:1}
routes: [routes/*.yaml]
python_path: [steps]
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    package = tmp_path / "steps" / f"site_{tmp_path.name.replace('-', '_')}"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "labs.py").write_text(MODULE)
    (tmp_path / "routes").mkdir()
    (tmp_path / "hub.yaml").write_text(BASE)
    add_python_path([tmp_path / "steps"])
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith(package.name)]:
        del sys.modules[name]
    sys.path.remove(str((tmp_path / "steps").resolve()))


def route(site: Path, steps: str) -> Path:
    (site / "routes" / "r.yaml").write_text(f"route: r\nfrom: in\nsteps:\n{steps}to:\n  - destination: out\n")
    return site / "hub.yaml"


def pkg(site: Path) -> str:
    return f"site_{site.name.replace('-', '_')}.labs"


def problems(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(config)
    return info.value.problems


def test_a_user_step_with_settings_runs_as_a_built_in_one(site: Path) -> None:
    steps = f"  - python: {{function: '{pkg(site)}:add_suffix', settings: {{text: 'ZZZ|1'}}}}\n"
    settings = load_config(route(site, steps))
    [r] = settings.routes
    out = Pipeline(r.step_specs(), route="r").apply(Message.new(b"MSH|x", content_type=ContentType.HL7V2))
    assert out.body == b"MSH|xZZZ|1"


def test_refusals_and_crashes_reject_with_a_reason_naming_the_route(site: Path) -> None:
    message = Message.new(b"MSH|x", content_type=ContentType.HL7V2)
    with pytest.raises(MappingError, match=r"^route r, step python: PID-3 has no IPP$"):
        Pipeline([("python", f"{pkg(site)}:refuse")], route="r").apply(message)
    with pytest.raises(MappingError) as exc:
        Pipeline([("python", f"{pkg(site)}:crash")], route="r").apply(message)
    assert exc.value.reason.endswith(".crash raised KeyError") and "SECRET" not in exc.value.reason
    with pytest.raises(MappingError, match="returned no Message"):
        Pipeline([("python", f"{pkg(site)}:nothing")], route="r").apply(message)


@pytest.mark.parametrize(
    ("steps", "line", "text"),
    [
        ("  - python: nosuch_module_xyz:f\n", 4, "steps.0.python: cannot import 'nosuch_module_xyz' (ModuleNotFound"),
        ("  - python: PKG:missing\n", 4, "steps.0.python: 'PKG' has no function 'missing'"),
        ("  - python: PKG:untyped\n", 4, "steps.0.python: PKG:untyped: its `config` parameter must be annotated"),
        ("  - python: {function: 'PKG:refuse', settings: {a: 1}}\n", 4, "steps.0.python: PKG:refuse takes no settings"),
        ("  - python: 'not a function'\n", 4, "steps.0.python.function: String should match pattern"),
        ("  - python:\n      function: 'PKG:add_suffix'\n      settings:\n        txt: x\n", 7,
         "steps.0.python.settings.txt: unknown key"),
    ],
)  # fmt: skip
def test_hub_check_imports_the_module_and_validates_the_settings(site: Path, steps: str, line: int, text: str) -> None:
    got = problems(route(site, steps.replace("PKG", pkg(site))))
    assert any(p.startswith(f"{site}/routes/r.yaml:{line}: {text.replace('PKG', pkg(site))}") for p in got), got

