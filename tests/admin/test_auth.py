"""Secrets and hashes of the admin section: formats, verification, config validation, the helper command."""

from __future__ import annotations

import base64
import hashlib
import io
import os

import pytest
from pydantic import ValidationError

from hub.admin.__main__ import main as admin_main
from hub.admin.auth import Authenticator, hash_password, hash_token, verify_secret
from hub.config import AdminConfig


def test_password_hashes_are_salted_and_verified() -> None:
    one, two = hash_password("s3cret-passphrase"), hash_password("s3cret-passphrase")
    assert one != two and one.startswith("scrypt$16384$8$1$")
    assert verify_secret(one, "s3cret-passphrase") and not verify_secret(one, "s3cret-passphrasE")
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", b"other", salt, 1000)
    pbkdf2 = f"pbkdf2_sha256$1000${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    assert verify_secret(pbkdf2, "other") and not verify_secret(pbkdf2, "nope")
    assert verify_secret(hash_token("tok"), "tok") and not verify_secret(hash_token("tok"), "tok2")
    for broken in ("", "scrypt$x", "md5$abc", "pbkdf2_sha256$1$!!$!!", "scrypt$1$1$1$a$b"):
        assert not verify_secret(broken, "anything")


def test_admin_config_is_validated() -> None:
    good = {"name": "bot", "role": "operator", "token_hash": hash_token("t" * 40)}
    assert AdminConfig.model_validate({"tokens": [good]}).tokens[0].role == "operator"
    for bad in (
        {**good, "role": "root"},
        {**good, "token": "x" * 30},  # both a hash and a token
        {"name": "bot", "role": "viewer"},  # neither
        {**good, "token_hash": "md5$abc"},
        {"name": "bot", "role": "viewer", "token": "short"},
        {**good, "name": "has space"},
    ):
        with pytest.raises(ValidationError):
            AdminConfig.model_validate({"tokens": [bad]})
    with pytest.raises(ValidationError):
        AdminConfig.model_validate({"users": {"u": {"role": "admin", "password_hash": "plaintext"}}})


async def test_tokens_with_salted_hashes_are_verified_once_then_cached() -> None:
    token = "a-long-random-token-for-the-test-0123456789"
    auth = Authenticator(
        AdminConfig.model_validate({"tokens": [{"name": "slow", "role": "viewer", "token_hash": hash_password(token)}]})
    )
    assert await auth.authenticate(f"Bearer {token}") is not None
    assert await auth.authenticate(f"bearer {token}") is not None  # the scheme is case-insensitive
    assert await auth.authenticate(f"Bearer {token}x") is None
    assert await auth.authenticate(f"Basic {token}") is None
    assert await auth.authenticate(None) is None
    assert len(auth._cache) == 1


def test_helper_command_prints_hashes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert admin_main(["new-token"]) == 0
    token, digest = capsys.readouterr().out.split()
    assert verify_secret(digest, token) and len(token) >= 40
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert admin_main(["hash-password"]) == 0
    assert verify_secret(capsys.readouterr().out.strip(), "a long enough password")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert admin_main(["hash-password"]) == 1
    assert admin_main([]) == 1
