"""The IMAP listener (a real Dovecot run by the hub) checks client certificates against the CRLs of
tls.crl_files, and takes a newer CRL without a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import imaplib
import ssl
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from adapters.sandboxes.mssante_peer import make_test_pki
from hub.devpki import issue, write_cert, write_key
from tests.hubkit import running_hub, running_peer, wait_until
from tests.imap.imapkit import ImapSetup, imap_hub_config, login_external

pytestmark = pytest.mark.usefixtures("needs_dovecot")


def write_crl(setup: ImapSetup, path: Path, *revoked: x509.Certificate) -> None:
    ca_cert = x509.load_pem_x509_certificate((setup.pki / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((setup.pki / "ca.key").read_bytes(), password=None)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=1))
        .next_update(now + dt.timedelta(days=1))
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(now).build()
        )
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))  # type: ignore[arg-type]
    tmp.replace(path)


def card(setup: ImapSetup, label: str) -> tuple[x509.Certificate, tuple[Path, Path]]:
    """The DPI application's certificate (CN dpi.hub.test, which its mailbox lists), one copy per label."""
    ca_cert = x509.load_pem_x509_certificate((setup.pki / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((setup.pki / "ca.key").read_bytes(), password=None)
    cert, key = issue((ca_cert, ca_key), "dpi.hub.test", ["dpi.hub.test.clients.test"])  # type: ignore[arg-type]
    paths = setup.folder / f"{label}.pem", setup.folder / f"{label}.key"
    write_cert(paths[0], cert)
    write_key(paths[1], key)
    return cert, paths


def opens(setup: ImapSetup, paths: tuple[Path, Path]) -> bool:
    try:
        login_external(setup, paths).logout()
    except (imaplib.IMAP4.error, ssl.SSLError, OSError):
        return False
    return True


async def test_a_revoked_client_certificate_opens_nothing_and_a_new_crl_is_taken_live(tmp_path: Path) -> None:
    setup = ImapSetup(tmp_path)
    # The PKI the MSSanté peer sandbox would make at start, made first so that its CA can sign the CRL.
    make_test_pki(
        setup.pki, peer_names=["mx.peer.mssante.fr", "localhost", "127.0.0.1"], hub_names=["localhost", "127.0.0.1"]
    )
    good, good_files = card(setup, "good")
    revoked, revoked_files = card(setup, "revoked")
    crl = tmp_path / "ca.crl"
    write_crl(setup, crl, revoked)
    async with running_peer() as dpi:
        config = imap_hub_config(setup, dpi_port=dpi.port)
        data = yaml.safe_load(config.read_text())
        data["listeners"]["imap"]["tls"].update(crl_files=[str(crl)], crl_refresh_secs=0.2)
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        async with running_hub(config) as hub:
            assert await asyncio.to_thread(opens, setup, good_files)
            assert not await asyncio.to_thread(opens, setup, revoked_files)
            # The CA revokes the other one too and publishes a newer CRL: Dovecot takes it, no restart.
            imap = hub.listeners["imap"]
            write_crl(setup, crl, revoked, good)

            async def good_refused() -> bool:
                return not await asyncio.to_thread(opens, setup, good_files)

            await wait_until(good_refused, timeout=20, interval=0.2)
            assert imap.crl_reloads >= 1  # type: ignore[attr-defined]
