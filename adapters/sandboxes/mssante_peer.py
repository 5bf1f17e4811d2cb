"""A peer MSSanté operator: the other end of the hub's SMTP, for `make run` and the tests.

It is a second SMTP server (aiosmtpd, on the hub's event loop) with its own
domains and certificate, which requires STARTTLS (530 before it) and, when it
knows a CA, a client certificate chaining to it, as an operator of the trust
space would. It accepts mail for any mailbox of its domains (550 5.1.1 for
the others) and keeps what it received (bounded), listed as JSON at
``GET /sandboxes/<name>/messages``: envelope, headers, attachment names, and
for an IHE_XDM.ZIP its entries and what METADATA.XML says of each document.

TLS material: ``cert_file``/``key_file``/``ca_file`` when configured. Without
them it makes a throwaway test PKI in ``pki_dir`` at start (a CA, its own
certificate, and one for the hub, ``hub.pem``/``hub.key``, valid for server
and client use), reused while valid, and copies the CA to ``ca_out_file`` so
the hub's listeners and its `mssante` destination can use the same files:
the CA plays IGC-Santé, the single authority of the trust space. ``GET
/sandboxes/<name>/ca.pem`` serves it too.

Knobs (``POST /sandboxes/<name>/faults``): ``rcpt_reply`` / ``data_reply``
(e.g. ``"451 4.3.0 busy"``, ``"550 5.1.1 unknown"``) to watch retries and DSNs.
``POST /sandboxes/<name>/send`` (``{"to": [...], "request_mdn": true}``) makes
it send a synthetic CR-BIO in an IHE_XDM.ZIP to the hub's MTA port
(``hub_mta``), over STARTTLS with its client certificate: flow F5 end to end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import tempfile
import weakref
from pathlib import Path
from typing import Any

import aiosmtplib
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import Field

from adapters.smtp.common import (
    certificate_name,
    close_smtp_server,
    host_port,
    peer_certificate,
    quiet_library_logs,
    server_tls_context,
)
from adapters.tls import TlsConfig, client_context
from hub.devpki import issue, new_ca, still_valid, write_cert, write_key
from hub.message import new_id, utcnow
from hub.registry import ComponentConfig, register
from mappings.mssante.mail import MailParts, build_document_mail, document_subject, domain_of, parse_mail
from mappings.xdm import XdmError, build_xdm, read_xdm
from mappings.xml import parse_xml

__all__ = ["TEST_APP_CERT_NAME", "MssantePeer", "MssantePeerConfig", "make_test_pki", "synthetic_cda"]

TEST_INS = "279035121518989"  # PAT-TROIS DOMINIQUE, the official ANS test patient (valid key), DOMAIN.md §1.2
TEST_INS_OID = "1.2.250.1.213.1.4.10"  # INS-NIR *test* root


class MssantePeerConfig(ComponentConfig):
    listen: str = Field("127.0.0.1:2526", description="host:port of the peer's SMTP server.")
    domains: list[str] = Field(
        default_factory=lambda: ["peer.mssante.fr", "patient.mssante.fr"],
        description="Mail domains the peer hosts (any mailbox of them is accepted); the first is its own.",
    )
    hostname: str = Field("mx.peer.mssante.fr", description="Name in the greeting and EHLO reply.")
    cert_file: str | None = Field(None, description="Server certificate; unset: a test PKI is made at start.")
    key_file: str | None = Field(None, description="Key of cert_file.")
    ca_file: str | None = Field(
        None, description="Trust anchors for client certificates (and the CA of cert_file when generated)."
    )
    require_client_cert: bool = Field(True, description="Refuse senders without a certificate from ca_file (530).")
    pki_dir: str | None = Field(None, description="Where the test PKI is made and kept (unset: a temporary folder).")
    hub_names: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1"], description="Names in the generated hub.pem."
    )
    ca_out_file: str | None = Field(None, description="Copy the CA certificate here (for the hub's ca_file).")
    hub_mta: str | None = Field(None, description="host:port of the hub's MTA port, for POST send.")
    sender: str = Field("lab@peer.mssante.fr", description="Sender of the mail POST send makes.")
    keep: int = Field(1000, ge=1, le=100_000, description="How many received mails are kept for listing.")
    max_message_bytes: int = Field(64 * 2**20, ge=1024, description="Largest mail accepted.")


# --------------------------------------------------------------------------- test PKI


#: Subject CN of the test certificate of the DPI's application (``app.pem``): what its mailbox lists.
TEST_APP_CERT_NAME = "dpi-app.hub.mssante.fr"


def make_test_pki(folder: Path, *, peer_names: list[str], hub_names: list[str], days: int = 30) -> dict[str, Path]:
    """A test CA and three leaf certificates in ``folder``, reused while valid: the peer's, the hub's (server
    and client use), and an application's (``app.pem``, CN ``TEST_APP_CERT_NAME``: the DPI opening its
    application mailbox over IMAP)."""
    names = {"ca": "ca.pem", "ca_key": "ca.key", "peer": "peer.pem", "peer_key": "peer.key", "app": "app.pem"}
    files = {k: folder / f for k, f in {**names, "hub": "hub.pem", "hub_key": "hub.key", "app_key": "app.key"}.items()}
    if all(p.exists() for p in files.values()) and all(still_valid(files[k]) for k in ("ca", "peer", "hub", "app")):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    ca = new_ca("MSSante Test CA (plays IGC-Sante)", organization="MSSante test PKI", days=days)
    write_cert(files["ca"], ca[0])
    write_key(files["ca_key"], ca[1])
    leaves = (
        ("peer", peer_names[0], peer_names),
        ("hub", hub_names[0], hub_names),
        ("app", TEST_APP_CERT_NAME, [TEST_APP_CERT_NAME]),
    )
    for kind, cn, hosts in leaves:
        cert, key = issue(ca, cn, hosts, days=days)
        write_cert(files[kind], cert)
        write_key(files[f"{kind}_key"], key)
    return files


# --------------------------------------------------------------------------- a synthetic document


def synthetic_cda(
    *,
    ins: str | None = TEST_INS,
    ins_oid: str = TEST_INS_OID,
    ipp: str = "IPP-000777",
    doc_id: str = "DOC-PEER-0001",
    complete_traits: bool = True,
) -> bytes:
    """A small synthetic CI-SIS CR-BIO header with a structured body (test identity, invented values)."""
    ins_id = f'<id root="{ins_oid}" extension="{ins}"/>' if ins else ""
    given_list = "<given>DOMINIQUE</given>" if complete_traits else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <realmCode code="FR"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="2.16.840.1.113883.2.8.2.1"/>
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <templateId root="1.2.250.1.213.1.1.1.55" extension="2024.01"/>
  <id root="1.2.250.1.999.7.1" extension="{doc_id}"/>
  <code code="11502-2" displayName="CR d'examens biologiques" codeSystem="2.16.840.1.113883.6.1"/>
  <title>CR d'examens biologiques</title>
  <effectiveTime value="20250102103000+0100"/>
  <confidentialityCode code="N" displayName="Normal" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <setId root="1.2.250.1.999.7.2" extension="{doc_id}"/>
  <versionNumber value="1"/>
  <recordTarget><patientRole>
    {ins_id}
    <id root="1.2.250.1.999.7.3" extension="{ipp}"/>
    <patient classCode="PSN">
      <name><family qualifier="BR">PAT-TROIS</family>{given_list}<given qualifier="BR">DOMINIQUE</given></name>
      <administrativeGenderCode code="F" displayName="Féminin" codeSystem="2.16.840.1.113883.5.1"/>
      <birthTime value="19790328"/>
      <birthplace><place><addr><county>51215</county><city>DOMPREMY</city></addr></place></birthplace>
    </patient>
  </patientRole></recordTarget>
  <author><time value="20250102103000+0100"/><assignedAuthor>
    <id root="1.2.250.1.71.4.2.1" extension="810000000099"/>
    <assignedPerson><name><given>ALEX</given><family>TESTBIOLOGISTE</family></name></assignedPerson>
    <representedOrganization>
      <id root="1.2.250.1.71.4.2.2" extension="1000000099"/><name>Laboratoire pair</name>
    </representedOrganization>
  </assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization>
    <id root="1.2.250.1.71.4.2.2" extension="1000000099"/><name>Laboratoire pair</name>
  </representedCustodianOrganization></assignedCustodian></custodian>
  <legalAuthenticator><time value="20250102103000+0100"/><signatureCode code="S"/><assignedEntity>
    <id root="1.2.250.1.71.4.2.1" extension="810000000099"/>
    <assignedPerson><name><given>ALEX</given><family>TESTBIOLOGISTE</family></name></assignedPerson>
  </assignedEntity></legalAuthenticator>
  <documentationOf><serviceEvent>
    <effectiveTime><low value="20250102080000+0100"/></effectiveTime>
  </serviceEvent></documentationOf>
  <component><structuredBody><component><section>
    <title>Résultats</title><text>Glycémie à jeun : 5,2 mmol/L (valeur synthétique)</text>
  </section></component></structuredBody></component>
</ClinicalDocument>
""".encode()


