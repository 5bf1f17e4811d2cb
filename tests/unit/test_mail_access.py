"""Who opens which mailbox (adapters/smtp/access.py) and what a bearer token must be (adapters/smtp/oidc.py),
without Dovecot: the decisions IMAP and submission both rely on. Tokens come from the PSC sandbox on loopback."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from adapters.sandboxes.psc import PscSandbox, PscSandboxConfig
from adapters.smtp.access import AccessConfig, AccessDenied, IssuerUnavailable, MailAccess, sasl_bearer
from adapters.smtp.common import HostedMailbox, Mailboxes, hash_password
from adapters.smtp.directory import DirectoryError, MailboxDirectory, annuaire_rows
from adapters.smtp.oidc import OidcConfig, OidcVerifier, TokenRefused
from tests.conftest import free_port

DOC, ORG, APP, OFF = "dr@hub.test", "org@hub.test", "app@hub.test", "off@hub.test"
CLAIRE, PAUL = "810000000001", "810000000002"
_HASH = hash_password("pw")


def boxes() -> list[HostedMailbox]:
    return [
        HostedMailbox(address=DOC, kind="personal", owner=CLAIRE, certificates=["card-claire"]),
        HostedMailbox(address=ORG, kind="organisational", members=[CLAIRE], certificates=["card-claire"],
                      password_hash=_HASH),
        HostedMailbox(address=APP, kind="application", certificates=["app-cert"], password_hash=_HASH),
        HostedMailbox(address=OFF, kind="personal", owner=PAUL, status="suspended", password_hash=_HASH),
    ]  # fmt: skip


@pytest.fixture
async def psc() -> AsyncIterator[PscSandbox]:
    sandbox = PscSandbox("psc", PscSandboxConfig(listen=f"127.0.0.1:{free_port()}"))
    await sandbox.start()
    yield sandbox
    await sandbox.stop()


def access(psc: PscSandbox | None = None, **config: object) -> MailAccess:
    oidc = {"oidc": OidcConfig(issuer=psc.issuer)} if psc else {}
    return MailAccess(boxes(), AccessConfig(**oidc, **config))  # type: ignore[arg-type]


def test_a_certificate_opens_its_one_mailbox_or_the_one_it_names() -> None:
    a = access()
    assert a.by_certificate("app-cert").mailbox.address == APP
    with pytest.raises(AccessDenied, match="several"):
        a.by_certificate("card-claire")
    assert a.by_certificate("card-claire", ORG.upper()).mailbox.address == ORG
    for name, asked in (("card-claire", APP), ("stranger", ""), ("", DOC)):
        with pytest.raises(AccessDenied):
            a.by_certificate(name, asked)


async def test_passwords_only_for_the_kinds_allowed_and_never_a_suspended_mailbox() -> None:
    with pytest.raises(AccessDenied, match="no password login"):
        await access().by_password(ORG, "pw")
    allowing = access(password_kinds=["organisational", "personal"])
    assert (await allowing.by_password(ORG, "pw")).method == "password"
    with pytest.raises(AccessDenied, match="password refused"):
        await allowing.by_password(ORG, "wrong")
    with pytest.raises(AccessDenied):
        await allowing.by_password(APP, "pw")  # application: not an allowed kind
    with pytest.raises(AccessDenied, match="suspended"):
        await allowing.by_password(OFF, "pw")
    with pytest.raises(AccessDenied):
        await allowing.by_password(DOC, "pw")  # no hash


async def test_tokens_open_the_owners_and_members_mailboxes(psc: PscSandbox) -> None:
    a = access(psc)
    token = psc.issue(CLAIRE)
    assert (await a.by_token(token, DOC)).method == "token"
    assert (await a.by_token(token, ORG)).mailbox.address == ORG
    assert (await a.token_mailbox(token)).mailbox.address == DOC  # the personal one when none is named
    with pytest.raises(AccessDenied, match="certificate only"):
        await a.by_token(token, APP)
    with pytest.raises(AccessDenied, match="suspended"):
        await a.by_token(psc.issue(PAUL), OFF)
    with pytest.raises(AccessDenied, match="bearer tokens are not accepted"):
        await access().by_token(token, DOC)


async def test_what_a_token_must_be(psc: PscSandbox) -> None:
    verifier = OidcVerifier(OidcConfig(issuer=psc.issuer))
    now = int(time.time())
    good = {"iss": psc.issuer, "exp": now + 60, "iat": now, "preferred_username": CLAIRE}
    none_alg = ".".join(base64.urlsafe_b64encode(json.dumps(p).encode()).decode().rstrip("=")
                        for p in ({"alg": "none", "typ": "JWT"}, good)) + "."  # fmt: skip
    cases = {
        "unsigned (alg none)": none_alg,
        "HMAC": jwt.encode(good, "k" * 32, algorithm="HS256"),
        "expired": psc.issue(CLAIRE, lifetime_secs=-120),
        "not a JWT": "abc",
    }
    for label, token in cases.items():
        with pytest.raises(TokenRefused):
            await verifier.verify(token)
        assert label
    assert (await verifier.verify(psc.issue(CLAIRE, lifetime_secs=-10)))["preferred_username"] == CLAIRE  # leeway
    with pytest.raises(ValueError, match="not allowed"):
        OidcVerifier(OidcConfig(issuer=psc.issuer, algorithms=["HS256"]))


async def test_an_issuer_that_cannot_be_reached_is_a_temporary_failure() -> None:
    a = MailAccess(boxes(), AccessConfig(oidc=OidcConfig(issuer=f"http://127.0.0.1:{free_port()}",
                                                         http_timeout_secs=2)))  # fmt: skip
    token = jwt.encode({"iss": "x", "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256")
    with pytest.raises(AccessDenied):  # the algorithm is refused before any key is fetched
        await a.by_token(token, DOC)
    rs = jwt.encode({"iss": "x", "exp": 1}, _rsa_key(), algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(IssuerUnavailable):
        await a.by_token(rs, DOC)


async def test_discovery_must_name_the_issuer_asked_for(psc: PscSandbox) -> None:
    claimed = psc.issuer.replace("127.0.0.1", "localhost")  # same server, another issuer identifier
    with pytest.raises(ConnectionError):
        await OidcVerifier(OidcConfig(issuer=claimed)).verify(psc.issue(CLAIRE))


def test_sasl_bearer_responses() -> None:
    assert sasl_bearer("OAUTHBEARER", b"n,a=dr@hub.test,\x01auth=Bearer T0K\x01\x01") == ("dr@hub.test", "T0K")
    assert sasl_bearer("XOAUTH2", b"user=dr@hub.test\x01auth=Bearer T0K\x01\x01") == ("dr@hub.test", "T0K")
    for mech, bad in (("OAUTHBEARER", b"x,a=u,\x01auth=Bearer t\x01\x01"), ("OAUTHBEARER", b"n,,\x01auth=Bearer t"),
                      ("XOAUTH2", b"user=u\x01auth=Basic dTpw\x01\x01"), ("PLAIN", b"\x00u\x00p")):  # fmt: skip
        with pytest.raises(ValueError):
            sasl_bearer(mech, bad)


def test_the_directory_keeps_one_mailbox_per_address_and_the_annuaire_rows(tmp_path: Path) -> None:
    directory = MailboxDirectory(tmp_path / "boxes.json")
    declared = Mailboxes(boxes(), directory=directory)
    new = HostedMailbox(address="new@hub.test", kind="personal", owner=PAUL, password_hash=_HASH)
    directory.create(new, declared=set(declared.declared))
    with pytest.raises(DirectoryError):
        directory.create(new, declared=set(declared.declared))
    with pytest.raises(DirectoryError):
        directory.create(HostedMailbox(address=DOC, kind="personal"), declared=set(declared.declared))
    assert declared.get("NEW@hub.test") == new and (tmp_path / "boxes.json").stat().st_mode & 0o077 == 0
    directory.update("new@hub.test", status="suspended")
    assert declared.get("new@hub.test").status == "suspended"  # type: ignore[union-attr]
    rows = {r["mailbox_mss"]: r for r in annuaire_rows(list(declared.by_address.values()))}
    assert set(rows) == {DOC, ORG, APP}  # suspended ones are not published
    assert rows[ORG]["mailbox_mss_type"] == "ORG" and rows[APP]["mailbox_mss_type"] == "APP"
    directory.delete("new@hub.test")
    assert declared.get("new@hub.test") is None


def _rsa_key() -> object:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
