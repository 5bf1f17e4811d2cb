"""The `hub` subcommands that read or act: they go through the running hub's admin API.

``messages``, ``show``, ``replay``, ``dead``, ``requeue``, ``discard``, ``pause``,
``resume``, ``stats``, ``export``, ``audit`` and ``identity
list|show|reviews|resolve`` call ``/api`` (see :mod:`hub.admin.client` for
where and with which token), so they see the store the hub uses, are
authorised by role, and every payload view and action is in the audit trail
under the token's name, as from the console. Actions ask before acting: on a
terminal they prompt, in a script they need ``--yes``.

Exit codes: 0 done, 1 refused, failed or a usage error (one line on stderr,
never a traceback).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from hub.admin.client import AdminClient, ApiCallError, client_for
from hub.config import AdminConfig, HttpConfig, HubConfig, load_config
from hub.errors import ConfigError
from hub.statuses import DeliveryStatus, MessageStatus, ReviewState
from hub.when import FORMS, parse_when
from hub.yamlsource import load_located

__all__ = ["add_api_commands", "api_command", "api_options", "cmd_identity_api"]

_PAGE = 200  # the API's largest page


class Refused(Exception):
    """The operator did not confirm; nothing was done."""


# -- plumbing ------------------------------------------------------------------------------------------------------
def _client(args: argparse.Namespace) -> AdminClient:
    url = args.url or os.environ.get("HUB_URL")
    try:
        return client_for(load_config(args.config).hub, url=url, token_file=args.token_file)
    except ConfigError:
        pass
    # The CLI only needs where the hub listens and which token to use: a config this shell cannot fully
    # load (the store's DSN or a secret only the hub's environment holds) still tells it that.
    try:
        config, bootstrap = _partial_config(Path(args.config))
    except ConfigError:
        if url:  # with a URL, a broken or absent config does not matter
            return client_for(None, url=url, token_file=args.token_file)
        raise
    return client_for(config, url=url, token_file=args.token_file, bootstrap=bootstrap)


def _partial_config(path: Path) -> tuple[HubConfig, Path | None]:
    """The `http` and `admin` settings of a config whose other sections do not validate here."""
    try:
        data = load_located(path).data
    except ConfigError:
        data = load_located(path, interpolate=False).data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config file must be a mapping")
    admin = data.get("admin") or {}
    try:
        http = HttpConfig.model_validate(data.get("http") or {})
        admin_config = AdminConfig.model_validate(
            {k: admin[k] for k in ("api_url", "bootstrap_token_file") if admin.get(k) is not None}
        )
    except PydanticValidationError:
        raise ConfigError(f"{path}: http or admin section invalid: run `hub check`") from None
    config = HubConfig(http=http, admin=admin_config)
    bootstrap = None
    if not (admin.get("users") or admin.get("tokens")):
        store = data.get("store") or {}
        if admin_config.bootstrap_token_file:
            bootstrap = Path(admin_config.bootstrap_token_file)
        elif str(store.get("kind", "sqlite")) == "sqlite":
            bootstrap = Path(str(store.get("path", "var/hub.db"))).parent / "admin-token"
        else:
            bootstrap = Path("var/admin-token")
    return config, bootstrap


def _when(text: str) -> datetime:
    try:
        return parse_when(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _confirm(args: argparse.Namespace, question: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise Refused(f"{question} Not confirmed: add --yes (no terminal to ask on); nothing was done")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes", "o", "oui"):
        raise Refused("not confirmed; nothing was done")


def _emit(
    rows: list[dict[str, Any]] | Iterator[dict[str, Any]], as_json: bool, fmt: Callable[[dict[str, Any]], str]
) -> None:
    for row in rows:
        print(json.dumps(row, ensure_ascii=False) if as_json else fmt(row))


def api_command(fn: Callable[[argparse.Namespace, AdminClient], int]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        try:
            return fn(args, _client(args))
        except ApiCallError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except Refused as exc:
            print(str(exc), file=sys.stderr)
            return 1

    return command


# -- messages ------------------------------------------------------------------------------------------------------
def _search_params(args: argparse.Namespace) -> dict[str, Any]:
    status = MessageStatus.FAILED if args.status == DeliveryStatus.DEAD else args.status
    return {
        "control_id": args.control_id, "sending_app": args.sending_app, "sending_facility": args.sending_facility,
        "patient_key": args.patient_key, "ins": args.ins, "ipp": args.ipp, "document_id": args.document_id,
        "correlation_id": args.correlation_id, "message_type": args.type, "status": status,
        "since": args.since, "until": args.until,
    }  # fmt: skip


def _pages(api: AdminClient, params: dict[str, Any], limit: int, before: str | None) -> Iterator[dict[str, Any]]:
    left = limit
    while left > 0:
        page = api.get("/api/messages", **params, before=before, limit=min(left, _PAGE))
        yield from page["items"]
        left -= len(page["items"])
        before = page["next_before"]
        if not before:
            return


def _message_line(m: dict[str, Any]) -> str:
    ds = ", ".join(f"{d['destination']}={d['status']}({d['attempts']})" for d in m["deliveries"])
    status = m["status"]
    if m.get("derived"):  # e.g. an MSSanté mail: what became of the documents it carried
        status = m["effective_status"]
        went_on = ", ".join(f"{c['message_type']}={c['status']}" for c in m["derived"])
        ds = f"via {len(m['derived'])} derived: {went_on}"
    reason = f"  reason: {m['reason']}" if m["reason"] else ""
    head = f"{m['id']}  {m['received_at'][:19]}  {status:<9} {m['message_type']:<9} {m['control_id']:<16}"
    return f"{head} {ds}{reason}"


def cmd_messages(args: argparse.Namespace, api: AdminClient) -> int:
    if args.content is not None:
        others = [k for k, v in _search_params(args).items() if v is not None and k not in ("since", "until")]
        if others or args.id or args.before:
            raise Refused("--content combines only with --since, --until and --limit")
        page = api.get(
            "/api/search/content", text=args.content, since=args.since, until=args.until, limit=min(args.limit, 200)
        )
        _emit(page["items"], args.json, _message_line)
        if page["truncated"]:
            print("more messages matched: narrow --since/--until or the text", file=sys.stderr)
        return 0
    if args.id:
        rows = [api.get(f"/api/messages/{args.id}")["message"]]
    else:
        rows = list(_pages(api, _search_params(args), args.limit, args.before))
    _emit(rows, args.json, _message_line)
    return 0


def cmd_show(args: argparse.Namespace, api: AdminClient) -> int:
    trace = api.get(f"/api/messages/{args.id}")
    item = {**trace["message"], "metadata": trace["metadata"], "deliveries": trace["deliveries"]}
    item["related"] = [r["id"] for r in trace["related"]]
    item["reviews"] = trace["reviews"]
    for d in item["deliveries"]:
        d["attempts_log"] = d.get("attempts_log", [])
        if args.sent and (d.get("sent") is not None or d["attempts"]):
            # what was sent and what the peer answered to each attempt, side by side (operator; audited)
            try:
                view = api.get(f"/api/messages/{args.id}/deliveries/{d['id']}/sent")
            except ApiCallError as exc:
                if exc.status != 404:  # 404: nothing sent yet (held, or an outage before any answer)
                    raise
                continue
            d["sent_body"] = {"encoding": view["encoding"], "text": view["text"]}
            d["replies"] = view["replies"]
    if args.body:
        payload = api.get(f"/api/messages/{args.id}/payload")  # recorded in the audit trail by the hub
        item["body"] = payload["text"]
        item["body_encoding"] = payload["encoding"]
    print(json.dumps(item, ensure_ascii=False, indent=None if args.json else 2))
    return 0


def cmd_replay(args: argparse.Namespace, api: AdminClient) -> int:
    request: dict[str, Any] = {}
    if args.body:
        request["body"] = Path(args.body).read_bytes().decode("utf-8", "replace")
    if args.destination:
        request["destinations"] = args.destination
    trace = api.get(f"/api/messages/{args.id}")
    where = ", ".join(args.destination) if args.destination else "every destination its routes give"
    delivered = sorted({d["destination"] for d in trace["deliveries"] if d["status"] == DeliveryStatus.DELIVERED})
    warn = f" ({', '.join(delivered)} already delivered)" if delivered and not args.destination else ""
    _confirm(args, f"Replay {args.id}{' corrected' if args.body else ''} to {where}{warn}?")
    result = api.post(f"/api/messages/{args.id}/replay", request)
    print(json.dumps(result))
    return 0


def cmd_export(args: argparse.Namespace, api: AdminClient) -> int:
    """Messages as NDJSON on stdout, or one file per message (and its metadata) in --dir."""
    out_dir = Path(args.dir) if args.dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for m in _pages(api, _search_params(args), args.limit, None):
        row = dict(m)
        payload = api.get(f"/api/messages/{m['id']}/payload") if args.payloads else None  # each view audited
        if out_dir is None:
            if payload:
                row |= {"body": payload["text"], "body_encoding": payload["encoding"]}
            print(json.dumps(row, ensure_ascii=False))
        else:
            (out_dir / f"{m['id']}.json").write_text(json.dumps(row, ensure_ascii=False, indent=2))
            if payload:
                data = (
                    base64.b64decode(payload["text"])
                    if payload["encoding"] == "base64"
                    else payload["text"].encode(payload["encoding"])
                )
                (out_dir / f"{m['id']}{_suffix(m['content_type'])}").write_bytes(data)
        count += 1
    print(json.dumps({"exported": count, "payloads": bool(args.payloads)}), file=sys.stderr)
    return 0


def _suffix(content_type: str) -> str:
    ct = content_type.lower()
    for part, suffix in (("hl7-v2", ".hl7"), ("cda", ".xml"), ("xml", ".xml"), ("json", ".json"), ("rfc822", ".eml")):
        if part in ct:
            return suffix
    return ".bin"


# -- dead letters, queues ------------------------------------------------------------------------------------------
def cmd_dead(args: argparse.Namespace, api: AdminClient) -> int:
    rows: list[dict[str, Any]] = []
    after = 0
    while len(rows) < args.limit:
        page = api.get("/api/dead", destination=args.destination, after=after, limit=min(1000, args.limit - len(rows)))
        rows += page["items"]
        if not page["next_after"]:
            break
        after = page["next_after"]
    _emit(
        [{**r, "id": r["delivery_id"]} for r in rows], args.json,
        lambda d: f"{d['delivery_id']:>8}  {d['message_id']}  {d['route']}->{d['destination']}  "
        f"attempts={d['attempts']}  {d['last_error']}",
    )  # fmt: skip
    return 0


def _on_dead(action: str) -> Callable[[argparse.Namespace, AdminClient], int]:
    """`requeue` (send again, attempts reset) or `discard` (give up) dead letters: the count first, then ask."""
    what = {"requeue": "sent again, attempts reset", "discard": "given up for good, never sent"}[action]

    def command(args: argparse.Namespace, api: AdminClient) -> int:
        request = {"delivery_ids": args.delivery_ids, "all_dead": args.all_dead, "destination": args.destination}
        if not args.delivery_ids and not args.all_dead:
            raise Refused("name dead deliveries (ids from `hub dead`) or give --all-dead; nothing was done")
        counted = api.post(f"/api/dead/{action}", {**request, "dry_run": True})
        key = "requeued" if action == "requeue" else "discarded"
        if not counted["matched"]:
            print(json.dumps({key: 0, "more": False}))
            return 0
        more = "+" if counted["more"] else ""
        _confirm(args, f"{action.capitalize()} {counted['matched']}{more} dead deliveries ({what})?")
        result = api.post(f"/api/dead/{action}", request)
        print(json.dumps({key: result["requeued"], "more": result["more"]}))
        return 0

    return command


def _pause(paused: bool) -> Callable[[argparse.Namespace, AdminClient], int]:
    def command(args: argparse.Namespace, api: AdminClient) -> int:
        action = "pause" if paused else "resume"
        if paused:
            _confirm(args, f"Pause delivery to {args.destination}{' on route ' + args.route if args.route else ''}?")
        result = api.post(f"/api/destinations/{args.destination}/{action}", {"route": args.route})
        print(json.dumps(result))
        return 0

    return command


def cmd_stats(args: argparse.Namespace, api: AdminClient) -> int:
    """Queues now, and the hourly totals the hub keeps in its store (they survive restarts).

    ``--json`` lines: ``{"item": "queue", ...}`` per queue now (as ``/api/queues``), ``{"item": "totals",
    route, destination, received, delivered, failed, dead, rejected}`` per queue over the period, and
    ``{"item": "hour", "hour": ..., <counter>: n}`` per hour, oldest first.
    """
    queues = api.get("/api/queues")
    stats = api.get("/api/stats", hours=args.hours)
    hours = [
        {"item": "hour", "hour": hour, **{k: v[i] for k, v in stats["series"].items()}}
        for i, hour in enumerate(stats["hours"])
    ]
    if args.json:
        _emit([{"item": "queue", **q} for q in queues], True, str)
        _emit([{"item": "totals", **q} for q in stats["queues"]], True, str)
        _emit(hours, True, str)
        return 0
    print(f"{'route -> destination':<36} {'state':<8} {'depth':>6} {'oldest':>8} {'dead':>5}  last error / what to do")
    for q in queues:
        oldest = "" if q["oldest_age_secs"] is None else f"{q['oldest_age_secs']:.0f}s"
        note = q["last_error"] or q["down_reason"] or ""
        print(
            f"{q['route'] + ' -> ' + q['destination']:<36} {q['state']:<8} {q['depth']:>6} {oldest:>8} "
            f"{q['dead']:>5}  {note}{' | ' + q['advice'] if q['advice'] else ''}"
        )
    print(f"\nlast {args.hours} h: " + ", ".join(f"{k} {v}" for k, v in stats["totals"].items()))
    for q in stats["queues"]:
        name = f"{q['route']} -> {q['destination']}" if q["route"] else f"listener {q['destination']}"
        print(f"  {name:<34} " + ", ".join(f"{k} {q[k]}" for k in stats["totals"]))
    return 0


def cmd_audit(args: argparse.Namespace, api: AdminClient) -> int:
    page = api.get("/api/audit", message_id=args.message_id, actor=args.actor, limit=args.limit)
    _emit(
        page["items"], args.json,
        lambda e: f"{e['id']:>6}  {e['at'][:19]}  {e['actor']:<12} {e['action']:<16} {e['outcome']:<7} "
        f"{e['message_id'] or e['target']}",
    )  # fmt: skip
    return 0


# -- identity --------------------------------------------------------------------------------------------------------
def cmd_identity_api(args: argparse.Namespace, api: AdminClient) -> int:
    if args.action == "list":
        rows = [
            {"item": "identity", "review_state": None, **r}
            for r in api.get("/api/identities", status=args.status, limit=args.limit)["items"]
        ]
        if args.with_reviews:
            rows += [
                {"item": "review", "review_state": r["state"], **r}
                for r in api.get("/api/reviews", state=ReviewState.OPEN, limit=args.limit)["items"]
            ]
        _emit(
            rows, args.json,
            lambda r: f"{r['patient_key']:<28} {r.get('status') or '':<11} {r.get('ins_oid') or '':<22} "
            f"{'INS known' if r.get('ins') else 'no INS':<9} {r.get('review_state') or ''}",
        )  # fmt: skip
        return 0
    if args.action == "show":
        item = api.get(f"/api/identities/{args.key}")
        print(json.dumps(item, ensure_ascii=False, indent=None if args.json else 2))
        return 0
    if args.action == "reviews":
        _emit(
            api.get("/api/reviews", state=args.state, limit=args.limit)["items"], args.json,
            lambda r: f"{r['review_id']:>6}  {r['state']:<9} {r['patient_key']:<28} {r['message_id']}  {r['reason']}",
        )  # fmt: skip
        return 0
    action = "release" if args.release else "discard"
    if args.by:
        print("note: --by is ignored: the hub records the token's user as the one who decided", file=sys.stderr)
    what = "sent on, the trait check waived for it" if args.release else "dead-lettered (not sent)"
    _confirm(args, f"{action.capitalize()} review {args.review_id}: the waiting delivery is {what}?")
    print(json.dumps(api.post(f"/api/reviews/{args.review_id}/resolve", {"action": action})))
    return 0


# -- the parser ------------------------------------------------------------------------------------------------------
def api_options(
    sp: argparse.ArgumentParser, default_config: str, *, listing: bool = False, acting: bool = False
) -> None:
    sp.add_argument(
        "--config", default=os.environ.get("HUB_CONFIG", default_config),
        help="the hub's config, to find its address and bootstrap token (default: $HUB_CONFIG or config/hub.yaml)",
    )  # fmt: skip
    sp.add_argument("--url", help="the hub's address, e.g. http://127.0.0.1:8080 (default: $HUB_URL, then the config)")
    sp.add_argument(
        "--token-file", help="file holding the bearer token (default: $HUB_TOKEN, then the bootstrap token)"
    )
    if listing:
        sp.add_argument("--json", action="store_true", help="one JSON object per line")
    if acting:
        sp.add_argument("--yes", "-y", action="store_true", help="do it without asking (for scripts)")


def _message_filters(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--control-id", help="HL7 MSH-10 message control id")
    sp.add_argument("--sending-app", help="HL7 MSH-3")
    sp.add_argument("--sending-facility", help="HL7 MSH-4")
    sp.add_argument("--patient-key", help="exact patient key, IPP@authority")
    sp.add_argument("--ipp", help="local patient id (IPP), in any assigning authority (recorded in the audit trail)")
    sp.add_argument("--ins", help="INS (NIR/NIA) carried or stamped (recorded in the audit trail)")
    sp.add_argument("--document-id", help="document uniqueId, root^extension")
    sp.add_argument("--correlation-id", help="the original inbound id (finds its replays and splits)")
    sp.add_argument("--type", help="message type, e.g. ADT^A01 or a FHIR resource type")
    sp.add_argument(
        "--status", choices=[*MessageStatus, DeliveryStatus.DEAD], metavar="STATUS",
        help=f"one of {', '.join(MessageStatus)}; dead = failed (a delivery was dead-lettered)",
    )  # fmt: skip
    sp.add_argument("--since", type=_when, help=f"received at or after: {FORMS}")
    sp.add_argument("--until", type=_when, help="received before (same forms as --since)")


def add_api_commands(add: Callable[..., argparse.ArgumentParser], default_config: str) -> None:
    """Register the API-backed subcommands with `add(name, fn, help, config=False)`."""
    sp = add("messages", api_command(cmd_messages), "search messages through the hub (newest first)", config=False)
    api_options(sp, default_config, listing=True)
    sp.add_argument("--id", help="one message by id")
    _message_filters(sp)
    sp.add_argument("--before", help="paging cursor: list messages older than this id")
    sp.add_argument("--limit", type=int, default=50, help="most messages listed (default 50)")
    sp.add_argument(
        "--content",
        metavar="TEXT",
        help="messages whose payload contains TEXT (3+ characters, any case) or an HL7 v2 field value such as "
        "PID-5.1=DUPONT, over --since/--until (default: the last 24 h, at most 31 days); operator role, recorded "
        "in the audit trail without the text",
    )

    sp = add("show", api_command(cmd_show), "one message with its deliveries and attempts", config=False)
    api_options(sp, default_config, listing=True)
    sp.add_argument("id", help="message id")
    sp.add_argument("--body", action="store_true", help="include the payload (operator role; audited)")
    sp.add_argument(
        "--sent", action="store_true",
        help="include, per delivery, the bytes sent and the peer's reply to each attempt (operator role; audited)",
    )  # fmt: skip

    sp = add(
        "replay", api_command(cmd_replay), "run a stored message again (optionally corrected, to chosen destinations)",
        config=False,
    )  # fmt: skip
    api_options(sp, default_config, acting=True)
    sp.add_argument("id", help="message id")
    sp.add_argument("--body", help="file with the corrected message (HL7 v2 line ends may be LF)")
    sp.add_argument(
        "--destination", action="append", metavar="NAME",
        help="replay only to this destination (repeatable); default: every destination its routes give",
    )  # fmt: skip

    sp = add("export", api_command(cmd_export), "export messages as NDJSON (or files with --dir); payloads audited",
             config=False)  # fmt: skip
    api_options(sp, default_config)
    _message_filters(sp)
    sp.add_argument("--limit", type=int, default=1000, help="most messages exported (default 1000)")
    sp.add_argument("--payloads", action="store_true", help="include each body (operator role; each view audited)")
    sp.add_argument("--dir", help="write <id>.json (and the body as <id>.hl7/.xml/.json) here instead of stdout")

    sp = add("dead", api_command(cmd_dead), "list dead-lettered deliveries", config=False)
    api_options(sp, default_config, listing=True)
    sp.add_argument("--destination", help="only this destination's")
    sp.add_argument("--limit", type=int, default=100, help="most listed (default 100)")

    for action, text in (
        ("requeue", "send dead-lettered deliveries again (shows the count, asks first)"),
        ("discard", "give dead-lettered deliveries up for good (shows the count, asks first)"),
    ):
        sp = add(action, api_command(_on_dead(action)), text, config=False)
        api_options(sp, default_config, acting=True)
        sp.add_argument("delivery_ids", nargs="*", type=int, help="dead delivery ids (from `hub dead`)")
        sp.add_argument("--all-dead", action="store_true", help="every dead delivery (up to admin.max_bulk)")
        sp.add_argument("--destination", help="with --all-dead: only this destination's")

    for name, paused, text in (
        ("pause", True, "stop sending to a destination (kept across restarts, on every node)"),
        ("resume", False, "send to a paused destination again"),
    ):
        sp = add(name, api_command(_pause(paused)), text, config=False)
        api_options(sp, default_config, acting=paused)
        sp.add_argument("destination", help="endpoint name")
        sp.add_argument("--route", help="only this route's queue to the destination")

    sp = add("stats", api_command(cmd_stats), "queues now and hourly totals (received, delivered, failed, dead)",
             config=False)  # fmt: skip
    api_options(sp, default_config, listing=True)
    sp.add_argument("--hours", type=int, default=24, help="how many hours of totals (default 24)")

    sp = add("audit", api_command(cmd_audit), "the audit trail, newest first (admin role)", config=False)
    api_options(sp, default_config, listing=True)
    sp.add_argument("--message-id", help="entries about this message")
    sp.add_argument("--actor", help="entries of this user or token")
    sp.add_argument("--limit", type=int, default=100, help="most entries (default 100)")
