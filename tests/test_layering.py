"""The layering of ARCHITECTURE.md, checked on every run: the import-linter contracts of pyproject.toml.

Imports go adapters -> mappings -> hub and adapters -> hub; the hub reaches adapters and mappings only
through its registry. The first test checks the tree as it is; the others break a copy of it on purpose
(one bad import each) and check that the same contracts catch it, so the check is known to be able to fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("hub", "adapters", "mappings")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the packages under `cwd` (it puts `cwd` first on sys.path) with its contracts."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(cwd / "pyproject.toml")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_tree_keeps_its_layers() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "broken"),
    [
        ("hub/message.py", "import adapters.mllp.framing", "hub is not allowed to import adapters"),
        ("hub/pipeline.py", "from mappings.hl7v2 import er7", "hub is not allowed to import mappings"),
        ("mappings/tables.py", "import adapters.tls", "mappings is not allowed to import adapters"),
        ("hub/conditions.py", "import lxml.etree", "hub is not allowed to import lxml"),
        ("mappings/tables.py", "import aiohttp", "mappings is not allowed to import aiohttp"),
    ],
)
def test_a_bad_import_breaks_a_contract(tmp_path: Path, module: str, bad_import: str, broken: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "console"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    text = target.read_text() + f"\n{bad_import}  # noqa: E402\n"
    target.write_text(text)
    line = text.count("\n")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout
    dotted = re.escape(module.removesuffix(".py").replace("/", "."))
    assert re.search(rf"-\s+{dotted} -> \S+ \(l\.{line}\)", result.stdout), result.stdout  # the added line
