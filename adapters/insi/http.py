"""An InsiResolver that asks an INSi endpoint speaking the sandbox's JSON (the real SOAP client comes later)."""

from __future__ import annotations

import ssl

import aiohttp

from adapters.tls import TlsConfig, VerifyingConnector, client_context
from hub.errors import NotConnected, Rejected, Retryable
from hub.identity.insi import InsiIdentity, InsiOutcome, InsiQuery, InsiResult, traits_from_json

__all__ = ["HttpInsiResolver"]


class HttpInsiResolver:
    def __init__(
        self, url: str, *, tls: TlsConfig | None = None, timeout_secs: float = 10.0, token: str | None = None
    ) -> None:
        """`token`: a bearer token, e.g. the admin API's one that the sandbox on the hub's port asks for."""
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        # True: aiohttp's default verification (what None meant, before aiohttp deprecated it)
        self._ssl: ssl.SSLContext | bool = client_context(tls) if tls else True
        self._timeout = aiohttp.ClientTimeout(total=timeout_secs)

    async def resolve(self, query: InsiQuery) -> InsiResult:
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout, connector=VerifyingConnector()) as session,
                session.post(self.url, json=query.to_json(), ssl=self._ssl, headers=self._headers) as resp,
            ):
                if resp.status >= 500:
                    raise Retryable(f"INSi answered HTTP {resp.status}")
                if resp.status >= 400:
                    raise Rejected(f"INSi refused the query (HTTP {resp.status})")
                data = await resp.json()
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise NotConnected(f"INSi unreachable: {type(exc).__name__}") from None
        outcome = InsiOutcome(data["outcome"])
        if outcome is not InsiOutcome.FOUND:
            return InsiResult(outcome)
        ident = data["identity"]
        return InsiResult(outcome, InsiIdentity(ins=ident["ins"], oid=ident["oid"], traits=traits_from_json(ident)))
