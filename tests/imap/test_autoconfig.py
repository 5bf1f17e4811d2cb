"""Client auto-configuration (TM3.3C): Autoconfig and Autodiscover documents, read as a mail client would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from lxml import etree

from hub.runtime import Hub
from tests.hubkit import running_hub
from tests.imap.imapkit import ORG_MAILBOX, ImapSetup, imap_hub_config
from tests.smtp.smtpkit import APP_MAILBOX, DOCTOR, HUB_DOMAIN

pytestmark = pytest.mark.usefixtures("needs_dovecot")

OUTLOOK = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
REQUEST = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
    "<Request><EMailAddress>{}</EMailAddress>"
    "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
    "</AcceptableResponseSchema></Request></Autodiscover>"
)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, ImapSetup, str]]:
    setup = ImapSetup(tmp_path)
    async with running_hub(imap_hub_config(setup, dpi_port=1)) as running:
        yield running, setup, f"http://127.0.0.1:{running.http_port}"


async def get_config(base: str, path: str, address: str | None = None) -> etree._Element:
    params = {"emailaddress": address} if address else {}
    async with aiohttp.ClientSession() as http, http.get(base + path, params=params) as r:
        assert r.status == 200 and r.content_type == "text/xml"
        return etree.fromstring(await r.read())


def servers(doc: etree._Element) -> dict[str, dict[str, object]]:
    found = {}
    for server in doc.iter("incomingServer", "outgoingServer"):
        found[server.get("type")] = {
            "host": server.findtext("hostname"), "port": int(server.findtext("port") or 0),
            "socket": server.findtext("socketType"), "auth": [a.text for a in server.iter("authentication")],
        }  # fmt: skip
    return found


async def test_autoconfig_names_the_imap_and_submission_ports_and_the_ways_in(
    hub: tuple[Hub, ImapSetup, str],
) -> None:
    _, setup, base = hub
    doc = await get_config(base, "/.well-known/autoconfig/mail/config-v1.1.xml")
    assert doc.get("version") == "1.1" and HUB_DOMAIN in [d.text for d in doc.iter("domain")]
    found = servers(doc)
    assert found["imap"] == {"host": "localhost", "port": setup.imaps_port, "socket": "SSL",
                             "auth": ["TLS-client-cert", "OAuth2"]}  # fmt: skip
    assert found["smtp"]["socket"] == "STARTTLS" and found["smtp"]["port"] == 587
    # An application mailbox opens by certificate only; the same document for an address not hosted here.
    app = servers(await get_config(base, "/mail/config-v1.1.xml", APP_MAILBOX))
    assert app["imap"]["auth"] == ["TLS-client-cert"]
    assert servers(await get_config(base, "/mail/config-v1.1.xml", f"nobody@{HUB_DOMAIN}")) == found
    assert servers(await get_config(base, "/mail/config-v1.1.xml", DOCTOR)) == found


async def test_autodiscover_answers_a_pox_request_and_refuses_junk(hub: tuple[Hub, ImapSetup, str]) -> None:
    _, setup, base = hub
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/autodiscover/autodiscover.xml", data=REQUEST.format(ORG_MAILBOX)) as r:
            assert r.status == 200
            doc = etree.fromstring(await r.read())
        protocols = {p.findtext(f"{OUTLOOK}Type"): p for p in doc.iter(f"{OUTLOOK}Protocol")}
        assert protocols["IMAP"].findtext(f"{OUTLOOK}Port") == str(setup.imaps_port)
        assert protocols["IMAP"].findtext(f"{OUTLOOK}SSL") == "on"
        assert protocols["SMTP"].findtext(f"{OUTLOOK}LoginName") == ORG_MAILBOX
        hostile = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
        for body in (hostile, "not xml", REQUEST.format("<script>")):
            async with http.post(f"{base}/autodiscover/autodiscover.xml", data=body) as r:
                assert r.status == 400
