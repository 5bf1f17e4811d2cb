"""YAML loading that remembers where every value came from, for `file:line` errors."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from hub.errors import ConfigError

__all__ = ["Located", "load_located"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Located:
    """A parsed YAML document plus the line of each path inside it."""

    def __init__(self, path: Path, data: Any, lines: dict[tuple[Any, ...], int]) -> None:
        self.path = path
        self.data = data
        self.lines = lines

    def where(self, loc: tuple[Any, ...]) -> str:
        """`file:line` of the deepest known prefix of `loc`."""
        for n in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:n]))
            if line is not None:
                return f"{self.path}:{line}"
        return f"{self.path}:1"


def _interpolate(value: str, missing: list[str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    return _ENV_REF.sub(sub, value)


def load_located(path: Path, *, interpolate: bool = True) -> Located:
    """Parse one YAML file; `${VAR}` and `${VAR:-default}` are replaced from the environment."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}:1: cannot read file ({exc.strerror})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{path}:{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    lines: dict[tuple[Any, ...], int] = {}
    missing: list[str] = []
    loader = yaml.SafeLoader("")

    def build(n: yaml.Node | None, loc: tuple[Any, ...]) -> Any:
        if n is None:
            return None
        lines[loc] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for k, v in n.value:
                key = loader.construct_object(k)
                if key in out:
                    raise ConfigError(f"{path}:{k.start_mark.line + 1}: duplicate key {key!r}")
                lines[(*loc, key)] = k.start_mark.line + 1
                out[key] = build(v, (*loc, key))
                lines[(*loc, key)] = k.start_mark.line + 1
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(v, (*loc, i)) for i, v in enumerate(n.value)]
        value = loader.construct_object(n)
        if interpolate and isinstance(value, str) and "${" in value:
            value = _interpolate(value, missing)
        return value

    data = build(node, ())
    if missing:
        raise ConfigError([f"{path}:1: environment variable {name} is not set" for name in sorted(set(missing))])
    return Located(path, data, lines)
