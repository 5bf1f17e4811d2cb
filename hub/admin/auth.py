"""Who is calling the admin API, and what they may do.

Three roles, each including the one before:

=========  ======================================================================================
viewer     dashboards, queues, search, traces and dead letters: metadata only, never a payload
operator   + payloads, replay, requeue, pause and resume, identity-review decisions
admin      + the audit trail and its verification
=========  ======================================================================================

Callers present ``Authorization: Bearer <token>``, where the token is one of:

* a configured token (``admin.tokens``): the config holds its hash, ``sha256$hex``
  for random tokens (a fast hash is enough for 32 random bytes and keeps each
  request cheap) or a salted scrypt/pbkdf2 hash (verified once, then cached by
  the token's SHA-256);
* a session token from ``POST /api/login`` (a local user, ``admin.users``, whose
  password is kept as a salted scrypt or pbkdf2 hash): ``hs1.<claims>.<HMAC>``,
  signed with ``admin.session_key``; the user's role is read from the config at
  each request, so removing a user ends their sessions;
* the bootstrap token, generated into a 0600 file when nothing is configured.

Secrets are compared in constant time, and neither they nor their hashes are logged.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from hub.config import AdminConfig, HubConfig

__all__ = [
    "ROLES",
    "Authenticator",
    "Principal",
    "bootstrap_token_path",
    "hash_password",
    "hash_token",
    "load_or_create_bootstrap_token",
    "verify_secret",
]

ROLES = ("viewer", "operator", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}
_SESSION_PREFIX = "hs1."
_MAX_CACHE = 1024
_LOGIN_WINDOW_SECS = 300.0
_LOGIN_MAX_FAILURES = 10


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a token's name, or a user's login."""

    name: str
    role: str
    kind: str  # token, session, bootstrap

    def can(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def hash_password(password: str, *, n: int = 2**14, r: int = 8, p: int = 1) -> str:
    """A salted scrypt hash, ``scrypt$N$r$p$salt$hash``, for ``admin.users.*.password_hash``."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_maxmem(n, r), dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def hash_token(token: str) -> str:
    """``sha256$hex`` of a bearer token, for ``admin.tokens.*.token_hash``."""
    return "sha256$" + hashlib.sha256(token.encode()).hexdigest()


def _maxmem(n: int, r: int) -> int:
    return 128 * r * n * 2 + 2**20


def verify_secret(stored: str, presented: str) -> bool:
    """Whether `presented` matches the stored hash (scrypt, pbkdf2_sha256 or sha256), in constant time."""
    try:
        scheme, _, rest = stored.partition("$")
        if scheme == "sha256":
            return hmac.compare_digest(rest, hashlib.sha256(presented.encode()).hexdigest())
        if scheme == "scrypt":
            n, r, p, salt, digest = rest.split("$")
            want = _unb64(digest)
            got = hashlib.scrypt(
                presented.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), maxmem=_maxmem(int(n), int(r)),
                dklen=len(want),
            )  # fmt: skip
            return hmac.compare_digest(got, want)
        if scheme == "pbkdf2_sha256":
            iterations, salt, digest = rest.split("$")
            want = _unb64(digest)
            got = hashlib.pbkdf2_hmac("sha256", presented.encode(), _unb64(salt), int(iterations), len(want))
            return hmac.compare_digest(got, want)
    except (ValueError, TypeError):
        return False
    return False


def bootstrap_token_path(config: HubConfig) -> Path:
    if config.admin.bootstrap_token_file:
        return Path(config.admin.bootstrap_token_file)
    if config.store.kind == "sqlite":
        return Path(config.store.path).parent / "admin-token"
    return Path("var/admin-token")


def load_or_create_bootstrap_token(path: Path) -> str:
    """The token kept in `path`, created once (0600, never overwritten: concurrent starts agree on one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = path.read_text().strip()
        if len(existing) >= 24:
            return existing
        path.write_text(token + "\n")  # unusable content: replace it
        path.chmod(0o600)
        return token
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


class Authenticator:
    """Resolves bearer tokens to principals and logs users in. One per hub."""

    def __init__(self, config: AdminConfig, *, bootstrap_token: str | None = None) -> None:
        self.config = config
        self._fast: dict[str, Principal] = {}  # sha256 hex of a token -> principal
        self._slow: list[tuple[str, Principal]] = []  # salted token hashes, verified once then cached
        for t in config.tokens:
            principal = Principal(t.name, t.role, "token")
            if t.token is not None:
                self._fast[hashlib.sha256(t.token.encode()).hexdigest()] = principal
            elif t.token_hash and t.token_hash.startswith("sha256$"):
                self._fast[t.token_hash.removeprefix("sha256$")] = principal
            elif t.token_hash:
                self._slow.append((t.token_hash, principal))
        if bootstrap_token is not None:
            digest = hashlib.sha256(bootstrap_token.encode()).hexdigest()
            self._fast[digest] = Principal("bootstrap", "admin", "bootstrap")
        self._cache: dict[str, Principal] = {}
        key = config.session_key
        self._session_key = key.encode() if key else secrets.token_bytes(32)
        self._failures: dict[str, tuple[int, float]] = {}

    @property
    def configured(self) -> bool:
        return bool(self.config.users or self.config.tokens)

    async def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal behind an ``Authorization`` header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        # RFC 6750 §2.1: a b64token is ASCII; anything else (raw bytes, surrogates) is no token of ours.
        if scheme.lower() != "bearer" or not token or len(token) > 4096 or not token.isascii():
            return None
        if token.startswith(_SESSION_PREFIX):
            return self._session(token)
        digest = hashlib.sha256(token.encode()).hexdigest()
        principal = self._fast.get(digest) or self._cache.get(digest)
        if principal is not None or not self._slow:
            return principal
        loop = asyncio.get_running_loop()
        for stored, candidate in self._slow:
            if await loop.run_in_executor(None, verify_secret, stored, token):
                if len(self._cache) >= _MAX_CACHE:
                    self._cache.clear()
                self._cache[digest] = candidate
                return candidate
        return None

    # -- users and sessions ---------------------------------------------------------------------------
    def login_blocked(self, key: str) -> bool:
        count, since = self._failures.get(key, (0, 0.0))
        return count >= _LOGIN_MAX_FAILURES and time.monotonic() - since < _LOGIN_WINDOW_SECS

    async def login(self, username: str, password: str, *, client: str = "") -> tuple[str, Principal, float] | None:
        """(session token, principal, expiry as a Unix time) for good credentials, else None."""
        key = f"{username}|{client}"
        user = self.config.users.get(username)
        # Verify against a dummy hash for unknown users, so that timing does not tell which names exist.
        stored = user.password_hash if user else _dummy_hash()
        ok = await asyncio.get_running_loop().run_in_executor(None, verify_secret, stored, password)
        if not ok or user is None:
            count, since = self._failures.get(key, (0, time.monotonic()))
            if time.monotonic() - since >= _LOGIN_WINDOW_SECS:
                count, since = 0, time.monotonic()
            if len(self._failures) > 10_000:
                self._failures.clear()
            self._failures[key] = (count + 1, since)
            return None
        self._failures.pop(key, None)
        expires = time.time() + self.config.session_secs
        claims = json.dumps({"u": username, "exp": int(expires)}, separators=(",", ":")).encode()
        body = base64.urlsafe_b64encode(claims).decode().rstrip("=")
        token = f"{_SESSION_PREFIX}{body}.{self._sign(body)}"
        return token, Principal(username, user.role, "session"), expires

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._session_key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def _session(self, token: str) -> Principal | None:
        body, _, mac = token.removeprefix(_SESSION_PREFIX).partition(".")
        if not hmac.compare_digest(mac, self._sign(body)):
            return None
        try:
            claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        user = self.config.users.get(str(claims.get("u")))
        if user is None or float(claims.get("exp", 0)) < time.time():
            return None
        return Principal(str(claims["u"]), user.role, "session")


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))
