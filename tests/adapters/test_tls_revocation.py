"""Certificate revocation and cipher suites on a mutual-TLS MLLP listener, with a CRL issued by the test PKI.

The listener is a real hub; the clients are real TLS clients, one whose certificate the CA has revoked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from hub.devpki import issue, new_ca, write_cert, write_key
from tests.hubkit import MllpClient, ack_fields, adt, mllp_port, running_hub, wait_until, write_config

CLIENT = [ExtendedKeyUsageOID.CLIENT_AUTH]


class Pki:
    """A CA, the hub's server certificate, a good and a revoked client certificate; CRLs on demand."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.ca = new_ca("Revocation Test CA")
        write_cert(folder / "ca.pem", self.ca[0])
        for name, names, usages in (
            ("server", ["localhost", "127.0.0.1"], [ExtendedKeyUsageOID.SERVER_AUTH]),
            ("good", ["good.test"], CLIENT),
            ("revoked", ["revoked.test"], CLIENT),
        ):
            cert, key = issue(self.ca, f"{name}.test", names, usages=usages, days=1)
            write_cert(folder / f"{name}.pem", cert)
            write_key(folder / f"{name}.key", key)
            setattr(self, name, cert)

    def crl(self, path: Path, *revoked: x509.Certificate, next_update_days: float = 1, age_days: float = 2) -> Path:
        ca_cert, ca_key = self.ca
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - dt.timedelta(days=age_days))
            .next_update(now + dt.timedelta(days=next_update_days))
        )
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(now).build()
            )
        crl = builder.sign(ca_key, hashes.SHA256())
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path

    def client(self, name: str, *, ciphers: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.folder / "ca.pem"))
        ctx.load_cert_chain(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        if ciphers:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(ciphers)
        return ctx


def tls_listener(pki: Pki, crls: list[Path], **over: Any) -> dict[str, Any]:
    folder = pki.folder
    return {
        "tls": {
            "cert_file": str(folder / "server.pem"), "key_file": str(folder / "server.key"),
            "ca_file": str(folder / "ca.pem"), "require_client_cert": True, "crl_files": [str(c) for c in crls],
            **over,
        }
    }  # fmt: skip


async def answer(port: int, ctx: ssl.SSLContext, control_id: str) -> str:
    """MSA-1 for one message over TLS, or 'refused' when the handshake (or the first read) fails."""
    try:
        client = await MllpClient.connect(port, ssl=ctx, server_hostname="localhost")
        try:
            return ack_fields(await client.send(adt(control_id)))["MSA"][1]
        finally:
            await client.close()
    except (ssl.SSLError, ConnectionError, AssertionError, asyncio.IncompleteReadError):
        return "refused"


async def test_a_revoked_peer_certificate_is_refused_and_a_new_crl_is_picked_up(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    crl = pki.crl(tmp_path / "ca.crl")  # nothing revoked yet
    listener = tls_listener(pki, [crl], crl_refresh_secs=0.1)
    async with running_hub(write_config(tmp_path, peer_port=1, listener=listener)) as hub:
        port = mllp_port(hub)
        assert await answer(port, pki.client("revoked"), "A1") == "AA"
        # The CA revokes it and publishes a newer CRL; the file is replaced.
        pki.crl(tmp_path / "ca.crl.new", pki.revoked, age_days=1).replace(crl)

        async def refused() -> bool:
            return await answer(port, pki.client("revoked"), "A2") == "refused"

        await wait_until(refused, timeout=10, interval=0.1)
        assert await answer(port, pki.client("good"), "G1") == "AA"


async def test_hard_and_soft_failure_when_no_valid_crl(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    expired = pki.crl(tmp_path / "expired.crl", next_update_days=-1)
    for mode, expected in (("hard", "refused"), ("soft", "AA")):
        listener = tls_listener(pki, [expired], revocation=mode)
        config = write_config(tmp_path / mode, peer_port=1, listener=listener)
        async with running_hub(config) as hub:
            assert await answer(mllp_port(hub), pki.client("good"), f"{mode}1") == expected, mode
    # Soft never lets a listed certificate through.
    listed = pki.crl(tmp_path / "listed.crl", pki.revoked)
    config = write_config(tmp_path / "soft2", peer_port=1, listener=tls_listener(pki, [listed], revocation="soft"))
    async with running_hub(config) as hub:
        assert await answer(mllp_port(hub), pki.client("revoked"), "S1") == "refused"
        assert await answer(mllp_port(hub), pki.client("good"), "S2") == "AA"


async def test_cbc_suites_are_not_offered(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    async with running_hub(write_config(tmp_path, peer_port=1, listener=tls_listener(pki, []))) as hub:
        port = mllp_port(hub)
        cbc = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384"
        assert await answer(port, pki.client("good", ciphers=cbc), "C1") == "refused"
        assert await answer(port, pki.client("good", ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"), "C2") == "AA"
