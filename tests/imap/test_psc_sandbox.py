"""The Pro Santé Connect sandbox refuses what an OAuth 2.0 / OpenID Connect provider must: one test per row of
the check table in adapters/sandboxes/psc.py, and its tokens verify against its published keys."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest

from adapters.sandboxes.psc import PscSandbox, PscSandboxConfig
from adapters.smtp.oidc import OidcConfig, OidcVerifier, TokenRefused
from tests.conftest import free_port

CB = "http://127.0.0.1/cb"
GOOD = {"response_type": "code", "client_id": "hub-mail", "redirect_uri": CB, "scope": "openid", "state": "xyz",
        "login_hint": "810000000001"}  # fmt: skip
BASIC = {"Authorization": "Basic " + base64.b64encode(b"hub-mail:hub-mail-secret").decode()}


@pytest.fixture
async def psc() -> AsyncIterator[tuple[PscSandbox, aiohttp.ClientSession]]:
    sandbox = PscSandbox("psc", PscSandboxConfig(listen=f"127.0.0.1:{free_port()}"))
    await sandbox.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield sandbox, http
    finally:
        await sandbox.stop()


async def authorize(psc: PscSandbox, http: aiohttp.ClientSession, **over: str) -> tuple[int, dict[str, Any]]:
    """(status, redirect query or JSON error) of GET /authorize."""
    async with http.get(f"{psc.issuer}/authorize", params={**GOOD, **over}, allow_redirects=False) as r:
        if r.status == 302:
            location = r.headers["Location"]
            assert location.startswith(CB)
            return 302, {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        return r.status, await r.json()


async def token(
    psc: PscSandbox, http: aiohttp.ClientSession, form: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{psc.issuer}/token", data=form, headers=BASIC if headers is None else headers) as r:
        return r.status, await r.json()


async def test_unknown_client_or_unregistered_redirect_is_not_redirected(psc: Any) -> None:
    sandbox, http = psc
    assert (await authorize(sandbox, http, client_id="intruder"))[0] == 400
    status, body = await authorize(sandbox, http, redirect_uri="http://evil.test/cb")
    assert status == 400 and body["error"] == "invalid_request"


async def test_response_type_other_than_code(psc: Any) -> None:
    assert await authorize(*psc, response_type="token") == (302, {"error": "unsupported_response_type",
                                                                  "state": "xyz"})  # fmt: skip


async def test_scope_without_openid(psc: Any) -> None:
    assert (await authorize(*psc, scope="profile"))[1]["error"] == "invalid_scope"


async def test_unknown_professional(psc: Any) -> None:
    assert (await authorize(*psc, login_hint="899999999999"))[1]["error"] == "access_denied"


async def test_client_authentication(psc: Any) -> None:
    sandbox, http = psc
    _, q = await authorize(sandbox, http)
    form = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": CB}
    bad = {"Authorization": "Basic " + base64.b64encode(b"hub-mail:wrong").decode()}
    status, body = await token(sandbox, http, form, bad)
    assert (status, body["error"]) == (401, "invalid_client")
    assert (await token(sandbox, http, form, {}))[0] == 401


async def test_grant_type_other_than_authorization_code(psc: Any) -> None:
    status, body = await token(*psc, {"grant_type": "password", "username": "x", "password": "y"})
    assert (status, body["error"]) == (400, "unsupported_grant_type")


async def test_a_code_works_once_for_its_redirect_only(psc: Any) -> None:
    sandbox, http = psc
    _, q = await authorize(sandbox, http)
    other = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": "http://127.0.0.1/other"}
    assert (await token(sandbox, http, other))[1]["error"] == "invalid_grant"  # and the code is now spent
    _, q = await authorize(sandbox, http)
    form = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": CB}
    status, body = await token(sandbox, http, form)
    assert status == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert (await token(sandbox, http, form))[1]["error"] == "invalid_grant"  # replayed

    # The access token verifies against the published keys, and names the professional.
    verifier = OidcVerifier(OidcConfig(issuer=sandbox.issuer, audiences=["hub-mail"]))
    claims = await verifier.verify(body["access_token"])
    assert verifier.subject(claims) == "810000000001"
    assert jwt.get_unverified_header(body["id_token"])["kid"] == sandbox.kid
    with pytest.raises(TokenRefused, match="another client"):
        await OidcVerifier(OidcConfig(issuer=sandbox.issuer, audiences=["other-app"])).verify(body["access_token"])