# --------------------------------------------------------------------------- the peer


@register("sandbox", "mssante_peer", config=MssantePeerConfig)
class MssantePeer:
    """A second MSSanté operator (STARTTLS, client certificates) that keeps and lists the mail it receives."""

    def __init__(self, name: str = "mssante_peer", config: MssantePeerConfig | None = None) -> None:
        self.name = name
        self.config = config or MssantePeerConfig(listen="127.0.0.1:0")
        self.domains = {d.lower() for d in self.config.domains}
        self.received: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.config.keep)
        self.rcpt_reply: str | None = None
        self.data_reply: str | None = None
        self.count = 0
        self.port = 0
        self.files: dict[str, Path] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: asyncio.Server | None = None
        self._protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._client_files: tuple[str, str, str | None] | None = None

    # -- lifecycle
    def _tls_files(self) -> tuple[str, str, str | None]:
        cfg = self.config
        if cfg.cert_file:
            return cfg.cert_file, cfg.key_file or cfg.cert_file, cfg.ca_file
        if cfg.pki_dir:
            folder = Path(cfg.pki_dir)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="mssante-peer-")
            folder = Path(self._tmp.name)
        host = host_port(cfg.listen)[0]
        self.files = make_test_pki(
            folder, peer_names=[cfg.hostname, "localhost", host, *cfg.domains], hub_names=cfg.hub_names
        )
        if cfg.ca_out_file:
            Path(cfg.ca_out_file).parent.mkdir(parents=True, exist_ok=True)
            Path(cfg.ca_out_file).write_bytes(self.files["ca"].read_bytes())
        return str(self.files["peer"]), str(self.files["peer_key"]), str(self.files["ca"])

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate (PEM) of the peer's certificate, when it made its own PKI."""
        return self.files["ca"].read_bytes() if "ca" in self.files else b""

    async def start(self) -> None:
        quiet_library_logs()
        cert, key, ca = await asyncio.to_thread(self._tls_files)
        self._client_files = (cert, key, ca)
        ask = self.config.require_client_cert and ca is not None
        tls = server_tls_context(TlsConfig(cert_file=cert, key_file=key, ca_file=ca), ask_client_cert=ask)
        host, port = host_port(self.config.listen)
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            proto = SMTP(
                self,
                hostname=self.config.hostname,
                tls_context=tls,
                require_starttls=True,
                data_size_limit=self.config.max_message_bytes,
                auth_exclude_mechanism=["LOGIN", "PLAIN"],
                loop=loop,
            )
            self._protocols.add(proto)
            return proto

        self._server = await loop.create_server(factory, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await close_smtp_server(self._server, self._protocols)
        if self._tmp is not None:
            self._tmp.cleanup()

    def describe(self) -> dict[str, Any]:
        return {
            "sandbox": self.name,
            "kind": "mssante_peer",
            "listen": self.config.listen,
            "port": self.port,
            "domains": sorted(self.domains),
            "messages": f"/sandboxes/{self.name}/messages",
            "ca": f"/sandboxes/{self.name}/ca.pem" if self.files else None,
            "ca_file": str(self.files["ca"]) if self.files else self.config.ca_file,
        }

    # -- SMTP hooks
    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [r for r in responses if not r.startswith("250-AUTH")]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self.config.require_client_cert and peer_certificate(session.ssl) is None:
            return "530 5.7.0 A client certificate from the trust space is required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if domain_of(address) not in self.domains:
            return "550 5.1.1 Recipient not hosted here"
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        self.count += 1
        raw = envelope.original_content or b""
        self.received.append(
            {
                "seq": self.count,
                "received_at": utcnow().isoformat(),
                "tls_peer": certificate_name(peer_certificate(session.ssl)),
                "envelope": {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos)},
                "raw": raw,
                **await asyncio.to_thread(_describe_mail, raw),
            }
        )
        return "250 2.0.0 OK"

    # -- sending to the hub (flow F5 in `make run`)
    async def send_mail(self, to: list[str], data: bytes, *, sender: str | None = None) -> tuple[int, str]:
        """Send ``data`` to the hub's MTA over STARTTLS with the peer's client certificate; (code, text)."""
        if not self.config.hub_mta or self._client_files is None:
            raise RuntimeError("hub_mta is not configured, or the peer is not started")
        host, port = host_port(self.config.hub_mta)
        cert, key, ca = self._client_files
        ctx = client_context(TlsConfig(ca_file=ca, cert_file=cert, key_file=key))
        smtp = aiosmtplib.SMTP(
            hostname=host, port=port, start_tls=True, tls_context=ctx, local_hostname=self.config.hostname
        )
        await smtp.connect()
        try:
            _, reply = await smtp.sendmail(sender or self.config.sender, to, data)
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return exc.recipients[0].code, exc.recipients[0].message
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()
        return 250, reply

    def sample_mail(self, to: list[str], *, request_mdn: bool = False, cda: bytes | None = None) -> bytes:
        """A document mail as another operator sends it: one synthetic CDA in an IHE_XDM.ZIP."""
        cda = cda or synthetic_cda()
        mid = new_id()
        now = utcnow()
        xdm = build_xdm([cda], submission_id=mid, submission_time=now, recipients=to, sender=self.config.sender)
        return build_document_mail(
            sender=self.config.sender,
            recipients=to,
            subject=document_subject(parse_xml(cda)),
            body="Compte rendu de biologie (synthétique).\n",
            message_id=f"<{mid}@{domain_of(self.config.sender)}>",
            date=now,
            xdm=xdm,
            disposition_notification_to=self.config.sender if request_mdn else None,
        )

    # -- HTTP
    def http_routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", "messages", self._list),
            ("GET", "ca.pem", self._ca),
            ("POST", "faults", self._faults),
            ("POST", "send", self._send),
        ]

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response([{k: v for k, v in r.items() if k != "raw"} for r in self.received])

    async def _ca(self, request: web.Request) -> web.Response:
        if not self.ca_pem:
            raise web.HTTPNotFound(text="this peer uses configured certificates")
        return web.Response(body=self.ca_pem, content_type="application/x-pem-file")

    async def _faults(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.rcpt_reply = data.get("rcpt_reply") or None
        self.data_reply = data.get("data_reply") or None
        return web.json_response({"rcpt_reply": self.rcpt_reply, "data_reply": self.data_reply})

    async def _send(self, request: web.Request) -> web.Response:
        data = await request.json()
        to = data.get("to") or []
        if not isinstance(to, list) or not to:
            return web.json_response({"error": "give `to`: a list of the hub's mailbox addresses"}, status=400)
        mail = self.sample_mail(to, request_mdn=bool(data.get("request_mdn")))
        try:
            code, text = await self.send_mail(to, mail)
        except (OSError, aiosmtplib.SMTPException, RuntimeError) as exc:
            return web.json_response({"error": type(exc).__name__}, status=502)
        return web.json_response({"code": code, "reply": text})


def _describe_mail(raw: bytes) -> dict[str, Any]:
    """Headers, attachment names and the XDM content of a received mail, as JSON-ready values."""
    try:
        parts = MailParts(parse_mail(raw))
    except Exception as exc:  # a sandbox lists what it got, even broken mail
        return {"headers": [], "attachments": [], "xdm": {"error": type(exc).__name__}, "size": len(raw)}
    headers = [[k, str(v)] for k, v in parts.message.items()]
    xdm: dict[str, Any] | None = None
    if parts.xdm:
        try:
            archive = read_xdm(parts.xdm[0])
            xdm = {
                "entries": list(archive.names),
                "has_index": archive.has_index,
                "has_readme": archive.has_readme,
                "documents": [
                    {
                        "path": d.path,
                        "uri": d.meta.uri,
                        "mime_type": d.meta.mime_type,
                        "unique_id": d.meta.unique_id,
                        "patient_id": d.meta.patient_id,
                        "type_code": d.meta.type_code,
                        "confidentiality": [c for c, _ in d.meta.confidentiality],
                        "cda_ok": _is_cda(d.data),
                    }
                    for d in archive.documents
                ],
            }
        except XdmError as exc:
            xdm = {"error": exc.reason}
    return {
        "headers": headers,
        "subject": parts.header("Subject"),
        "message_id": parts.header("Message-ID"),
        "attachments": parts.attachment_names,
        "xdm": xdm,
        "size": len(raw),
    }


def _is_cda(data: bytes) -> bool:
    try:
        return parse_xml(data).tag == "{urn:hl7-org:v3}ClinicalDocument"
    except Exception:
        return False
