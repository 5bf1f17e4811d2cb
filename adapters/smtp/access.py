"""Who may open which hosted mailbox: one decision for IMAP (Dovecot) and for SMTP submission.

The three ways in, as the MSSanté client interface describes them (DOMAIN.md §6):

==============  ====================================================  =========================================
method          credential                                            opens
==============  ====================================================  =========================================
certificate     a TLS client certificate chaining to the trust         the mailboxes listing its name in
                anchors (CPS/CPx card, or an application's own)        ``certificates`` (one, or the one asked
                                                                       for with the SASL EXTERNAL authzid)
token           an access token of the configured OpenID Connect      a personal mailbox whose ``owner`` is the
                issuer (Pro Santé Connect), SASL OAUTHBEARER/XOAUTH2   token's idNat_PS, an organisational one
                                                                       listing it in ``members``
password        ``password_hash`` of the mailbox                      that mailbox, only when its kind is in
                                                                       ``password_kinds`` (none by default)
==============  ====================================================  =========================================

A suspended mailbox opens for nobody. Application mailboxes open only by
certificate (an application has no card and no PSC account). Refusals carry
the hub's reason for its log; the client only ever sees "authentication
failed", so that nobody can probe which mailboxes exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from adapters.smtp.common import HostedMailbox, Mailboxes, MailboxKind, verify_password
from adapters.smtp.oidc import OidcConfig, OidcVerifier, TokenRefused
from hub.registry import ComponentConfig

__all__ = ["AccessConfig", "AccessDenied", "Grant", "MailAccess"]

Method = Literal["certificate", "token", "password"]


class AccessConfig(ComponentConfig):
    """How clients prove who they are (shared by the IMAP listener and the submission port)."""

    oidc: OidcConfig | None = Field(
        None, description="The OpenID Connect issuer (Pro Santé Connect) whose bearer tokens open mailboxes."
    )
    password_kinds: list[MailboxKind] = Field(
        default_factory=list,
        description="Mailbox kinds a password may open (MSSanté wants a card or a token for professionals and a "
        "certificate for applications: leave empty outside a demo).",
    )
    cert_username_field: str = Field(
        "commonName", description="Certificate subject field that names the holder (Dovecot ssl_cert_username_field)."
    )


class AccessDenied(Exception):
    """No mailbox opens with this credential; the text is for the hub's log only."""


class IssuerUnavailable(Exception):
    """The token could not be checked now (issuer keys unreachable): a temporary failure."""


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    mailbox: HostedMailbox
    method: Method


class MailAccess:
    """The access decision over the hosted mailboxes."""

    def __init__(self, mailboxes: Iterable[HostedMailbox] | Mailboxes, config: AccessConfig) -> None:
        self.mailboxes = mailboxes if isinstance(mailboxes, Mailboxes) else Mailboxes(mailboxes)
        self.config = config
        self.oidc = OidcVerifier(config.oidc) if config.oidc else None

    def _usable(self, address: str) -> HostedMailbox:
        box = self.mailboxes.get(address)
        if box is None:
            raise AccessDenied("no such mailbox")
        if box.status != "active":
            raise AccessDenied("mailbox suspended")
        return box

    def by_certificate(self, cert_name: str, requested: str = "") -> Grant:
        """The mailbox a verified client certificate opens (``requested``: the SASL authzid, if any)."""
        if not cert_name:
            raise AccessDenied("no verified client certificate")
        boxes = [b for b in self.mailboxes.by_address.values() if cert_name in b.certificates]
        if requested:
            boxes = [b for b in boxes if b.address == requested.lower()]
        if not boxes:
            raise AccessDenied("certificate not linked to the mailbox")
        if len(boxes) > 1:
            raise AccessDenied("certificate linked to several mailboxes: name one (authzid)")
        return Grant(self._usable(boxes[0].address), "certificate")

    async def _professional(self, token: str) -> str:
        if self.oidc is None:
            raise AccessDenied("bearer tokens are not accepted here")
        try:
            claims = await self.oidc.verify(token)
        except TokenRefused as exc:
            raise AccessDenied(str(exc)) from None
        except ConnectionError as exc:
            raise IssuerUnavailable(str(exc)) from None
        return self.oidc.subject(claims)

    @staticmethod
    def _token_opens(who: str, box: HostedMailbox) -> bool:
        return box.kind != "application" and (who == box.owner or who in box.members)

    async def by_token(self, token: str, requested: str) -> Grant:
        """The mailbox ``requested`` (the SASL user) if the bearer token's professional may open it."""
        who = await self._professional(token)
        box = self._usable(requested)
        if box.kind == "application":
            raise AccessDenied("application mailboxes open by certificate only")
        if not self._token_opens(who, box):
            raise AccessDenied("token subject may not open this mailbox")
        return Grant(box, "token")

    async def token_mailbox(self, token: str) -> Grant:
        """The one mailbox a token opens when the mailbox is not named (Dovecot's introspection): the
        professional's personal mailbox, else their only organisational one."""
        who = await self._professional(token)
        boxes = [b for b in self.mailboxes.by_address.values() if self._token_opens(who, b)]
        personal = [b for b in boxes if b.kind == "personal" and b.owner == who]
        chosen = personal or boxes
        if len(chosen) != 1:
            raise AccessDenied("token opens no mailbox here" if not chosen else "token opens several mailboxes")
        return Grant(self._usable(chosen[0].address), "token")

    async def by_password(self, login: str, password: str) -> Grant:
        """The mailbox ``login`` if its kind allows passwords and the password matches (scrypt, in a thread)."""
        box = self.mailboxes.get(login)
        allowed = box is not None and box.kind in self.config.password_kinds and box.password_hash is not None
        # Same cost whether the mailbox exists or not (verify_password hashes a dummy for None).
        ok = await asyncio.to_thread(verify_password, password, box.password_hash if allowed and box else None)
        if not ok or box is None:
            raise AccessDenied("password refused" if allowed else "no password login for this mailbox")
        return Grant(self._usable(box.address), "password")


def sasl_bearer(mechanism: str, blob: bytes) -> tuple[str, str]:
    """(user, token) from an OAUTHBEARER (RFC 7628 §3.1) or XOAUTH2 client response; ValueError if malformed."""
    text = blob.decode("utf-8")
    if mechanism == "OAUTHBEARER":
        gs2, _, rest = text.partition(",")
        if gs2 not in ("n", "y") and not gs2.startswith("p="):
            raise ValueError("bad gs2 header")
        authzid, _, rest = rest.partition(",")
        user = authzid[2:] if authzid.startswith("a=") else ""
        user = user.replace("=2C", ",").replace("=3D", "=")
        fields = dict(kv.split("=", 1) for kv in rest.split("\x01") if "=" in kv)
    elif mechanism == "XOAUTH2":
        fields = dict(kv.split("=", 1) for kv in text.split("\x01") if "=" in kv)
        user = fields.get("user", "")
    else:
        raise ValueError("not a bearer mechanism")
    auth = fields.get("auth", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token or not user:
        raise ValueError("no bearer token or no user")
    return user, token.strip()
