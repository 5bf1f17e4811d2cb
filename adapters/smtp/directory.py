"""The mailbox directory: mailboxes created, suspended and deleted at run time (admin API, `hub mailbox`).

Hosted mailboxes come from two places, and a mailbox lives in exactly one:

* the config (``mailboxes:`` of the listeners and the ``mailbox`` endpoint):
  declared in git, changed by a commit and ``hub reload``;
* the directory file (``mailbox_directory``, JSON): created through the admin
  API; every port reads it again when it changes (its mtime), so a suspension
  closes IMAP, submission and delivery at the next login or mail.

Writes take an exclusive ``flock`` on ``<file>.lock``, write a temporary file,
fsync it and rename it over the directory (atomic on POSIX): a reader sees
the old or the new directory, never half of one.

:func:`annuaire_rows` gives the list in the shape the national directory
(Annuaire santé) takes a mailbox in: the type ``PER`` / ``ORG`` / ``APP`` of
the ANS FHIR API "messagerie sécurisée" (``mailbox-mss-type``), the address,
and the owner's national identifier (idNat_PS or idNat_Struct, with its
identifier system). The exact publication format of the operator's declaration
was not read in a primary source (docs/mssante-clients.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapters.smtp.common import HostedMailbox

__all__ = ["DirectoryError", "MailboxDirectory", "annuaire_rows", "open_directory"]

#: Annuaire santé / ANS FHIR API "messagerie sécurisée" mailbox types (mailbox-mss-type: PER|ORG|APP|CAB).
ANNUAIRE_TYPE = {"personal": "PER", "organisational": "ORG", "application": "APP"}
#: Identifier systems of the owner's idNat: professionals (idNat_PS, 1.2.250.1.71.4.2.1) and structures
#: (idNat_Struct, 1.2.250.1.71.4.2.2) -- DOMAIN.md §3.
ID_NAT_PS, ID_NAT_STRUCT = "urn:oid:1.2.250.1.71.4.2.1", "urn:oid:1.2.250.1.71.4.2.2"


_open: dict[Path, MailboxDirectory] = {}


def open_directory(path: str | Path | None) -> MailboxDirectory | None:
    """The directory for a file (one object per file in a process, shared by every port), or None."""
    if not path:
        return None
    key = Path(path).resolve()
    if key not in _open:
        _open[key] = MailboxDirectory(key)
    return _open[key]


class DirectoryError(Exception):
    """A change the directory refuses (the text is safe to show: no mail content)."""


class MailboxDirectory:
    """Mailboxes in one JSON file, re-read when it changes; changes serialised by a file lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._boxes: dict[str, HostedMailbox] = {}

    def mailboxes(self) -> dict[str, HostedMailbox]:
        """The directory's mailboxes by address (re-read when the file changed)."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        with self._lock:
            if mtime != self._mtime:
                self._boxes = self._read()
                self._mtime = mtime
            return self._boxes

    def _read(self) -> dict[str, HostedMailbox]:
        data = json.loads(self.path.read_text(encoding="utf-8"))
        return {b["address"]: HostedMailbox.model_validate(b) for b in data.get("mailboxes", [])}

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, HostedMailbox]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            boxes = self._read() if self.path.exists() else {}
            yield boxes
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            body = {"mailboxes": [b.model_dump(exclude_defaults=True) for b in sorted(boxes.values(), key=_key)]}
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(body, f, ensure_ascii=False, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)  # password hashes may be in it
            os.replace(tmp, self.path)

    def create(self, box: HostedMailbox, *, declared: set[str]) -> HostedMailbox:
        """Add a mailbox; refused when the address exists here or in the config (`declared`)."""
        with self._editing() as boxes:
            if box.address in boxes or box.address in declared:
                raise DirectoryError("a mailbox with this address exists")
            boxes[box.address] = box
        return box

    def update(self, address: str, **changes: Any) -> HostedMailbox:
        """Change fields of a directory mailbox (status, quota...), validated again."""
        address = address.lower()
        with self._editing() as boxes:
            if address not in boxes:
                raise DirectoryError("no such mailbox in the directory")
            boxes[address] = HostedMailbox.model_validate({**boxes[address].model_dump(), **changes})
            return boxes[address]

    def delete(self, address: str) -> HostedMailbox:
        address = address.lower()
        with self._editing() as boxes:
            if address not in boxes:
                raise DirectoryError("no such mailbox in the directory")
            return boxes.pop(address)


def _key(box: HostedMailbox) -> str:
    return box.address


def annuaire_rows(boxes: list[HostedMailbox]) -> list[dict[str, Any]]:
    """One row per active mailbox, as the Annuaire santé publishes a mailbox (type, address, owner idNat)."""
    rows = []
    for box in sorted(boxes, key=_key):
        if box.status != "active":
            continue
        system = ID_NAT_PS if box.kind == "personal" else ID_NAT_STRUCT
        rows.append(
            {
                "mailbox_mss_type": ANNUAIRE_TYPE[box.kind],
                "mailbox_mss": box.address,
                "owner_identifier_system": system if box.owner else "",
                "owner_identifier": box.owner,
                "description": box.organization.split("^", 1)[0] if box.organization else "",
            }
        )
    return rows
