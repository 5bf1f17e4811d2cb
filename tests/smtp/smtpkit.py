"""Test kit for the MSSanté tests: a hub config with both SMTP ports, the peer sandbox and a fake DPI; SMTP clients.

One test PKI (made by the peer sandbox on start, in ``<tmp>/pki``) plays
IGC-Santé: the peer's certificate and the hub's (``hub.pem``, server and
client use) both chain to it, and each side trusts it. ``make_pki`` from
:mod:`tests.tlskit` gives an *untrusted* CA when a test needs one.
"""

from __future__ import annotations

import io
import ssl
import zipfile
from pathlib import Path
from typing import Any

import aiosmtplib
import yaml

from adapters.smtp.common import hash_password
from adapters.tls import TlsConfig, client_context
from tests.conftest import free_port

HUB_DOMAIN = "hub.mssante.fr"
PEER_DOMAIN = "peer.mssante.fr"
APP_MAILBOX = f"dpi-integration@{HUB_DOMAIN}"
LAB_MAILBOX = f"labo@{HUB_DOMAIN}"
DOCTOR = f"dr.house@{HUB_DOMAIN}"
PRESCRIBER = f"dr.prescripteur@{PEER_DOMAIN}"
USER, PASSWORD = "lps", "correct horse battery staple"
FAST_RETRY = {"max_attempts": 20, "initial_secs": 0.1, "max_secs": 0.5, "jitter": 0.1}

# Computed once: scrypt is deliberately slow.
_PASSWORD_HASH = hash_password(PASSWORD)


class Setup:
    """Where things are for one test: folder, ports, PKI files, mailbox store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pki = folder / "pki"
        self.mta_port = free_port()
        self.submission_port = free_port()
        self.peer_port = free_port()
        self.mailbox_dir = folder / "mailboxes"
        self.trust_file = folder / "trust.txt"

    @property
    def ca(self) -> Path:
        return self.pki / "ca.pem"

    def tls(self) -> dict[str, Any]:
        """The hub's certificate (server and client use) and the trust anchors."""
        return {"cert_file": str(self.pki / "hub.pem"), "key_file": str(self.pki / "hub.key"), "ca_file": str(self.ca)}

    def peer_client_context(self) -> ssl.SSLContext:
        """What the peer operator presents when it connects to the hub (its certificate, the shared CA)."""
        return client_context(
            TlsConfig(ca_file=str(self.ca), cert_file=str(self.pki / "peer.pem"), key_file=str(self.pki / "peer.key"))
        )

    def plain_client_context(self) -> ssl.SSLContext:
        """A client that verifies the hub but shows no certificate (a local LPS on the submission port)."""
        return client_context(TlsConfig(ca_file=str(self.ca)))


