"""The audit trail: who viewed which payload and who acted on what, in a keyed chain in the store.

Every entry's hash covers its own fields and the previous entry's hash
(``hub.store.base.audit_hash``), and ids follow each other without gaps, so
editing, deleting or reordering an entry is detected by :func:`verify_chain`
at the first entry it touches. The hash is an HMAC-SHA-256 (RFC 2104) whose
key is kept outside the database (``audit.key`` / ``audit.key_file``): someone
who can write to the database but does not hold the key cannot rewrite the
chain so that it verifies again. Each hash names its key
(``hmac-sha256:<key id>:<hex>``), so rotating the key is: a new ``key_id`` and
key, the old one moved to ``previous_keys``. Entries written before the chain
was keyed (plain SHA-256) verify as such, but only before the first keyed
entry, and the newest entry must be keyed: the hub appends ``audit_keyed`` at
start when it is not. Removing the *newest* entries cannot be seen from the
table alone: compare the head (id and hash, logged with each action as
``audit_appended``) with a copy kept elsewhere, e.g. ``hub audit-chain export``.

Entries never hold a payload: the action, the message id, a target
(destination, review) and a small detail (filters, counts, ids).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from hub.admin.auth import Principal
from hub.store import AuditEvent, AuditKey, AuditRecord, AuditStore
from hub.store.base import AUDIT_GENESIS, AUDIT_HMAC_PREFIX

__all__ = [
    "AuditKeys", "ChainChecker", "ChainReport", "audit_key_path", "ensure_keyed_head", "export_line",
    "load_audit_keys", "read_export", "record", "verify_chain", "verify_export",
]  # fmt: skip

log = structlog.get_logger("hub.audit")


@dataclasses.dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    checked: int
    head_id: int
    head_hash: str
    first_bad_id: int | None = None
    problem: str = ""
    keyed: int = 0
    """Entries carrying an HMAC (the others are plain SHA-256 entries from before the chain was keyed)."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class AuditKeys:
    """The key new entries are made with, and every key entries may name (current and retired)."""

    current: AuditKey
    by_id: Mapping[str, AuditKey]


def audit_key_path(config: Any) -> Path:
    """Where the hub keeps the key it made itself when none is configured (outside production)."""
    if config.audit.key_file:
        return Path(config.audit.key_file)
    if config.store.kind == "sqlite":
        return Path(config.store.path).parent / "audit-key"
    return Path("var/audit-key")


def _key_from_file(path: Path, *, create: bool) -> str:
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48) + "\n")
    text = path.read_text().strip().splitlines()
    if not text or len(text[0].strip()) < 32:
        raise ValueError(f"{path}: the audit key must be 32 characters or more")
    return text[0].strip()


def load_audit_keys(config: Any) -> AuditKeys:
    """The audit keys of a HubConfig: `audit.key`, else `audit.key_file`, else a key made once beside the store."""
    audit = config.audit
    secret = audit.key or _key_from_file(audit_key_path(config), create=audit.key_file is None)
    current = AuditKey(audit.key_id, secret.encode())
    by_id = {kid: AuditKey(kid, value.encode()) for kid, value in audit.previous_keys.items()}
    by_id[current.id] = current
    return AuditKeys(current, by_id)


async def ensure_keyed_head(store: AuditStore, *, node: str) -> None:
    """Append `audit_keyed` when the newest entry is not keyed with a key (an older trail, or a rotation)."""
    newest = await store.list_audit(limit=1)
    if newest and (store.audit_key is None or newest[0].key_id != store.audit_key.id):
        await store.append_audit(
            AuditEvent(actor=node, role="system", action="audit_keyed",
                       detail={"key_id": store.audit_key.id if store.audit_key else None})
        )  # fmt: skip


