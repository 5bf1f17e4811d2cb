"""A small synchronous client of the admin API, for the ``hub`` command.

The CLI reads and acts through the running hub, never the database, so it
sees the store the hub uses (SQLite or PostgreSQL, whatever the DSN), is
authorised by role and recorded in the audit trail under the token's name,
exactly as the console is.

Where it connects, first found wins: ``--url``, ``$HUB_URL``, the config's
``admin.api_url``, then ``http(s)://`` + the config's ``http.listen``. Which
token: ``--token-file``, ``$HUB_TOKEN``, then, when the config has no users and
no tokens, the bootstrap token file the hub made at its first start.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from hub.admin.auth import bootstrap_token_path
from hub.config import HubConfig

__all__ = ["AdminClient", "ApiCallError", "client_for", "find_token"]


class ApiCallError(Exception):
    """The hub answered an error, or could not be reached; `str()` is a sentence for the operator."""

    def __init__(self, message: str, *, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status, self.body = status, body


class AdminClient:
    def __init__(self, base_url: str, token: str | None, *, timeout: float = 60.0, ca_file: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._ssl = ssl.create_default_context(cafile=ca_file) if base_url.startswith("https") else None

    def get(self, path: str, **params: Any) -> Any:
        query = {k: _param(v) for k, v in params.items() if v is not None and v != ""}
        return self._call("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""), None)

    def post(self, path: str, body: Any = None) -> Any:
        return self._call("POST", path, {} if body is None else body)

    def _call(self, method: str, path: str, body: Any) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiCallError(
                f"cannot reach the hub's admin API at {self.base_url} ({reason}); is it running (hub serve)? "
                "Give its address with --url or $HUB_URL"
            ) from None


def _param(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value).lower() if isinstance(value, bool) else str(value)


def _api_error(exc: urllib.error.HTTPError) -> ApiCallError:
    try:
        body = json.loads(exc.read() or b"null")
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    detail = body.get("detail") if isinstance(body, dict) else None
    if exc.code == 401:
        text = "the hub refused the token (401): give one with $HUB_TOKEN or --token-file"
    elif exc.code == 403 and isinstance(detail, dict):
        text = f"your role ({detail.get('role')}) may not do this; it needs {detail.get('needs')} (403)"
    else:
        text = f"{error or exc.reason} ({exc.code})"
        if detail:
            text += ": " + (detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False))
    return ApiCallError(text, status=exc.code, body=body)


def client_for(
    config: HubConfig | None,
    *,
    url: str | None = None,
    token_file: str | None = None,
    timeout: float = 60.0,
    bootstrap: Path | None = None,
) -> AdminClient:
    """The client the CLI uses, from its options, the environment and the config (see the module docstring).

    `bootstrap` overrides where the bootstrap token is looked for (None: from `config`, when it configures no
    users and no tokens).
    """
    base = url or os.environ.get("HUB_URL") or (config.admin.api_url if config else None)
    if not base and config is not None:
        host, _, port = config.http.listen.rpartition(":")
        if port == "0":
            raise ApiCallError("the config's http.listen has port 0: give the hub's address with --url or $HUB_URL")
        scheme = "https" if config.http.tls else "http"
        base = f"{scheme}://{host or '127.0.0.1'}:{port}"
    if not base:
        raise ApiCallError("no hub address: give --url or $HUB_URL, or --config")
    token = find_token(config, token_file=token_file, bootstrap=bootstrap)
    ca = config.http.tls.ca_file if config is not None and config.http.tls else None
    return AdminClient(base, token, timeout=timeout, ca_file=ca or os.environ.get("HUB_CA_FILE"))


def find_token(config: HubConfig | None, *, token_file: str | None = None, bootstrap: Path | None = None) -> str | None:
    """The bearer token the CLI presents: `token_file`, ``$HUB_TOKEN``, then the bootstrap token file."""
    if token_file:
        return Path(token_file).read_text().strip()
    if os.environ.get("HUB_TOKEN"):
        return os.environ["HUB_TOKEN"].strip()
    path = bootstrap
    if path is None and config is not None and not (config.admin.users or config.admin.tokens):
        path = bootstrap_token_path(config)
    if path is not None and path.is_file():
        return path.read_text().strip()
    return None
