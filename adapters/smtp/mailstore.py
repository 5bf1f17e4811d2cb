"""Hosted mailboxes on disk (Maildir), and the `mailbox` destination that delivers into them.

A hosted personal or organisational mailbox is a Maildir folder
(``<mailbox_dir>/<domain>/<local part>/{tmp,new,cur}``): any IMAP server
(Dovecot...) or mail client can serve it to its owner. Delivery follows the
Maildir protocol (write in ``tmp/``, fsync, rename into ``new/``), so a
reader never sees half a message and a crash leaves at worst a file in
``tmp/``. The file name is derived from the hub message id and the mailbox,
so a retried delivery finds its own file and does not deliver twice.

A hub running as root (a container) delivers as the owner of the mailbox root:
Dovecot refuses to touch mail as root, so the ``imap`` listener gives that root
to its ``mail_user``.

The `mailbox` destination takes the ``message/rfc822`` messages a route sends
it (mail received for hosted mailboxes, DSNs) and delivers a copy to each
hosted recipient listed in the metadata keys ``rcpt_local`` and
``rcpt_application`` (an application mailbox keeps a copy of what enters
the engine, so that it can be read over IMAP).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
from pathlib import Path
from typing import Any

from pydantic import Field

from adapters.smtp.common import HostedMailbox, Mailboxes
from adapters.smtp.directory import open_directory
from hub.content_types import ContentType
from hub.errors import Rejected, Retryable
from hub.message import Message
from hub.registry import ComponentConfig, register
from hub.replies import PeerReply, ReplyKind

__all__ = ["MailboxOutbound", "MailboxOutboundConfig", "MailboxStore"]

_SAFE = re.compile(r"^[a-z0-9._%+-]{1,64}$")
_SAFE_DOMAIN = re.compile(r"^[a-z0-9.-]{1,253}$")


class MailboxStore:
    """Maildir folders under one root, one per hosted mailbox."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, address: str) -> Path:
        local, _, domain = address.lower().rpartition("@")
        if not _SAFE.match(local) or not _SAFE_DOMAIN.match(domain) or ".." in domain or domain.startswith("."):
            raise ValueError("not a deliverable mailbox address")
        return self.root / domain / local

    def _owner(self) -> tuple[int, int] | None:
        """Under root, who owns the mailbox root owns what is delivered (the IMAP server's mail user)."""
        if os.geteuid() != 0:
            return None
        st = self.root.stat()
        return (st.st_uid, st.st_gid) if st.st_uid != 0 else None

    def deliver(self, address: str, data: bytes, *, key: str) -> Path:
        """Write one message into a mailbox; idempotent for the same ``key``. Blocking: call in a thread."""
        folder = self.folder(address)
        owner = self._owner()
        for sub in ("tmp", "new", "cur"):
            made = not (folder / sub).exists()
            (folder / sub).mkdir(parents=True, exist_ok=True)
            if made and owner:
                for path in (folder.parent, folder, folder / sub):
                    os.chown(path, *owner)
        digest = hashlib.sha1(f"{key}|{address.lower()}".encode()).hexdigest()[:16]
        name = f"{digest}.{socket.gethostname().replace('/', '_')}"
        final = folder / "new" / name
        if final.exists() or any((folder / "cur").glob(f"{digest}.*")):
            return final
        tmp = folder / "tmp" / name
        with open(tmp, "wb") as f:
            if owner:
                os.fchown(f.fileno(), *owner)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)  # Maildir: the rename is the delivery
        dir_fd = os.open(folder / "new", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    def messages(self, address: str) -> list[bytes]:
        """Every message of a mailbox (new and cur), oldest name first; for tests and tools."""
        folder = self.folder(address)
        files = sorted([*(folder / "new").glob("*"), *(folder / "cur").glob("*")]) if folder.exists() else []
        return [p.read_bytes() for p in files]


class MailboxOutboundConfig(ComponentConfig):
    mailbox_dir: str = Field(description="Root folder of the hosted Maildir mailboxes.")
    mailboxes: list[HostedMailbox] = Field(
        default_factory=list, description="Hosted mailboxes; only these receive."
    )
    mailbox_directory: str | None = Field(
        None, description="JSON file of the mailboxes created through the admin API (`hub mailbox`), re-read on change."
    )


@register("outbound", "mailbox", config=MailboxOutboundConfig)
class MailboxOutbound:
    """Local delivery: a mail (message/rfc822) into the Maildir of each hosted recipient, application ones too."""

    def __init__(self, name: str, config: MailboxOutboundConfig) -> None:
        self.name = name
        self.config = config
        self.store = MailboxStore(config.mailbox_dir)
        self.mailboxes = Mailboxes(config.mailboxes, directory=open_directory(config.mailbox_directory))

    async def start(self) -> None:
        await asyncio.to_thread(self.store.root.mkdir, parents=True, exist_ok=True)

    async def stop(self) -> None:
        return None

    async def send(self, message: Message) -> PeerReply:
        if message.content_type != ContentType.MAIL:
            raise Rejected(f"the mailbox destination takes {ContentType.MAIL}, not {message.content_type}")
        meta = message.metadata
        targets = [a.strip() for a in f"{meta.get('rcpt_local', '')},{meta.get('rcpt_application', '')}".split(",")]
        boxes = [b for a in targets if a and (b := self.mailboxes.get(a)) is not None]
        known = [b.address for b in boxes if b.status == "active"]
        if not known:
            raise Rejected("no hosted mailbox among the recipients")
        # The stored message's id (routes to mailboxes have no steps): a retried delivery finds its own file.
        key = message.id
        try:
            for address in known:
                await asyncio.to_thread(self.store.deliver, address, message.body, key=key)
        except OSError as exc:
            raise Retryable(f"mailbox store unavailable ({type(exc).__name__})") from None
        # No peer answers a local delivery: the reply says what was done, without the addresses.
        return PeerReply.of(ReplyKind.LOCAL, f"stored in {len(known)} mailbox(es)")

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.name, "protocol": "maildir", "mailboxes": len(self.mailboxes.by_address)}