async def record(
    store: AuditStore,
    who: Principal,
    action: str,
    *,
    message_id: str | None = None,
    target: str = "",
    detail: Mapping[str, Any] | None = None,
    outcome: str = "ok",
) -> AuditRecord:
    """Append one entry; raises StoreError when it cannot be kept (callers then refuse to go on)."""
    entry = await store.append_audit(
        AuditEvent(
            actor=who.name, role=who.role, action=action, message_id=message_id, target=target,
            detail=dict(detail or {}), outcome=outcome,
        )
    )  # fmt: skip
    log.info(
        "audit_appended", audit_id=entry.id, head=entry.hash, actor=who.name, action=action,
        message_id=message_id, outcome=outcome,
    )  # fmt: skip
    return entry


class ChainChecker:
    """Checks entries fed in chain order: ids without gaps, links, and each hash with the key it names."""

    def __init__(self, keys: AuditKeys | None) -> None:
        self.keys = keys
        self.prev, self.expected_id, self.checked, self.keyed = AUDIT_GENESIS, 1, 0, 0
        self.failure: ChainReport | None = None

    def feed(self, entry: AuditRecord) -> bool:
        """False (and `failure` set) at the first entry that does not verify."""
        problem = ""
        kid = entry.key_id
        key = self.keys.by_id.get(kid) if (self.keys is not None and kid is not None) else None
        if entry.id != self.expected_id:
            problem = f"entry {self.expected_id} is missing"
        elif entry.prev_hash != self.prev:
            problem = "does not follow the previous entry (prev_hash differs)"
        elif kid is not None and key is None:
            problem = f"made with an unknown audit key {kid!r}"
        elif kid is None and self.keyed:
            problem = "not keyed, after keyed entries: written without the audit key"
        elif entry.hash != entry.expected_hash(key):
            problem = "altered: its hash does not match its content"
        if problem:
            self.failure = self._report(False, first_bad_id=entry.id, problem=problem)
            return False
        self.prev, self.expected_id, self.checked = entry.hash, self.expected_id + 1, self.checked + 1
        self.keyed += kid is not None
        return True

    def _report(self, ok: bool, **kw: Any) -> ChainReport:
        return ChainReport(ok, self.checked, self.expected_id - 1, self.prev, keyed=self.keyed, **kw)

    def report(self) -> ChainReport:
        if self.failure is not None:
            return self.failure
        if self.keys is not None and self.checked and not self.prev.startswith(AUDIT_HMAC_PREFIX):
            # Keyed trails end with a keyed entry (the hub appends one at start): an unkeyed head means the
            # chain was rewritten by someone without the key.
            return self._report(False, first_bad_id=self.expected_id - 1, problem="the newest entry is not keyed")
        return self._report(True)


async def _entries(store: AuditStore, page: int) -> AsyncIterator[AuditRecord]:
    after = 0
    while batch := await store.audit_chain(after_id=after, limit=page):
        for entry in batch:
            yield entry
        after = batch[-1].id


async def verify_chain(store: AuditStore, *, keys: AuditKeys | None = None, page: int = 1000) -> ChainReport:
    """Walk the whole trail in order and check ids, links and hashes (HMACs with `keys`)."""
    checker = ChainChecker(keys)
    async for entry in _entries(store, page):
        if not checker.feed(entry):
            break
    return checker.report()


def export_line(entry: AuditRecord) -> str:
    """One entry as a JSON line, exactly as hashed (detail kept as its stored text), for offline checks."""
    return json.dumps({**dataclasses.asdict(entry), "at": entry.at.isoformat()}, ensure_ascii=False)


def read_export(lines: Iterable[str]) -> Iterable[AuditRecord]:
    for line in lines:
        if line.strip():
            row = json.loads(line)
            yield AuditRecord(**{**row, "at": datetime.fromisoformat(row["at"])})


def verify_export(lines: Iterable[str], keys: AuditKeys | None) -> ChainReport:
    """Check an exported trail (`hub audit-chain export`) offline, as :func:`verify_chain` checks the store."""
    checker = ChainChecker(keys)
    for entry in read_export(lines):
        if not checker.feed(entry):
            break
    return checker.report()
