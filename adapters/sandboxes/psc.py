"""Pro Santé Connect sandbox: an OpenID Connect provider issuing signed tokens for test professionals.

Pro Santé Connect (PSC) is the national OpenID Connect provider of health
professionals (CPS card or e-CPS app). This stand-in runs offline on its own
port and implements the authorization code flow (RFC 6749 §4.1, OpenID
Connect Core 1.0 §3.1) without the card: the professional is chosen with
``login_hint`` (their idNat_PS). It publishes its discovery document and
its keys, so a relying party (the hub's IMAP and submission ports) checks
its tokens exactly as it would PSC's.

=======================  =============================================  ==============================
endpoint                 what                                           spec
=======================  =============================================  ==============================
GET  /.well-known/...    discovery: issuer, endpoints, algorithms        OIDC Discovery 1.0 §3, §4
GET  /jwks               public signing keys (RSA, ``kid``)              RFC 7517
GET  /authorize          302 to ``redirect_uri`` with ``code``+``state``  RFC 6749 §4.1.1-4.1.2
POST /token              code → access_token, id_token (RS256 JWTs)      RFC 6749 §4.1.3-4.1.4, §5.1
GET  /professionals      the test professionals (JSON)                   (sandbox only)
=======================  =============================================  ==============================

What it refuses, as an authorization server must (error codes of RFC 6749):

===========================================================  ==========================  ==========
check                                                        answer                      spec
===========================================================  ==========================  ==========
unknown ``client_id`` or ``redirect_uri`` not registered     400 ``invalid_request``     §4.1.2.1
                                                             (never redirected)
``response_type`` other than ``code``                        302 ``unsupported_response  §4.1.2.1
                                                             _type``
``scope`` without ``openid``                                 302 ``invalid_scope``       §4.1.2.1;
                                                                                         OIDC §3.1.2.1
``login_hint`` not a known professional                      302 ``access_denied``       §4.1.2.1
token request without or with a wrong client secret          401 ``invalid_client``      §5.2
``grant_type`` other than ``authorization_code``             400 ``unsupported_grant     §5.2
                                                             _type``
unknown, used or expired code; other client; other           400 ``invalid_grant``       §4.1.3,
``redirect_uri``                                                                         §10.5
===========================================================  ==========================  ==========

Token claims: ``iss``, ``sub``, ``aud``, ``azp`` (the client), ``exp``,
``iat``, ``auth_time``, ``jti``, ``scope``, ``preferred_username`` and
``SubjectNameID`` (the idNat_PS), ``given_name``, ``family_name``, ``acr``.
Which claim carries the idNat_PS in PSC's real tokens was not read in a
primary source (DOMAIN.md §6): the relying party's ``subject_claim`` says
which one it reads.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import Field

from adapters.sandboxes.http_site import serve_app
from hub.registry import ComponentConfig, register

__all__ = ["DEFAULT_PROFESSIONALS", "PscClient", "PscSandbox", "PscSandboxConfig"]

#: Synthetic professionals: idNat_PS = 8 + an invented 11-digit RPPS.
DEFAULT_PROFESSIONALS: list[dict[str, str]] = [
    {"id_nat": "810000000001", "given_name": "Claire", "family_name": "MARTIN", "profession": "Médecin"},
    {"id_nat": "810000000002", "given_name": "Paul", "family_name": "DURAND", "profession": "Médecin"},
    {"id_nat": "810000000003", "given_name": "Lucie", "family_name": "BERNARD", "profession": "Infirmier"},
]


class PscClient(ComponentConfig):
    client_id: str = Field(description="The relying party's client id.")
    client_secret: str = Field(description="Its secret (client_secret_basic or client_secret_post).")
    redirect_uris: list[str] = Field(default_factory=list, description="Registered redirect URIs (exact match).")


class PscSandboxConfig(ComponentConfig):
    listen: str = Field("127.0.0.1:8092", description="host:port of the provider.")
    issuer: str | None = Field(None, description="Issuer identifier (default: http://<listen>).")
    token_lifetime_secs: int = Field(
        300, ge=1, le=86400, description="Access token lifetime (PSC's are a few minutes)."
    )
    professionals: list[dict[str, str]] = Field(
        default_factory=lambda: list(DEFAULT_PROFESSIONALS),
        description="Test professionals: id_nat (idNat_PS), given_name, family_name, profession.",
    )
    clients: list[PscClient] = Field(
        default_factory=lambda: [
            PscClient(client_id="hub-mail", client_secret="hub-mail-secret", redirect_uris=["http://127.0.0.1/cb"])
        ],
        description="Registered relying parties.",
    )


@register("sandbox", "psc", config=PscSandboxConfig)
class PscSandbox:
    """Pro Santé Connect stand-in: discovery, JWKS, authorization code flow, RS256 tokens."""

    def __init__(self, name: str = "psc", config: PscSandboxConfig | None = None) -> None:
        self.name = name
        self.config = config or PscSandboxConfig()
        self.issuer = self.config.issuer or f"http://{self.config.listen}"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        thumb = hashlib.sha256(str(sorted(public.items())).encode()).digest()
        self.kid = base64.urlsafe_b64encode(thumb[:12]).decode().rstrip("=")
        self._jwk = {**public, "kid": self.kid, "use": "sig", "alg": "RS256"}
        self.people = {p["id_nat"]: p for p in self.config.professionals}
        self.clients = {c.client_id: c for c in self.config.clients}
        self._codes: dict[str, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.issued = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_get("/professionals", self._professionals)
        self._runner, self.port = await serve_app(app, self.config.listen)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def describe(self) -> dict[str, Any]:
        return {
            "sandbox": self.name,
            "kind": "psc",
            "issuer": self.issuer,
            "listen": self.config.listen,
            "professionals": len(self.people),
        }

    def http_routes(self) -> list[tuple[str, str, Any]]:
        """On the hub's HTTP port too: GET /sandboxes/<name>/professionals."""
        return [("GET", "professionals", self._professionals)]

    # -- tokens ------------------------------------------------------------------------------------
    def issue(self, id_nat: str, *, client_id: str = "hub-mail", lifetime_secs: int | None = None) -> str:
        """An access token for a test professional (what /token returns; tests also call it directly)."""
        person = self.people[id_nat]
        now = int(time.time())
        lifetime = self.config.token_lifetime_secs if lifetime_secs is None else lifetime_secs
        claims = {
            "iss": self.issuer, "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"psc:{id_nat}")),
            "aud": [client_id], "azp": client_id, "typ": "Bearer",
            "iat": now, "auth_time": now, "exp": now + lifetime, "jti": str(uuid.uuid4()),
            "scope": "openid scope_all", "acr": "eidas1",
            "preferred_username": id_nat, "SubjectNameID": id_nat,
            "given_name": person.get("given_name", ""), "family_name": person.get("family_name", ""),
        }  # fmt: skip
        self.issued += 1
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    # -- HTTP --------------------------------------------------------------------------------------
    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "scopes_supported": ["openid", "scope_all"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self._jwk]})

    async def _professionals(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.people.values()))

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        client = self.clients.get(q.get("client_id", ""))
        redirect = q.get("redirect_uri", "")
        if client is None or redirect not in client.redirect_uris:
            # RFC 6749 §4.1.2.1: never redirect to an unverified URI.
            return _oauth_error(400, "invalid_request", "unknown client or unregistered redirect_uri")

        def back(**params: str) -> web.Response:
            if q.get("state"):
                params["state"] = q["state"]
            sep = "&" if "?" in redirect else "?"
            raise web.HTTPFound(f"{redirect}{sep}{urlencode(params)}")

        if q.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if "openid" not in q.get("scope", "").split():
            return back(error="invalid_scope")
        if q.get("login_hint", "") not in self.people:
            return back(error="access_denied")
        code = secrets.token_urlsafe(24)
        self._codes[code] = {
            "client_id": client.client_id, "redirect_uri": redirect, "id_nat": q["login_hint"],
            "nonce": q.get("nonce", ""), "expires": time.monotonic() + 60,
        }  # fmt: skip
        return back(code=code)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return _oauth_error(401, "invalid_client", "unreadable Basic credentials")
        client = self.clients.get(client_id)
        if client is None or not secrets.compare_digest(secret.encode(), client.client_secret.encode()):
            return _oauth_error(401, "invalid_client", "client authentication failed")
        if form.get("grant_type") != "authorization_code":
            return _oauth_error(400, "unsupported_grant_type", "only authorization_code")
        grant = self._codes.pop(str(form.get("code", "")), None)  # a code is used once (§4.1.2, §10.5)
        if (
            grant is None
            or grant["expires"] < time.monotonic()
            or grant["client_id"] != client_id
            or grant["redirect_uri"] != form.get("redirect_uri")
        ):
            return _oauth_error(400, "invalid_grant", "unknown, used or expired code, or another client/redirect")
        access = self.issue(grant["id_nat"], client_id=client_id)
        id_claims = {
            **jwt.decode(access, options={"verify_signature": False}),
            **({"nonce": grant["nonce"]} if grant["nonce"] else {}),
        }
        id_token = jwt.encode(id_claims, self._key, algorithm="RS256", headers={"kid": self.kid})
        return web.json_response(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": self.config.token_lifetime_secs,
                "id_token": id_token,
                "scope": "openid scope_all",
            },
            headers={"Cache-Control": "no-store"},
        )


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="psc-sandbox"'
    return web.json_response({"error": error, "error_description": description}, status=status, headers=headers)
