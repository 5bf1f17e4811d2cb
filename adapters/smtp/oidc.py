"""OAuth 2.0 bearer tokens from an OpenID Connect issuer (Pro Santé Connect), checked by the hub.

A mail client of a professional sends the PSC access token in SASL
OAUTHBEARER (RFC 7628) or XOAUTH2; the IMAP server (Dovecot, through the
hub's checkpassword) and the submission port both hand it to
:class:`OidcVerifier`, which accepts a token only when:

* it is a JWS signed with one of the issuer's keys (JWKS found through
  ``<issuer>/.well-known/openid-configuration``, OpenID Connect Discovery 1.0
  §4; re-read when a token names an unknown ``kid``, at most once a minute);
* ``alg`` is one the verifier allows (never ``none``, never HMAC: an RS/ES key
  used as an HMAC secret is the classic JWT confusion attack);
* ``iss`` is the configured issuer, ``exp`` is in the future and ``nbf`` /
  ``iat`` are not (RFC 7519 §4.1, a leeway of ``leeway_secs``), ``aud`` or
  ``azp`` names an accepted client when ``audiences`` is set;
* the subject claim (``preferred_username`` by default: the idNat_PS on PSC,
  unverified in primary form, see DOMAIN.md §6) is present.

PyJWT does the JWS and claim checks (a well-kept library rather than
hand-written crypto); this module only finds the keys and says which claims
matter.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import jwt
from pydantic import Field

from hub.registry import ComponentConfig

__all__ = ["OidcConfig", "OidcVerifier", "TokenRefused"]

_ALLOWED_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class OidcConfig(ComponentConfig):
    issuer: str = Field(
        description="The OpenID Connect issuer whose access tokens open mailboxes (Pro Santé Connect, or the "
        "`psc` sandbox: http://127.0.0.1:8080/sandboxes/psc)."
    )
    audiences: list[str] = Field(
        default_factory=list,
        description="Accepted `aud` / `azp` values (the operator's client ids at the issuer); empty: not checked.",
    )
    subject_claim: str = Field(
        "preferred_username", description="Claim holding the professional's idNat_PS (`8`+RPPS)."
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256"],
        description=f"Signature algorithms accepted, among {', '.join(_ALLOWED_ALGS)}.",
    )
    leeway_secs: float = Field(30.0, ge=0, le=300, description="Clock skew tolerated on exp, nbf and iat.")
    http_timeout_secs: float = Field(5.0, gt=0, description="Timeout of the discovery and JWKS requests.")


class TokenRefused(Exception):
    """The token does not open anything; the text is the hub's, safe to log (never the token)."""


class OidcVerifier:
    """Check bearer tokens against one issuer; keys fetched lazily, cached, refreshed on an unknown kid."""

    def __init__(self, config: OidcConfig) -> None:
        bad = [a for a in config.algorithms if a not in _ALLOWED_ALGS]
        if bad:
            raise ValueError(f"algorithms not allowed for access tokens: {bad}")
        self.config = config
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or TokenRefused."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("not a signed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.config.algorithms:
            raise TokenRefused(f"signature algorithm {str(alg)[:10]!r} not accepted")
        key = await self._key(str(kid or ""))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                issuer=self.config.issuer,
                audience=None,
                leeway=self.config.leeway_secs,
                options={"require": ["exp", "iss"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("token expired") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused("token from another issuer") from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"token refused ({type(exc).__name__})") from None
        if self.config.audiences:
            aud = claims.get("aud")
            auds = set(aud if isinstance(aud, list) else [aud]) | {claims.get("azp")}
            if not auds & set(self.config.audiences):
                raise TokenRefused("token issued for another client")
        if not isinstance(claims.get(self.config.subject_claim), str):
            raise TokenRefused(f"token without {self.config.subject_claim}")
        return claims

    def subject(self, claims: dict[str, Any]) -> str:
        return str(claims[self.config.subject_claim])

    async def _key(self, kid: str) -> jwt.PyJWK:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and (not self._fetched_at or time.monotonic() - self._fetched_at > 60):
                try:
                    self._keys = await asyncio.to_thread(self._fetch_keys)
                except (OSError, ValueError, jwt.PyJWTError) as exc:
                    # No key, no decision: the caller answers "try again" rather than "wrong credentials".
                    raise ConnectionError(f"issuer keys unavailable ({type(exc).__name__})") from None
                self._fetched_at = time.monotonic()
        if kid not in self._keys:
            if not kid and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            raise TokenRefused("token signed with a key the issuer does not publish")
        return self._keys[kid]

    def _fetch_keys(self) -> dict[str, jwt.PyJWK]:
        discovery = self._get_json(self.config.issuer.rstrip("/") + "/.well-known/openid-configuration")
        if discovery.get("issuer") != self.config.issuer:
            # OpenID Connect Discovery §4.3: the issuer in the document must be the one asked for.
            raise ValueError("discovery document names another issuer")
        jwks = jwt.PyJWKSet.from_dict(self._get_json(str(discovery["jwks_uri"])))
        return {str(k.key_id or ""): k for k in jwks.keys}

    def _get_json(self, url: str) -> dict[str, Any]:
        if not url.startswith(("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")):
            raise ValueError("issuer endpoints must be https (plain http only on loopback)")
        with urllib.request.urlopen(url, timeout=self.config.http_timeout_secs) as resp:
            data = json.loads(resp.read(1_000_000))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
