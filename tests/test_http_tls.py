"""The hub's HTTP port over mutual TLS: the FHIR intake and the API answer only clients with a certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from hub.tls import TlsConfig, client_context
from tests.hubkit import running_hub, write_config
from tests.tlskit import make_pki


async def test_https_with_client_certificates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    stranger = make_pki(tmp_path / "stranger", ca_name="Another CA")
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key), "ca_file": str(pki.ca),
           "require_client_cert": True}  # fmt: skip
    config = write_config(
        tmp_path, peer_port=1, http={"listen": "127.0.0.1:0", "tls": tls},
        listeners={"mllp_in": {"type": "mllp", "listen": "127.0.0.1:0"}, "fhir_in": {"type": "fhir"}},
    )  # fmt: skip
    async with running_hub(config) as hub:
        url = f"https://127.0.0.1:{hub.http_port}/fhir/metadata"
        good = client_context(TlsConfig(ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                                        key_file=str(pki.client_key)))  # fmt: skip
        async with aiohttp.ClientSession() as http:
            async with http.get(url, ssl=good) as resp:
                assert resp.status == 200
                assert (await resp.json())["resourceType"] == "CapabilityStatement"
            wrong_cert = client_context(TlsConfig(ca_file=str(pki.ca), cert_file=str(stranger.client_cert),
                                                  key_file=str(stranger.client_key)))  # fmt: skip
            for ctx in (wrong_cert, client_context(TlsConfig(ca_file=str(pki.ca)))):
                with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                    async with http.get(url, ssl=ctx) as resp:
                        await resp.read()
            with pytest.raises(aiohttp.ClientError):  # plain HTTP on the TLS port
                async with http.get(f"http://127.0.0.1:{hub.http_port}/healthz") as resp:
                    await resp.read()