def hub_config(
    setup: Setup,
    *,
    dpi_port: int,
    routes: list[dict[str, Any]] | None = None,
    mta: dict[str, Any] | None = None,
    submission: dict[str, Any] | None = None,
    mssante: dict[str, Any] | None = None,
    trusted: tuple[str, ...] = (HUB_DOMAIN, PEER_DOMAIN, "patient.mssante.fr"),
    **hub: Any,
) -> Path:
    """hub.yaml + routes for the MSSanté flows; returns the config path."""
    folder = setup.folder
    (folder / "routes").mkdir(parents=True, exist_ok=True)
    setup.trust_file.write_text("# MSSanté trust space (test)\n" + "\n".join(trusted) + "\n")
    mailboxes = [
        {"address": APP_MAILBOX, "kind": "application", "organization": "Service de biologie^^^^^1.2.3&1.2.3&ISO^UF"},
        {"address": LAB_MAILBOX, "kind": "application"},
        {"address": DOCTOR, "kind": "personal"},
    ]
    common = {
        "hostname": f"mx.{HUB_DOMAIN}",
        "tls": setup.tls(),
        "domains": [HUB_DOMAIN],
        "mailboxes": mailboxes,
        "trust_list_file": str(setup.trust_file),
        "max_message_bytes": 4 * 2**20,
    }
    config = {
        "node": "test-node",
        "environment": "test",
        "store": {"kind": "sqlite", "path": str(folder / "hub.db")},
        "http": {"listen": "127.0.0.1:0"},
        "listeners": {
            "mllp_in": {"type": "mllp", "listen": "127.0.0.1:0"},
            "smtp_mta": {"type": "smtp_mta", "listen": f"127.0.0.1:{setup.mta_port}", **common, **(mta or {})},
            "smtp_submission": {
                "type": "smtp_submission",
                "listen": f"127.0.0.1:{setup.submission_port}",
                **common,
                "users": [{"username": USER, "password_hash": _PASSWORD_HASH, "addresses": [DOCTOR]}],
                **(submission or {}),
            },
        },
        "endpoints": {
            "dpi": {"type": "mllp", "endpoint": f"127.0.0.1:{dpi_port}", "ack_timeout_secs": 5},
            "mssante": {
                "type": "mssante",
                "from_address": LAB_MAILBOX,
                "hostname": f"mx.{HUB_DOMAIN}",
                "domains": [HUB_DOMAIN],
                "next_hops": {
                    PEER_DOMAIN: f"127.0.0.1:{setup.peer_port}",
                    "patient.mssante.fr": f"127.0.0.1:{setup.peer_port}",
                },
                "tls": setup.tls(),
                "trust_list_file": str(setup.trust_file),
                "environment": "test",
                "mailbox_dir": str(setup.mailbox_dir),
                **(mssante or {}),
            },
            "mailbox": {"type": "mailbox", "mailbox_dir": str(setup.mailbox_dir), "mailboxes": mailboxes},
        },
        "sandboxes": {
            "mssante_peer": {
                "type": "mssante_peer",
                "listen": f"127.0.0.1:{setup.peer_port}",
                "pki_dir": str(setup.pki),
                "hub_mta": f"127.0.0.1:{setup.mta_port}",
            }
        },
        "routes": ["routes/*.yaml"],
        **hub,
    }
    (folder / "hub.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for route in routes or default_routes():
        (folder / "routes" / f"{route['route']}.yaml").write_text(yaml.safe_dump(route, sort_keys=False))
    return folder / "hub.yaml"


def default_routes() -> list[dict[str, Any]]:
    dest = {"max_in_flight": 1, "retry": FAST_RETRY}
    return [
        {
            "route": "mss_documents_to_dpi",
            "from": ["smtp_mta", "smtp_submission"],
            "when": {"mail_kind": "document"},
            "steps": ["cda_to_v2_mdm_t02"],
            "to": [{"destination": "dpi", "ordering_key": "patient_key", **dest}],
        },
        {
            "route": "mss_to_mailboxes",
            "from": ["smtp_mta", "smtp_submission"],
            "when": {"has_local_recipients": "true"},
            "to": [{"destination": "mailbox", **dest}],
        },
        {
            "route": "mss_relay",
            "from": ["smtp_mta", "smtp_submission"],
            "when": {"has_remote_recipients": "true"},
            "to": [{"destination": "mssante", **dest}],
        },
        {
            "route": "cda_to_mssante",
            "from": "mllp_in",
            "when": {"message_type": "CR-BIO"},
            "to": [{"destination": "mssante", **dest}],
        },
    ]


async def connect(port: int, ctx: ssl.SSLContext | None, *, starttls: bool = True) -> aiosmtplib.SMTP:
    """An SMTP client on 127.0.0.1:port, after EHLO and (optionally) STARTTLS."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, local_hostname="client.test", timeout=10)
    await smtp.connect()
    await smtp.ehlo()
    if starttls:
        await smtp.starttls(tls_context=ctx)
        await smtp.ehlo()
    return smtp


async def client_from(port: int, source: str, setup: Setup, *, peer_cert: bool) -> aiosmtplib.SMTP:
    """An SMTP client from the loopback address `source` (127.0.0.0/8: one "host" each), after STARTTLS:
    with the peer operator's certificate, or with none (a local client of the submission port)."""
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, start_tls=False, local_hostname="client.test", timeout=10,
        source_address=(source, 0),
    )  # fmt: skip
    await smtp.connect()
    await smtp.ehlo()
    await smtp.starttls(tls_context=setup.peer_client_context() if peer_cert else setup.plain_client_context())
    await smtp.ehlo()
    return smtp


async def command(smtp: aiosmtplib.SMTP, *words: str) -> tuple[int, str]:
    """One raw command and its reply (code, text), without aiosmtplib raising on 4xx/5xx."""
    response = await smtp.execute_command(*(w.encode() for w in words))
    return response.code, response.message


async def transaction(smtp: aiosmtplib.SMTP, sender: str, rcpts: list[str], data: bytes) -> tuple[int, str]:
    """MAIL, RCPT..., DATA; the first refusal's (code, text), else the DATA reply."""
    code, text = await command(smtp, f"MAIL FROM:<{sender}>")
    if code != 250:
        return code, text
    for rcpt in rcpts:
        code, text = await command(smtp, f"RCPT TO:<{rcpt}>")
        if code != 250:
            return code, text
    response = await smtp.data(data)
    return response.code, response.message


async def data_reply(smtp: aiosmtplib.SMTP, sender: str, rcpts: list[str], data: bytes) -> tuple[int, str]:
    """Like :func:`transaction`, but a refused DATA is returned rather than raised."""
    try:
        return await transaction(smtp, sender, rcpts, data)
    except aiosmtplib.SMTPDataError as exc:
        return exc.code, exc.message


def zip_of(files: list[tuple[str, bytes]], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in files:
            zf.writestr(name, data)
    return buf.getvalue()
