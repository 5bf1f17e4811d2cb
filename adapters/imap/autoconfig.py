"""Client auto-configuration (MSSanté TM3.3C): the Autoconfig and Autodiscover documents of the hosted domains.

Served by the ``imap`` listener on the hub's HTTP port:

=================================================  ==========================================================
``GET /.well-known/autoconfig/mail/config-v1.1.xml``  Mozilla/IETF Autoconfig (draft-ietf-mailmaint-autoconfig:
``GET /mail/config-v1.1.xml``                          the ``https://<domain>/.well-known/...`` and
                                                       ``https://autoconfig.<domain>/mail/...`` forms), ``text/xml``;
                                                       ``?emailaddress=`` narrows the authentication methods to
                                                       the mailbox's kind
``POST /autodiscover/autodiscover.xml``                Outlook "POX" Autodiscover: the request names an
                                                       ``EMailAddress``; the answer lists IMAP and SMTP
=================================================  ==========================================================

Authentication methods announced: ``TLS-client-cert`` (the card, or the
application's certificate) for every mailbox, ``OAuth2`` (Pro Santé Connect)
for personal and organisational ones when an issuer is configured,
``password-cleartext`` only for the kinds that allow a password. The same
document is answered for an address that is not hosted here, so that the
endpoint tells nobody which mailboxes exist.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aiohttp import web
from lxml import etree
from pydantic import Field

from adapters.smtp.common import host_port
from hub.errors import MessageError
from hub.registry import ComponentConfig
from mappings.xml import parse_xml

if TYPE_CHECKING:
    from adapters.imap.dovecot import ImapInbound

__all__ = ["AutoconfigConfig", "autoconfig_routes", "autoconfig_xml", "autodiscover_xml"]

_ADDRESS = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}$")
_AUTODISCOVER_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
_AUTODISCOVER = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
_OUTLOOK = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


class AutoconfigConfig(ComponentConfig):
    display_name: str = Field("MSSanté", description="Provider name shown by the mail client.")
    imap_host: str | None = Field(None, description="IMAP host name clients use (default: the listener's hostname).")
    imap_port: int | None = Field(None, description="IMAPS port clients use (default: the port of listen_tls).")
    smtp_host: str | None = Field(None, description="Submission host name (default: the listener's hostname).")
    smtp_port: int = Field(587, description="Submission port clients use (STARTTLS, TM3.2C).")


def _methods(listener: ImapInbound, kind: str | None) -> list[str]:
    access = listener.config.access
    methods = ["TLS-client-cert"]
    if kind != "application" and access.oidc is not None:
        methods.append("OAuth2")
    if any(k in access.password_kinds for k in ([kind] if kind else ["personal", "organisational"])):
        methods.append("password-cleartext")
    return methods


def _endpoints(listener: ImapInbound) -> tuple[str, int, str, int]:
    cfg = listener.config.autoconfig or AutoconfigConfig()
    imap_port = cfg.imap_port or host_port(listener.config.listen_tls or listener.config.listen or ":993")[1]
    host = listener.config.hostname
    return cfg.imap_host or host, imap_port, cfg.smtp_host or host, cfg.smtp_port


def autoconfig_xml(listener: ImapInbound, address: str = "") -> bytes:
    """The ``clientConfig`` document (version 1.1) for the hosted domains."""
    box = listener.access.mailboxes.get(address) if address else None
    methods = _methods(listener, box.kind if box else None)
    imap_host, imap_port, smtp_host, smtp_port = _endpoints(listener)
    cfg = listener.config.autoconfig or AutoconfigConfig()
    root = etree.Element("clientConfig", version="1.1")
    provider = etree.SubElement(root, "emailProvider", id=sorted(listener.access.mailboxes.domains or {"hub"})[0])
    for domain in sorted(listener.access.mailboxes.domains):
        etree.SubElement(provider, "domain").text = domain
    etree.SubElement(provider, "displayName").text = cfg.display_name
    etree.SubElement(provider, "displayShortName").text = cfg.display_name
    tls = "SSL" if listener.config.listen_tls else "STARTTLS"
    for tag, kind, host, port, socket in (
        ("incomingServer", "imap", imap_host, imap_port, tls),
        ("outgoingServer", "smtp", smtp_host, smtp_port, "STARTTLS"),
    ):
        server = etree.SubElement(provider, tag, type=kind)
        etree.SubElement(server, "hostname").text = host
        etree.SubElement(server, "port").text = str(port)
        etree.SubElement(server, "socketType").text = socket
        for method in methods:
            etree.SubElement(server, "authentication").text = method
        etree.SubElement(server, "username").text = "%EMAILADDRESS%"
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def autodiscover_xml(listener: ImapInbound, address: str) -> bytes:
    """The POX Autodiscover answer: IMAP (SSL) and SMTP (STARTTLS) for this address."""
    imap_host, imap_port, smtp_host, smtp_port = _endpoints(listener)
    root = etree.Element(f"{{{_AUTODISCOVER}}}Autodiscover", nsmap={None: _AUTODISCOVER})
    response = etree.SubElement(root, f"{{{_OUTLOOK}}}Response", nsmap={None: _OUTLOOK})
    account = etree.SubElement(response, f"{{{_OUTLOOK}}}Account")
    etree.SubElement(account, f"{{{_OUTLOOK}}}AccountType").text = "email"
    etree.SubElement(account, f"{{{_OUTLOOK}}}Action").text = "settings"
    for kind, host, port, ssl_on in (("IMAP", imap_host, imap_port, True), ("SMTP", smtp_host, smtp_port, False)):
        proto = etree.SubElement(account, f"{{{_OUTLOOK}}}Protocol")
        for tag, value in (
            ("Type", kind), ("Server", host), ("Port", str(port)), ("LoginName", address), ("SPA", "off"),
            ("SSL", "on" if ssl_on else "off"), ("Encryption", "SSL" if ssl_on else "TLS"), ("AuthRequired", "on"),
        ):  # fmt: skip
            etree.SubElement(proto, f"{{{_OUTLOOK}}}{tag}").text = value
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def autoconfig_routes(listener: ImapInbound) -> list[tuple[str, str, object]]:
    async def autoconfig(request: web.Request) -> web.Response:
        body = autoconfig_xml(listener, request.query.get("emailaddress", "")[:320])
        return web.Response(body=body, content_type="text/xml", charset="utf-8")

    async def autodiscover(request: web.Request) -> web.Response:
        if (request.content_length or 0) > 16_384:
            raise web.HTTPRequestEntityTooLarge(max_size=16_384, actual_size=request.content_length or 0)
        try:
            root = parse_xml(await request.read(), max_bytes=16_384, max_depth=8)
        except MessageError:
            raise web.HTTPBadRequest(text="not an Autodiscover request") from None
        found = root.find(f".//{{{_AUTODISCOVER_REQUEST}}}EMailAddress")
        address = (found.text or "").strip() if found is not None else ""
        if not _ADDRESS.match(address):
            raise web.HTTPBadRequest(text="EMailAddress missing")
        return web.Response(body=autodiscover_xml(listener, address), content_type="text/xml", charset="utf-8")

    return [
        ("GET", "/.well-known/autoconfig/mail/config-v1.1.xml", autoconfig),
        ("GET", "/mail/config-v1.1.xml", autoconfig),
        ("POST", "/autodiscover/autodiscover.xml", autodiscover),
        ("POST", "/Autodiscover/Autodiscover.xml", autodiscover),
    ]
