"""The `hub` command: serve, check, send, messages, replay, dead, requeue, sandboxes, describe.

Every listing takes ``--json`` and then prints one JSON object per line, for
scripts. Exit codes: 0 success, 1 failure or invalid input, 2 a peer refused
(``send`` got AE/AR).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hub import registry
from hub.config import Settings, load_config
from hub.errors import ConfigError, HubError, MessageError
from hub.store import SearchQuery, Store, open_store

__all__ = ["main"]

DEFAULT_CONFIG = "config/hub.yaml"


def _settings(args: argparse.Namespace) -> Settings:
    return load_config(args.config)


def _run(coro: Awaitable[int]) -> int:
    if os.environ.get("HUB_EVENT_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop

            return uvloop.run(coro)  # type: ignore[arg-type]
        except ImportError:
            pass
    return asyncio.run(coro)  # type: ignore[arg-type]


# -- serve --------------------------------------------------------------------------------------------
async def _serve(settings: Settings) -> int:
    from hub.runtime import Hub

    hub = Hub(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await hub.start()
    # Everything built at start-up (modules, models, config) lives as long as the process: move it
    # out of the cyclic collector's sight, or each full collection walks it all while messages wait
    # (measured: 0.3-0.5 s pauses in the ACK p99, BENCHMARKS.md).
    gc.freeze()
    print(
        f"hub ready: http://{settings.hub.http.listen} ({len(settings.routes)} routes)",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    # SIGTERM always ends the process: if stopping takes longer than the grace period allows
    # (a peer or the database that never answers), a watchdog ends it; what was not finished is
    # still in the store (leases expire, the next start takes them).
    bound = settings.hub.shutdown_grace_secs + 5
    watchdog = threading.Timer(bound, _exit_now, args=(bound,))
    watchdog.daemon = True
    watchdog.start()
    await hub.stop()
    watchdog.cancel()
    return 0


def _exit_now(bound: float) -> None:
    print(f"hub: stop took over {bound:g}s; exiting now", file=sys.stderr, flush=True)
    os._exit(1)


def cmd_serve(args: argparse.Namespace) -> int:
    from hub.logs import configure

    settings = _settings(args)
    configure(settings.hub.logging.level, settings.hub.logging.format)
    return _run(_serve(settings))


# -- check --------------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(
        f"ok: {args.config}: {len(settings.hub.listeners)} listeners, {len(settings.hub.endpoints)} endpoints, "
        f"{len(settings.hub.sandboxes)} sandboxes, {len(settings.routes)} routes"
    )
    return 0


# -- send ---------------------------------------------------------------------------------------------
def split_messages(data: bytes) -> list[bytes]:
    """ER7 messages of a file: segments on any line ending, a new message at each MSH."""
    text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    out: list[list[bytes]] = []
    for seg in text.split(b"\r"):
        if not seg.strip():
            continue
        if seg.startswith(b"MSH") or not out:
            out.append([])
        out[-1].append(seg)
    return [b"\r".join(segs) + b"\r" for segs in out]


async def _send(args: argparse.Namespace) -> int:
    from adapters.mllp.framing import FrameReader, frame
    from adapters.mllp.outbound import classify_ack
    from adapters.tls import TlsConfig, client_context
    from mappings.hl7v2 import decode_er7, read_header

    target = args.to
    if not target.startswith(("mllp://", "mllps://")):
        print("--to must be mllp://HOST:PORT or mllps://HOST:PORT", file=sys.stderr)
        return 1
    hostport = target.split("://", 1)[1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    ssl_ctx = None
    if target.startswith("mllps://"):
        ssl_ctx = client_context(TlsConfig(ca_file=args.ca, cert_file=args.cert, key_file=args.key))
    reader, writer = await asyncio.open_connection(host, int(port), ssl=ssl_ctx)
    frames = FrameReader(reader, max_frame_bytes=16 * 2**20, read_timeout_secs=args.timeout)
    worst = 0
    batches = [(path, split_messages(data)) for path, data in args.payloads]
    try:
        for path, bodies in batches:
            for body in bodies:
                writer.write(frame(body))
                await writer.drain()
                async with asyncio.timeout(args.timeout):
                    ack = await frames.read_frame()
                if ack is None:
                    print(f"{path}: connection closed without an ACK", file=sys.stderr)
                    return 1
                try:
                    control_id = read_header(body)[1].control_id
                except MessageError:
                    control_id = ""
                try:
                    code, _ = classify_ack(ack.body, control_id)
                except HubError:
                    code = "??"
                worst = max(worst, 0 if code in ("AA", "CA") else 2)
                try:
                    text, _ = decode_er7(ack.body)  # the ACK's own MSH-18
                except MessageError:
                    text = ack.body.decode("utf-8", "replace")
                print(text.replace("\r", "\n").rstrip("\n"))
                print()
    finally:
        writer.close()
    return worst


def cmd_send(args: argparse.Namespace) -> int:
    args.payloads = [(path, Path(path).read_bytes()) for path in args.files]
    return _run(_send(args))


# -- store commands -------------------------------------------------------------------------------------
def _with_store(args: argparse.Namespace, fn: Callable[[Store, Settings], Awaitable[int]]) -> int:
    settings = _settings(args)

    async def go() -> int:
        store = await open_store(settings.hub.store)
        try:
            return await fn(store, settings)
        finally:
            await store.close()

    return _run(go())


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.astimezone()


def cmd_messages(args: argparse.Namespace) -> int:
    query = SearchQuery(
        message_id=args.id,
        control_id=args.control_id,
        sending_app=args.sending_app,
        sending_facility=args.sending_facility,
        patient_key=args.patient_key,
        message_type=args.type,
        status=args.status,
        since=_parse_time(args.since),
        until=_parse_time(args.until),
        before_id=args.before,
        limit=args.limit,
    )

    async def go(store: Store, _settings: Settings) -> int:
        records = await store.search(query)
        deliveries = await store.deliveries([r.message.id for r in records])
        for r in records:
            item = r.summary()
            item["deliveries"] = [d.as_dict() for d in deliveries[r.message.id]]
            if args.json:
                print(json.dumps(item, ensure_ascii=False))
            else:
                ds = ", ".join(f"{d['destination']}={d['status']}({d['attempts']})" for d in item["deliveries"])
                print(
                    f"{item['id']}  {item['received_at'][:19]}  {item['status']:<9} {item['message_type']:<9}"
                    f" {item['control_id']:<16} {ds}{'  reason: ' + item['reason'] if item['reason'] else ''}"
                )
        return 0

    return _with_store(args, go)


def cmd_show(args: argparse.Namespace) -> int:
    async def go(store: Store, _settings: Settings) -> int:
        rec = await store.get_message(args.id)
        if rec is None:
            print(f"no message {args.id}", file=sys.stderr)
            return 1
        item = rec.summary()
        item["metadata"] = dict(rec.message.metadata)
        item["deliveries"] = []
        for d in (await store.deliveries([args.id]))[args.id]:
            dd = d.as_dict()
            dd["attempts_log"] = [
                {
                    "number": a.number,
                    "outcome": a.outcome,
                    "error": a.error,
                    "started_at": a.started_at.isoformat(),
                    "finished_at": a.finished_at.isoformat(),
                }
                for a in await store.attempts(d.id)
            ]
            item["deliveries"].append(dd)
        if args.body:
            codec = registry.get("text", rec.message.content_type)  # HL7 v2: its MSH-18 character set
            try:
                item["body"] = codec.factory.decode(rec.message.body)[1] if codec else rec.message.body.decode()
            except (MessageError, UnicodeDecodeError):
                item["body"] = rec.message.body.decode("utf-8", "replace")
        print(json.dumps(item, ensure_ascii=False, indent=None if args.json else 2))
        return 0

    return _with_store(args, go)


def cmd_replay(args: argparse.Namespace) -> int:
    from hub.runtime import replay

    body = Path(args.body).read_bytes() if args.body else None
    if body is not None and body.lstrip().startswith(b"MSH"):
        body = split_messages(body)[0]  # files are edited with LF line ends; HL7 wants CR

    async def go(store: Store, settings: Settings) -> int:
        try:
            result = await replay(store, settings, args.id, body=body)
        except KeyError:
            print(f"no message {args.id}", file=sys.stderr)
            return 1
        except MessageError as exc:
            print(f"still refused: {exc.reason}", file=sys.stderr)
            return 1
        print(json.dumps({"replayed": args.id, "new_id": result.message_id, "deliveries": result.deliveries}))
        return 0

    return _with_store(args, go)


def cmd_dead(args: argparse.Namespace) -> int:
    async def go(store: Store, _settings: Settings) -> int:
        for d in await store.find_deliveries(status="dead", destination=args.destination, limit=args.limit):
            item = {"delivery_id": d.id, "message_id": d.message_id, **d.as_dict()}
            print(
                json.dumps(item)
                if args.json
                else f"{d.id:>8}  {d.message_id}  {d.route}->{d.destination}  attempts={d.attempts}  {d.last_error}"
            )
        return 0

    return _with_store(args, go)


def cmd_requeue(args: argparse.Namespace) -> int:
    async def go(store: Store, _settings: Settings) -> int:
        ids = list(args.delivery_ids)
        if args.all_dead:
            ids += [
                d.id for d in await store.find_deliveries(status="dead", destination=args.destination, limit=100_000)
            ]
        print(json.dumps({"requeued": await store.requeue(ids)}))
        return 0

    return _with_store(args, go)


def cmd_purge(args: argparse.Namespace) -> int:
    statuses = tuple(args.status or ("delivered", "rejected", "unrouted"))

    async def go(store: Store, settings: Settings) -> int:
        before = datetime.now().astimezone() - timedelta(days=args.older_than_days)
        total = 0
        while (n := await store.purge(before=before, statuses=statuses, batch=args.batch)) > 0:
            total += n
            if n < args.batch:
                break
        print(json.dumps({"purged": total, "before": before.isoformat(), "statuses": list(statuses)}))
        return 0

    return _with_store(args, go)


def cmd_sandboxes(args: argparse.Namespace) -> int:
    settings = _settings(args)
    for name, entry in settings.hub.sandboxes.items():
        cfg = settings.component_configs[("sandbox", name)]
        item: dict[str, Any] = {
            "sandbox": name,
            "kind": entry.type,
            **cfg.model_dump(include={"listen"}),
            "http": f"http://{settings.hub.http.listen}/sandboxes/{name}/",
        }
        print(
            json.dumps(item) if args.json else f"{name:<16} {entry.type:<16} {item.get('listen', '')}  {item['http']}"
        )
    return 0


def cmd_dev_pki(args: argparse.Namespace) -> int:
    from hub.devpki import ensure_pki

    pki = ensure_pki(Path(args.dir))
    print(json.dumps({k: str(v) for k, v in dataclasses.asdict(pki).items()}))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    registry.load_builtin()
    kinds: tuple[registry.Kind, ...] = ("inbound", "outbound", "sandbox", "step")
    found = [registry.get(k, args.name) for k in kinds]
    comps = [c for c in found if c is not None]
    if not comps:
        print(f"unknown component {args.name!r}", file=sys.stderr)
        return 1
    docs = [
        {"kind": c.kind, "name": c.name, "summary": c.summary, "config": c.config.model_json_schema()} for c in comps
    ]
    print(json.dumps(docs, indent=2))
    return 0


# -- identity ------------------------------------------------------------------------------------------
def _print_rows(rows: list[dict[str, Any]], as_json: bool, fmt: Callable[[dict[str, Any]], str]) -> None:
    for row in rows:
        print(json.dumps(row, ensure_ascii=False) if as_json else fmt(row))


def _insi_search(args: argparse.Namespace) -> int:
    """Ask INSi (the configured sandbox by default) for an INS by strict traits."""
    import datetime as dt

    from adapters.insi.http import HttpInsiResolver
    from hub.identity.insi import InsiQuery
    from hub.identity.traits import Sex

    url = args.url
    if not url:
        settings = _settings(args)
        names = [n for n, e in settings.hub.sandboxes.items() if e.type == "insi"]
        if not names:
            print("no INSi sandbox in the config: give --url", file=sys.stderr)
            return 1
        url = f"http://{settings.hub.http.listen}/sandboxes/{names[0]}/search"
    query = InsiQuery(
        birth_name=args.birth_name,
        given_names=args.given_names,
        sex=Sex.parse(args.sex),
        birth_date=dt.date.fromisoformat(args.birth_date),
        birthplace_code=args.birthplace,
    )
    result = _run(HttpInsiResolver(url).resolve(query))
    out: dict[str, Any] = {"outcome": result.outcome.value}
    if result.identity is not None:
        from hub.identity.insi import traits_to_json

        out |= {"ins": result.identity.ins, "oid": result.identity.oid, **traits_to_json(result.identity.traits)}
    print(json.dumps(out, ensure_ascii=False))
    return 0 if result.identity is not None else 2


def cmd_identity(args: argparse.Namespace) -> int:
    if args.action == "insi":
        return _insi_search(args)

    async def go(store: Store, _settings: Settings) -> int:
        if args.action == "list":
            rows = [
                {"item": "identity", "review_state": None, **r.as_dict()}
                for r in await store.list_identities(status=args.status, limit=args.limit)
            ]
            if args.with_reviews:
                rows += [
                    {"item": "review", "review_state": r.state, **r.as_dict()}
                    for r in await store.list_reviews(limit=args.limit)
                ]
            _print_rows(
                rows,
                args.json,
                lambda r: (
                    f"{r['patient_key']:<28} {r.get('status') or '':<11} {r.get('ins_oid') or '':<22} "
                    f"{'INS known' if r.get('ins') else 'no INS':<9} {r.get('review_state') or ''}"
                ),
            )
            return 0
        if args.action == "show":
            record = await store.get_identity(args.key)
            if record is None:
                print(f"no identity {args.key}", file=sys.stderr)
                return 1
            item = record.as_dict() | {"traits": dict(record.traits)}
            item["history"] = [
                {
                    "at": h.at.isoformat(),
                    "event": h.event,
                    "message_id": h.message_id,
                    "status": h.status,
                    "note": h.note,
                }
                for h in await store.identity_history(args.key)
            ]
            held = await store.search(SearchQuery(patient_key=args.key, status="awaiting_identity"))
            item["awaiting_identity"] = [r.message.id for r in held]
            print(json.dumps(item, ensure_ascii=False, indent=None if args.json else 2))
            return 0
        if args.action == "reviews":
            rows = [r.as_dict() for r in await store.list_reviews(state=args.state, limit=args.limit)]
            _print_rows(
                rows,
                args.json,
                lambda r: (
                    f"{r['review_id']:>6}  {r['state']:<9} {r['patient_key']:<28} {r['message_id']}  {r['reason']}"
                ),
            )
            return 0
        action = "release" if args.release else "discard"
        review = await store.resolve_review(args.review_id, action=action, by=args.by)
        if review is None:
            print(f"no open review {args.review_id}", file=sys.stderr)
            return 1
        print(json.dumps(review.as_dict()))
        return 0

    return _with_store(args, go)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hub", description="Integration engine for French health data.")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str, config: bool = True) -> Any:
        sp = sub.add_parser(name, help=help_, description=help_)
        if config:
            sp.add_argument(
                "--config",
                default=os.environ.get("HUB_CONFIG", DEFAULT_CONFIG),
                help="config file (default: $HUB_CONFIG or config/hub.yaml)",
            )
        sp.set_defaults(fn=fn)
        return sp

    add("serve", cmd_serve, "run the hub")
    add("check", cmd_check, "validate the config and every route")
    sp = add("send", cmd_send, "send HL7 v2 file(s) over MLLP and print each ACK", config=False)
    sp.add_argument("files", nargs="+")
    sp.add_argument("--to", required=True, help="mllp://HOST:PORT or mllps://HOST:PORT")
    sp.add_argument("--timeout", type=float, default=30.0)
    sp.add_argument("--ca")
    sp.add_argument("--cert")
    sp.add_argument("--key")
    sp = add("messages", cmd_messages, "search stored messages (newest first)")
    for opt in (
        "--id",
        "--control-id",
        "--sending-app",
        "--sending-facility",
        "--patient-key",
        "--type",
        "--status",
        "--since",
        "--until",
        "--before",
    ):
        sp.add_argument(opt)
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--json", action="store_true")
    sp = add("show", cmd_show, "one message with its deliveries and attempts")
    sp.add_argument("id")
    sp.add_argument("--body", action="store_true", help="include the payload")
    sp.add_argument("--json", action="store_true")
    sp = add("replay", cmd_replay, "run a stored message again (optionally with a corrected body)")
    sp.add_argument("id")
    sp.add_argument("--body", help="file with the corrected message")
    sp = add("dead", cmd_dead, "list dead-lettered deliveries")
    sp.add_argument("--destination")
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--json", action="store_true")
    sp = add("requeue", cmd_requeue, "send dead-lettered deliveries again")
    sp.add_argument("delivery_ids", nargs="*", type=int)
    sp.add_argument("--all-dead", action="store_true")
    sp.add_argument("--destination")
    sp = add("purge", cmd_purge, "delete finished messages older than N days, batch by batch (audit kept)")
    sp.add_argument("--older-than-days", type=float, required=True)
    sp.add_argument(
        "--status",
        action="append",
        choices=["delivered", "rejected", "unrouted", "failed"],
        help="repeatable; default: delivered, rejected, unrouted (dead letters stay)",
    )
    sp.add_argument("--batch", type=int, default=1000)
    sp = add("sandboxes", cmd_sandboxes, "where the configured sandboxes listen")
    sp.add_argument("--json", action="store_true")
    ip = add("identity", cmd_identity, "the identity registry and the identity review queue")
    isub = ip.add_subparsers(dest="action", required=True)
    x = isub.add_parser("list", help="identities (and, with --with-reviews, review items)")
    x.add_argument("--status")
    x.add_argument("--with-reviews", action="store_true")
    x.add_argument("--limit", type=int, default=1000)
    x.add_argument("--json", action="store_true")
    x = isub.add_parser("show", help="one identity, its history and the messages waiting for it")
    x.add_argument("key", help="patient key: local-id@authority")
    x.add_argument("--json", action="store_true")
    x = isub.add_parser("reviews", help="messages whose traits disagree with the registry")
    x.add_argument("--state", default="open", help="open, released, discarded (default: open)")
    x.add_argument("--limit", type=int, default=1000)
    x.add_argument("--json", action="store_true")
    x = isub.add_parser("resolve", help="release a reviewed message (trait check waived) or discard it")
    x.add_argument("review_id", type=int)
    group = x.add_mutually_exclusive_group(required=True)
    group.add_argument("--release", action="store_true")
    group.add_argument("--discard", action="store_true")
    x.add_argument("--by", default=os.environ.get("USER", "operator"), help="who decided (kept with the review)")
    x = isub.add_parser("insi", help="ask INSi for an INS by strict traits (exit 2 when none or several match)")
    x.add_argument("--birth-name", required=True)
    x.add_argument("--given-names", required=True, help="one or more birth given names, space separated")
    x.add_argument("--sex", required=True, help="M or F")
    x.add_argument("--birth-date", required=True, help="YYYY-MM-DD")
    x.add_argument("--birthplace", help="INSEE code (COG) of the birthplace")
    x.add_argument("--url", help="the INSi endpoint (default: the config's INSi sandbox)")
    for sp_ in isub.choices.values():
        sp_.add_argument("--config", default=os.environ.get("HUB_CONFIG", DEFAULT_CONFIG))
    sp = add("dev-pki", cmd_dev_pki, "create a development CA and certificates (sandboxes only)", config=False)
    sp.add_argument("dir", nargs="?", default="var/pki")
    sp = add("describe", cmd_describe, "print a component's config schema", config=False)
    sp.add_argument("name")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
