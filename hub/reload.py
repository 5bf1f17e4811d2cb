"""Changing routes without a restart: `hub reload`, SIGHUP, ``POST /api/config/reload``.

A reload reads the configuration again and validates it exactly as `hub
check` does (:func:`hub.config.load_config`: every file, every route, every
table and user step); a configuration that fails changes nothing and the
reload says why. What a reload applies: routes (their filters, steps and
destination policies), the steps' tables and modules, endpoints (a new or
changed endpoint's adapter is started first; the workers of its queues switch
to it; the replaced one stops once no worker of a removed route still drains
through it) and listeners (a removed or changed one stops: its open
connections close, a message being committed still commits and its sender,
which got no ACK, resends it; a new or changed one starts). What it refuses,
with the reason: changes to sandboxes, the store, the HTTP server, and to
listeners served on the HTTP port (a FHIR intake: its routes are mounted once).

Applying is atomic for new messages: routing switches to the new routes in
one step on the event loop, after every new pipeline was built. Deliveries
already stored keep going: a (route, destination) whose policy is unchanged
keeps its worker, which runs the new steps from its next claim; a changed
policy gets a new worker; a removed route keeps its worker until what it
holds is delivered, and receives nothing new. Every reload, applied or
refused, is recorded in the audit trail with the unified diff of the route
and table files, before anything is applied (no audit entry, no change).
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub import registry
from hub.config import Settings, load_config
from hub.errors import ConfigError

if TYPE_CHECKING:
    from hub.runtime import Hub

__all__ = ["ReloadResult", "entry_changes", "prepare_reload", "route_texts"]

# Parts of hub.yaml a reload may change; any other difference needs a restart.
_RELOADABLE = {"routes", "route_tests", "python_path", "listeners", "endpoints"}


@dataclasses.dataclass
class ReloadResult:
    applied: bool
    reason: str = ""
    problems: list[str] = dataclasses.field(default_factory=list)
    added: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    changed: list[str] = dataclasses.field(default_factory=list)
    endpoints: list[str] = dataclasses.field(default_factory=list)
    """Endpoints added (``+name``), changed (``~name``: a new adapter, its queues' workers switched) or removed."""
    listeners: list[str] = dataclasses.field(default_factory=list)
    """Listeners started (``+``), restarted with their new settings (``~``) or stopped (``-``)."""
    diff: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def route_texts(settings: Settings) -> dict[str, str]:
    """The text of every route file the config's `routes` globs match, and of the tables beside them, by path.

    Read from disk (not from the parsed routes), so that a reload refused by the check still records what
    changed.
    """
    texts: dict[str, str] = {}
    for pattern in settings.hub.routes:
        for name in sorted(glob.glob(str(settings.path.parent / pattern))):
            file = Path(name)
            texts[str(file)] = _read(file)
            for table in sorted(file.parent.glob("tables/*.csv")):
                texts[str(table)] = _read(table)
    return texts


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _diff(old: dict[str, str], new: dict[str, str]) -> str:
    out: list[str] = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        out += difflib.unified_diff(
            (a or "").splitlines(),
            (b or "").splitlines(),
            fromfile=path if a is not None else "/dev/null",
            tofile=path if b is not None else "/dev/null",
            lineterm="",
        )
    return "\n".join(out)


def _fixed_parts(settings: Settings) -> dict[str, Any]:
    dumped = settings.hub.model_dump(mode="json")
    return {k: v for k, v in dumped.items() if k not in _RELOADABLE}


def prepare_reload(hub: Hub, path: str | Path | None = None) -> tuple[ReloadResult, Settings | None]:
    """Validate the configuration at `path` (default: the running one) as `hub check` does.

    Returns the result so far (the diff of the route files, or why the reload is refused) and the new
    settings when they can be applied.
    """
    old = hub.settings
    diff = _diff(hub.route_snapshot, route_texts(old))
    try:
        new = load_config(path or old.path)
    except ConfigError as exc:
        refused = ReloadResult(False, "the new configuration does not pass hub check", problems=exc.problems, diff=diff)
        return refused, None
    diff = _diff(hub.route_snapshot, route_texts(new))
    fixed_old, fixed_new = _fixed_parts(old), _fixed_parts(new)
    if fixed_old != fixed_new:
        keys = sorted(k for k in set(fixed_old) | set(fixed_new) if fixed_old.get(k) != fixed_new.get(k))
        return ReloadResult(False, f"{', '.join(keys)} changed: restart the hub to apply", diff=diff), None
    if served := _http_listeners_changed(old, new):
        reason = f"listener {', '.join(served)} is served on the HTTP port: restart the hub to apply"
        return ReloadResult(False, reason, diff=diff), None
    planned = ReloadResult(True, diff=diff)
    planned.endpoints = entry_changes(old.hub.endpoints, new.hub.endpoints)
    planned.listeners = entry_changes(old.hub.listeners, new.hub.listeners)
    return planned, new


def entry_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Named listeners or endpoints added (``+name``), changed (``~name``) or removed (``-name``)."""
    out = [f"+{n}" if n not in old else f"~{n}" for n in new if n not in old or old[n] != new[n]]
    return out + [f"-{n}" for n in old if n not in new]


def _http_listeners_changed(old: Settings, new: Settings) -> list[str]:
    """Listeners added, changed or removed that mount routes on the hub's HTTP server (e.g. a FHIR intake):
    aiohttp's router is frozen once the server runs, so those need a restart."""
    before, after = old.hub.listeners, new.hub.listeners
    touched = [n for n in set(before) | set(after) if before.get(n) != after.get(n)]
    out = []
    for name in sorted(touched):
        entry = after.get(name) or before[name]
        comp = registry.get("inbound", entry.type)
        if comp is not None and hasattr(comp.factory, "http_routes"):
            out.append(name)
    return out
