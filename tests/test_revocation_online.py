"""Online revocation (hub/revocation.py): OCSP answered by OpenSSL's own responder (`openssl ocsp`), CRLs
fetched from a distribution point served over HTTP, and every kind of TLS endpoint refusing a revoked peer
right after its handshake: the MLLP listener and client, the HTTP server and aiohttp clients, SMTP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from adapters.tls import VerifyingConnector
from hub.devpki import Key, new_ca, subject_alt_names, write_cert, write_key
from hub.http import refuse_revoked_clients
from hub.revocation import OnlinePolicy, RevocationChecker, RevocationError, load_anchors
from hub.store.base import SearchQuery
from hub.tls import TlsConfig, client_context, server_context, verify_peer

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command (its OCSP responder)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Leaf:
    cert: Path
    key: Path
    serial: int
    subject: x509.Name
    not_after: dt.datetime


@dataclasses.dataclass
class Pki:
    folder: Path
    ca: tuple[x509.Certificate, Key]
    ca_file: Path
    ca_key: Path
    ocsp_url: str
    crl_url: str

    def leaf(self, cn: str, *, ocsp: bool = True, crl: bool = False, names: tuple[str, ...] = ("localhost",)) -> Leaf:
        """A server-and-client certificate for 127.0.0.1 naming the responder and/or the distribution point."""
        ca_cert, ca_key = self.ca
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(subject_alt_names(names)), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if ocsp:
            aia = x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(self.ocsp_url)
            )
            builder = builder.add_extension(x509.AuthorityInformationAccess([aia]), critical=False)
        if crl:
            point = x509.DistributionPoint([x509.UniformResourceIdentifier(self.crl_url)], None, None, None)
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        leaf = Leaf(self.folder / f"{cn}.pem", self.folder / f"{cn}.key", cert.serial_number, subject, now)
        write_cert(leaf.cert, cert)
        write_key(leaf.key, key)
        leaf.not_after = cert.not_valid_after_utc
        return leaf

    def publish(self, *, good: list[Leaf], revoked: list[Leaf]) -> None:
        """The responder's database (OpenSSL's index.txt) and the distribution point's CRL."""
        lines = []
        when = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        for leaf, status in [*((g, "V") for g in good), *((r, "R") for r in revoked)]:
            expiry = leaf.not_after.strftime("%y%m%d%H%M%SZ")
            revoked_at = when.strftime("%y%m%d%H%M%SZ") if status == "R" else ""
            lines.append(f"{status}\t{expiry}\t{revoked_at}\t{leaf.serial:X}\tunknown\t/CN={_cn(leaf)}")
        (self.folder / "index.txt").write_text("".join(line + "\n" for line in lines))
        ca_cert, ca_key = self.ca
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(when)
            .next_update(when + dt.timedelta(hours=1))
        )
        for leaf in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(leaf.serial).revocation_date(when).build()
            )
        (self.folder / "www").mkdir(exist_ok=True)
        crl = builder.sign(ca_key, hashes.SHA256())
        (self.folder / "www" / "ca.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))


def _cn(leaf: Leaf) -> str:
    return str(leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = new_ca("Revocation Test CA")
    write_cert(tmp_path / "ca.pem", ca[0])
    write_key(tmp_path / "ca.key", ca[1])
    return Pki(
        tmp_path, ca, tmp_path / "ca.pem", tmp_path / "ca.key",
        f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}/ca.crl",
    )  # fmt: skip


@contextlib.contextmanager
def ocsp_responder(pki: Pki, *, signer: tuple[Path, Path] | None = None) -> Iterator[None]:
    """OpenSSL's OCSP responder on the PKI's OCSP URL, signing with the CA (or `signer`: cert, key)."""
    port = pki.ocsp_url.rsplit(":", 1)[1]
    cert, key = signer or (pki.ca_file, pki.ca_key)
    proc = subprocess.Popen(
        ["openssl", "ocsp", "-index", str(pki.folder / "index.txt"), "-port", port, "-CA", str(pki.ca_file),
         "-rsigner", str(cert), "-rkey", str(key), "-nmin", "10", "-ignore_err"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # It serves one connection at a time: a probe connection would hold it, so wait for its own word.
        assert proc.stderr is not None
        for line in proc.stderr:
            if b"waiting for OCSP client connections" in line:
                break
        else:
            raise AssertionError("openssl ocsp did not start")
        yield
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


@contextlib.contextmanager
def crl_server(pki: Pki) -> Iterator[None]:
    """Python's own HTTP file server publishing the CRL at the distribution point's URL."""
    port = int(pki.crl_url.split(":")[2].split("/")[0])
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(pki.folder / "www")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_listening(port, proc)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = dt.datetime.now() + dt.timedelta(seconds=15)
    while dt.datetime.now() < deadline:
        assert proc.poll() is None, "the server exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)  # polling the state (a listening socket) the child process has not reached yet
    raise AssertionError(f"nothing listens on {port}")


def policy(pki: Pki, mode: str = "hard", **kw: object) -> OnlinePolicy:
    return OnlinePolicy(mode=mode, anchors=load_anchors(pki.ca_file.read_bytes()), timeout_secs=2, **kw)  # type: ignore[arg-type]


def der(leaf: Leaf) -> bytes:
    return x509.load_pem_x509_certificate(leaf.cert.read_bytes()).public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------- the checker against real responders


async def test_ocsp_good_revoked_and_cached(pki: Pki) -> None:
    good, revoked = pki.leaf("good.test"), pki.leaf("revoked.test")
    pki.publish(good=[good], revoked=[revoked])
    checker = RevocationChecker()
    with ocsp_responder(pki):
        await checker.check(der(good), policy(pki))
        with pytest.raises(RevocationError, match=r"certificate revoked \(OCSP\)"):
            await checker.check(der(revoked), policy(pki))
        asked = checker.requests
        assert asked == 2
    # The responder is gone: the cached answers still hold until their nextUpdate.
    await checker.check(der(good), policy(pki))
    with pytest.raises(RevocationError, match="revoked"):
        await checker.check(der(revoked), policy(pki))
    assert checker.requests == asked


async def test_unknown_status_hard_refuses_soft_lets_through(pki: Pki) -> None:
    leaf = pki.leaf("lonely.test")
    pki.publish(good=[], revoked=[])  # the responder does not know it
    with ocsp_responder(pki):
        with pytest.raises(RevocationError, match="status unknown"):
            await RevocationChecker().check(der(leaf), policy(pki, "hard"))
        await RevocationChecker().check(der(leaf), policy(pki, "soft"))
    # No responder at all (connection refused): the same, and the failure is cached (one try, not one a handshake).
    checker = RevocationChecker()
    with pytest.raises(RevocationError, match="status unknown"):
        await checker.check(der(leaf), policy(pki, "hard"))
    with pytest.raises(RevocationError, match="status unknown"):
        await checker.check(der(leaf), policy(pki, "hard"))
    assert checker.requests == 1


async def test_answer_signed_by_someone_else_is_not_believed(pki: Pki) -> None:
    leaf = pki.leaf("good.test")
    pki.publish(good=[leaf], revoked=[])
    other = new_ca("Not The Issuer")
    write_cert(pki.folder / "other.pem", other[0])
    write_key(pki.folder / "other.key", other[1])
    signer = (pki.folder / "other.pem", pki.folder / "other.key")
    with ocsp_responder(pki, signer=signer), pytest.raises(RevocationError, match="not signed by the issuer"):
        await RevocationChecker().check(der(leaf), policy(pki, "hard"))


async def test_delegated_responder_is_believed(pki: Pki) -> None:
    """RFC 6960 §4.2.2.2: a responder certificate the issuer signed for id-kp-OCSPSigning."""
    leaf, revoked = pki.leaf("good.test"), pki.leaf("revoked.test")
    pki.publish(good=[leaf], revoked=[revoked])
    ca_cert, ca_key = pki.ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    responder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocsp.test")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_cert(pki.folder / "responder.pem", responder)
    write_key(pki.folder / "responder.key", key)
    with ocsp_responder(pki, signer=(pki.folder / "responder.pem", pki.folder / "responder.key")):
        checker = RevocationChecker()
        await checker.check(der(leaf), policy(pki))
        with pytest.raises(RevocationError, match="revoked"):
            await checker.check(der(revoked), policy(pki))


async def test_crl_distribution_point(pki: Pki) -> None:
    good, revoked = pki.leaf("good.test", ocsp=False, crl=True), pki.leaf("revoked.test", ocsp=False, crl=True)
    pki.publish(good=[good], revoked=[revoked])
    checker = RevocationChecker()
    with crl_server(pki):
        await checker.check(der(good), policy(pki))
        with pytest.raises(RevocationError, match=r"certificate revoked \(CRL distribution point\)"):
            await checker.check(der(revoked), policy(pki))
    assert checker.requests == 1  # one download for both: the CRL is cached per URL
    # Switched off: nothing is asked, whatever the certificate names.
    await RevocationChecker().check(der(revoked), policy(pki, crl_distribution_points=False))


async def test_a_certificate_naming_nothing_is_left_to_the_crl_files(pki: Pki) -> None:
    leaf = pki.leaf("plain.test", ocsp=False, crl=False)
    checker = RevocationChecker()
    await checker.check(der(leaf), policy(pki, "hard"))
    assert checker.requests == 0


async def test_issuer_missing_from_the_anchors(pki: Pki) -> None:
    leaf = pki.leaf("good.test")
    pki.publish(good=[leaf], revoked=[])
    stranger = new_ca("Some Other CA")[0]
    with ocsp_responder(pki), pytest.raises(RevocationError, match="issuer not among the trust anchors"):
        await RevocationChecker().check(der(leaf), OnlinePolicy(mode="hard", anchors=(stranger,)))


# --------------------------------------------------------------------------- every TLS endpoint asks


def tls(pki: Pki, leaf: Leaf, **kw: object) -> TlsConfig:
    return TlsConfig(
        cert_file=str(leaf.cert), key_file=str(leaf.key), ca_file=str(pki.ca_file), server_hostname="localhost", **kw
    )  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def tls_echo_server(ctx: ssl.SSLContext) -> AsyncIterator[int]:
    """A TLS server that answers each line with the verdict of verify_peer on its client."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await verify_peer(writer.get_extra_info("ssl_object"))
            writer.write(b"accepted\n")
        except RevocationError:
            writer.write(b"refused\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_listener_refuses_a_revoked_client_and_a_client_a_revoked_server(pki: Pki) -> None:
    server_leaf, good, revoked = pki.leaf("server.test"), pki.leaf("good.test"), pki.leaf("revoked.test")
    pki.publish(good=[server_leaf, good], revoked=[revoked])
    with ocsp_responder(pki):
        async with tls_echo_server(server_context(tls(pki, server_leaf, require_client_cert=True))) as port:
            for leaf, verdict in ((good, b"accepted\n"), (revoked, b"refused\n")):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_context(tls(pki, leaf)), server_hostname="localhost"
                )
                await verify_peer(writer.get_extra_info("ssl_object"))  # the server's certificate is good
                assert await reader.readline() == verdict
                writer.close()
        # The other way round: the server's certificate is the revoked one.
        async with tls_echo_server(server_context(tls(pki, revoked))) as port:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(tls(pki, good)), server_hostname="localhost"
            )
            with pytest.raises(RevocationError, match="revoked"):
                await verify_peer(writer.get_extra_info("ssl_object"))
            writer.close()


async def test_mllp_listener_and_destination(pki: Pki, tmp_path: Path) -> None:
    from adapters.mllp.outbound import MllpOutbound, MllpOutboundConfig
    from hub.errors import Unreachable

    server_leaf, good, revoked = pki.leaf("server.test"), pki.leaf("good.test"), pki.leaf("revoked.test")
    pki.publish(good=[server_leaf, good], revoked=[revoked])
    with ocsp_responder(pki):
        # A destination whose server certificate is revoked: unreachable, nothing sent.
        received: list[bytes] = []

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.read(100))
            writer.close()

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=server_context(tls(pki, revoked)))
        port = server.sockets[0].getsockname()[1]
        out = MllpOutbound("dpi", MllpOutboundConfig(endpoint=f"127.0.0.1:{port}", tls=tls(pki, good)))
        with pytest.raises(Unreachable, match="certificate"):
            await out._connect()  # the connection the pool would have kept
        server.close()
        await server.wait_closed()
        assert received in ([], [b""])  # the handshake happened; not a byte of HL7 followed


async def test_http_server_and_clients(pki: Pki) -> None:
    server_leaf, good, revoked = pki.leaf("server.test"), pki.leaf("good.test"), pki.leaf("revoked.test")
    pki.publish(good=[server_leaf, good], revoked=[revoked])

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def serve(leaf: Leaf) -> tuple[web.AppRunner, int]:
        app = web.Application(middlewares=[refuse_revoked_clients])
        app.router.add_get("/", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(tls(pki, leaf, require_client_cert=True)))
        await site.start()
        return runner, runner.addresses[0][1]

    with ocsp_responder(pki):
        runner, port = await serve(server_leaf)
        try:
            for leaf, status in ((good, 200), (revoked, 403)):
                connector = VerifyingConnector(ssl=client_context(tls(pki, leaf)))
                async with (
                    aiohttp.ClientSession(connector=connector) as http,
                    http.get(f"https://localhost:{port}/") as resp,
                ):
                    assert resp.status == status
        finally:
            await runner.cleanup()
        # A server whose certificate is revoked: the client refuses before the request is written.
        runner, port = await serve(revoked)
        try:
            async with aiohttp.ClientSession(connector=VerifyingConnector(ssl=client_context(tls(pki, good)))) as http:
                with pytest.raises(aiohttp.ClientConnectorError):
                    await http.get(f"https://localhost:{port}/")
        finally:
            await runner.cleanup()


def test_no_online_check_without_explicit_trust_anchors(pki: Pki) -> None:
    """A context on the system store (a webhook to a public site) is not the trust space: never asked online."""
    from hub import tls as hub_tls

    ctx = client_context(TlsConfig())
    assert ctx not in hub_tls._online
    leaf = pki.leaf("x.test")
    assert hub_tls._online.get(client_context(tls(pki, leaf))) is not None


async def test_the_hubs_mllp_listener_asks_the_responder(pki: Pki, tmp_path: Path) -> None:
    """A real hub with a mutual-TLS MLLP listener: a revoked client is cut off before its first frame, nothing
    of it stored; a good one gets AA; with the responder gone, hard refuses and soft accepts."""
    from tests.adapters.test_tls_revocation import answer as mllp_answer
    from tests.hubkit import mllp_port, running_hub, write_config

    server_leaf, good, revoked = pki.leaf("server.test"), pki.leaf("good.test"), pki.leaf("revoked.test")
    pki.publish(good=[server_leaf, good], revoked=[revoked])

    async def answer(port: int, leaf: Leaf, control_id: str) -> str:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_file))
        ctx.load_cert_chain(leaf.cert, leaf.key)
        return await mllp_answer(port, ctx, control_id)

    def listener(mode: str) -> dict[str, object]:
        return {
            "tls": {**tls(pki, server_leaf, require_client_cert=True, revocation=mode).model_dump(), "verify": True}
        }

    with ocsp_responder(pki):
        async with running_hub(write_config(tmp_path / "hard", peer_port=1, listener=listener("hard"))) as hub:
            port = mllp_port(hub)
            assert await answer(port, good, "G1") == "AA"
            assert await answer(port, revoked, "R1") == "refused"
            assert hub.store is not None
            assert await hub.store.search(SearchQuery(control_id="R1")) == []  # not a byte of it was read
            assert len(await hub.store.search(SearchQuery(control_id="G1"))) == 1
    # The responder is down (and the process's cache is cold for this new client): hard refuses, soft accepts.
    other = pki.leaf("other.test")
    for mode, expected in (("hard", "refused"), ("soft", "AA")):
        async with running_hub(write_config(tmp_path / mode, peer_port=1, listener=listener(mode))) as hub:
            assert await answer(mllp_port(hub), other, f"{mode}1") == expected


async def test_the_mta_refuses_a_peer_operator_whose_certificate_is_revoked(pki: Pki, tmp_path: Path) -> None:
    """The MSSanté MTA port: a trust-space peer whose certificate the CA revoked gets 550 5.7.0 at MAIL FROM,
    audited with the reason."""
    from tests.hubkit import running_hub, running_peer
    from tests.smtp.smtpkit import PRESCRIBER, Setup, client_from, command, hub_config

    setup = Setup(tmp_path)
    setup.pki.mkdir()
    # The files the MSSanté peer sandbox would make, made here with an OCSP responder named in them.
    hub_leaf = pki.leaf("mx.hub.mssante.fr", names=("mx.hub.mssante.fr", "localhost", "127.0.0.1"))
    peer_leaf = pki.leaf("mx.peer.mssante.fr", names=("mx.peer.mssante.fr", "localhost", "127.0.0.1"))
    app_leaf = pki.leaf("dpi-app.hub.mssante.fr", names=("dpi-app.hub.mssante.fr",))
    for name, leaf in (("hub", hub_leaf), ("peer", peer_leaf), ("app", app_leaf)):
        shutil.copy(leaf.cert, setup.pki / f"{name}.pem")
        shutil.copy(leaf.key, setup.pki / f"{name}.key")
    shutil.copy(pki.ca_file, setup.pki / "ca.pem")
    shutil.copy(pki.ca_key, setup.pki / "ca.key")

    async def mail_from() -> tuple[int, str]:
        smtp = await client_from(setup.mta_port, "127.0.0.1", setup, peer_cert=True)
        try:
            return await command(smtp, f"MAIL FROM:<{PRESCRIBER}>")
        finally:
            smtp.close()

    async with running_peer() as dpi, running_hub(hub_config(setup, dpi_port=dpi.port)) as hub:
        pki.publish(good=[hub_leaf, app_leaf], revoked=[peer_leaf])
        with ocsp_responder(pki):
            code, text = await mail_from()
            assert (code, text.split()[0]) == (550, "5.7.0")
        assert hub.store is not None
        refused = [e for e in await hub.store.list_audit(limit=100) if e.action == "mail_peer_refused"]
        assert [(e.outcome, json.loads(e.detail)["reason"]) for e in refused] == [
            ("refused", "certificate revoked (OCSP)")
        ]
