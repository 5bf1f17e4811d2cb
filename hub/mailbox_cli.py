"""``hub mailbox``: the mailbox administration of the admin API (``/api/mailboxes``), from the command line.

It talks to the running hub (the config's ``http.listen``) with an admin API token: ``--token``, else
``$HUB_ADMIN_TOKEN``, else the bootstrap token file the hub writes when no token is configured. Going through
the API means each change is authorised by role and written to the audit trail under the token's name, as
when made in the console.

Exit codes: 0 done, 1 refused (4xx: the API's error is printed), 3 the hub could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from hub.admin.auth import bootstrap_token_path
from hub.config import Settings

__all__ = ["add_parser", "run"]


def add_parser(sp: argparse.ArgumentParser) -> None:
    """The arguments of ``hub mailbox`` (its ``--config`` is added by the caller)."""
    sp.add_argument("action", choices=["list", "create", "suspend", "resume", "delete", "annuaire"])
    sp.add_argument("address", nargs="?", help="the mailbox (create, suspend, resume, delete)")
    sp.add_argument("--kind", choices=["personal", "organisational", "application"], help="create: its kind")
    sp.add_argument("--owner", default="", help="create: idNat of the owner (8+RPPS, 1+FINESS, 3+SIRET)")
    sp.add_argument("--member", action="append", default=[], help="create: idNat_PS who may open it (repeat)")
    sp.add_argument("--cert", action="append", default=[], help="create: certificate name that opens it (repeat)")
    sp.add_argument("--quota-bytes", type=int, help="create: storage quota in bytes (default: unlimited)")
    sp.add_argument("--retention-days", type=int, help="create: days its mail is kept (default: kept)")
    sp.add_argument("--organization", default="", help="create: HL7 v2 XON of the service it serves")
    sp.add_argument("--reason", default="", help="suspend/resume: why (kept in the audit trail)")
    sp.add_argument("--token", help="admin API token (default: $HUB_ADMIN_TOKEN, then the bootstrap token file)")
    sp.add_argument("--json", action="store_true", help="one JSON object per line")


def _base_url(settings: Settings) -> tuple[str, ssl.SSLContext | None]:
    http = settings.hub.http
    host, _, port = http.listen.rpartition(":")
    host = host.strip("[]")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    if http.tls is None:
        return f"http://{host}:{port}", None
    ctx = ssl.create_default_context(cafile=http.tls.ca_file)
    ctx.check_hostname = False  # the hub's own certificate, reached by address
    return f"https://{host}:{port}", ctx


def _token(args: argparse.Namespace, settings: Settings) -> str:
    if args.token or os.environ.get("HUB_ADMIN_TOKEN"):
        return str(args.token or os.environ["HUB_ADMIN_TOKEN"])
    path = bootstrap_token_path(settings.hub)
    return path.read_text().strip() if path.exists() else ""


def _request(args: argparse.Namespace, settings: Settings) -> tuple[str, str, dict[str, Any] | None]:
    quoted = urllib.parse.quote(args.address or "", safe="@")
    if args.action in ("create", "suspend", "resume", "delete") and not args.address:
        raise SystemExit("hub mailbox: this action needs the mailbox address")
    if args.action == "list":
        return "GET", "/api/mailboxes", None
    if args.action == "annuaire":
        return "GET", "/api/mailboxes/annuaire", None
    if args.action == "create":
        if not args.kind:
            raise SystemExit("hub mailbox create: --kind is required")
        body: dict[str, Any] = {
            "address": args.address, "kind": args.kind, "owner": args.owner, "members": args.member,
            "certificates": args.cert, "organization": args.organization,
            "quota_bytes": args.quota_bytes, "retention_days": args.retention_days,
        }  # fmt: skip
        return "POST", "/api/mailboxes", {k: v for k, v in body.items() if v is not None}
    if args.action == "delete":
        return "DELETE", f"/api/mailboxes/{quoted}", None
    return "POST", f"/api/mailboxes/{quoted}/{args.action}", {"reason": args.reason}


def run(args: argparse.Namespace, settings: Settings) -> int:
    method, path, body = _request(args, settings)
    base, ctx = _base_url(settings)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {_token(args, settings)}", "Content-Type": "application/json"}
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        print(f"hub mailbox {args.action}: {exc.code} {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"hub mailbox: the hub at {base} cannot be reached ({type(exc).__name__})", file=sys.stderr)
        return 3
    rows = answer.get("mailboxes") or answer.get("rows") if args.action in ("list", "annuaire") else [answer]
    for row in rows or []:
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        elif args.action == "annuaire":
            print(f"{row['mailbox_mss_type']:<4} {row['mailbox_mss']:<44} {row['owner_identifier']}")
        else:
            print(f"{row['address']:<44} {row['kind']:<15} {row['status']:<10} {row['source']:<9} {row['owner']}")
    return 0
