"""Test kit for IMAP (Dovecot) and client authentication: the MSSanté test hub plus the `imap` listener,
the Pro Santé Connect sandbox, professionals' cards, and imaplib clients over TLS."""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import os
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from adapters.imap.dovecot import dovecot_binary
from adapters.smtp.common import hash_password
from hub.devpki import issue, new_ca, write_cert, write_key
from tests.conftest import free_port
from tests.smtp.smtpkit import APP_MAILBOX, DOCTOR, HUB_DOMAIN, Setup, hub_config

ORG_MAILBOX = f"secretariat.cardio@{HUB_DOMAIN}"
DOCTOR_ID = "810000000001"  # the PSC sandbox's Claire MARTIN: owner of DOCTOR, member of ORG_MAILBOX
OTHER_ID = "810000000002"  # Paul DURAND: a professional with no mailbox here
NURSE_ID = "810000000003"  # Lucie BERNARD: member of ORG_MAILBOX only
ORG_PASSWORD = "org-demo-password"


@pytest.fixture(autouse=False)
def needs_dovecot() -> None:
    """Skip without Dovecot (with the reason), except in CI (CI=true), where it must run."""
    if dovecot_binary() is None:
        reason = "Dovecot is not installed (Debian dovecot-imapd; `make test` installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


_ORG_HASH = hash_password(ORG_PASSWORD)


class ImapSetup(Setup):
    """The MSSanté test setup plus IMAP and PSC ports."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.psc_port = free_port()

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.psc_port}"

    def card(self, cn: str, *, trusted: bool = True) -> tuple[Path, Path]:
        """A client certificate named `cn` (a CPS card, an application's certificate), from the test CA or not."""
        if trusted:
            ca_cert = x509.load_pem_x509_certificate((self.pki / "ca.pem").read_bytes())
            ca_key = serialization.load_pem_private_key((self.pki / "ca.key").read_bytes(), password=None)
            ca: Any = (ca_cert, ca_key)
        else:
            ca = new_ca("Untrusted CA")
        cert, key = issue(ca, cn, [f"{cn}.clients.test"])
        tag = "" if trusted else "-untrusted"
        paths = self.folder / f"{cn}{tag}.pem", self.folder / f"{cn}{tag}.key"
        write_cert(paths[0], cert)
        write_key(paths[1], key)
        return paths

    def client_context(self, card: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if card:
            ctx.load_cert_chain(str(card[0]), str(card[1]))
        return ctx


def mailboxes() -> list[dict[str, Any]]:
    return [
        {"address": APP_MAILBOX, "kind": "application", "owner": "11234567890", "certificates": ["dpi.hub.test"]},
        {"address": f"labo@{HUB_DOMAIN}", "kind": "application"},
        {"address": DOCTOR, "kind": "personal", "owner": DOCTOR_ID, "certificates": [DOCTOR_ID]},
        {
            "address": ORG_MAILBOX, "kind": "organisational", "owner": "11234567890", "members": [DOCTOR_ID, NURSE_ID],
            "certificates": [DOCTOR_ID], "password_hash": _ORG_HASH, "quota_bytes": 10_000_000, "retention_days": 30,
        },
    ]  # fmt: skip


def imap_hub_config(
    setup: ImapSetup, *, dpi_port: int, password_kinds: list[str] | None = None, **hub: Any
) -> Path:
    """The MSSanté test hub with an `imap` listener, the `psc` sandbox, one mailbox list and one mailbox
    directory for all."""
    path = hub_config(setup, dpi_port=dpi_port, **hub)
    config = yaml.safe_load(path.read_text())
    boxes = mailboxes()
    directory = str(setup.folder / "mailbox-directory.json")
    for name in ("smtp_mta", "smtp_submission"):
        config["listeners"][name]["mailboxes"] = boxes
        config["listeners"][name]["mailbox_directory"] = directory
    config["endpoints"]["mailbox"]["mailboxes"] = boxes
    config["endpoints"]["mailbox"]["mailbox_directory"] = directory
    config["listeners"]["imap"] = {
        "type": "imap",
        "listen": f"127.0.0.1:{setup.imap_port}",
        "listen_tls": f"127.0.0.1:{setup.imaps_port}",
        "hostname": "localhost",
        "tls": setup.tls(),
        "mailbox_dir": str(setup.mailbox_dir),
        "run_dir": str(setup.folder / "dovecot"),
        "mailboxes": boxes,
        "mailbox_directory": directory,
        "access": {"oidc": {"issuer": setup.issuer}, "password_kinds": password_kinds or []},
        "required": True,
        "failure_delay_secs": 0,
        "auth_penalty": False,
    }
    config["listeners"]["smtp_submission"]["access"] = config["listeners"]["imap"]["access"]
    config["sandboxes"]["psc"] = {"type": "psc", "listen": f"127.0.0.1:{setup.psc_port}"}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- imaplib clients (blocking: call them through asyncio.to_thread) ---------------------------------------------
def imaps(setup: ImapSetup, card: tuple[Path, Path] | None = None) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", setup.imaps_port, ssl_context=setup.client_context(card), timeout=10)


def login_external(setup: ImapSetup, card: tuple[Path, Path], authzid: str = "") -> imaplib.IMAP4_SSL:
    """SASL EXTERNAL (RFC 4422 appendix A) with a client certificate; `authzid` names the mailbox to open."""
    client = imaps(setup, card)
    try:
        client.authenticate("EXTERNAL", lambda _challenge: authzid.encode())
    except BaseException:
        client.shutdown()
        raise
    return client


def login_bearer(setup: ImapSetup, user: str, token: str, mechanism: str = "OAUTHBEARER") -> imaplib.IMAP4_SSL:
    """SASL OAUTHBEARER (RFC 7628 §3.1) or XOAUTH2 with an access token."""
    if mechanism == "OAUTHBEARER":
        first = f"n,a={user},\x01auth=Bearer {token}\x01\x01".encode()
    else:
        first = f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    answers = iter([first])
    client = imaps(setup)
    try:
        # After a refusal the server sends an error challenge; RFC 7628 §3.2.3: the client answers with %x01.
        client.authenticate(mechanism, lambda _challenge: next(answers, b"\x01"))
    except BaseException:
        client.shutdown()
        raise
    return client


def inbox(client: imaplib.IMAP4) -> list[EmailMessage]:
    """Every message of the INBOX, parsed, then log out."""
    try:
        typ, data = client.select("INBOX", readonly=True)
        assert typ == "OK", data
        count = int(data[0] or 0)
        found = []
        for n in range(1, count + 1):
            typ, parts = client.fetch(str(n), "(RFC822)")
            assert typ == "OK"
            raw = next(p[1] for p in parts if isinstance(p, tuple))
            found.append(email.message_from_bytes(raw, policy=email.policy.default))
        return found  # type: ignore[return-value]
    finally:
        client.logout()


def attachment(mail: EmailMessage, name: str) -> bytes:
    for part in mail.iter_attachments():
        if part.get_filename() == name:
            return bytes(part.get_content())
    raise AssertionError(f"no attachment {name}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
