"""The `hub` command: serve, check, send, messages, replay, dead, requeue, sandboxes, audit, describe.

Every command that touches the store is audited (actor ``cli:<OS user>``), before and after.

Every listing takes ``--json`` and then prints one JSON object per line, for
scripts. Exit codes: 0 success, 1 failure or invalid input, 2 a peer refused
(``send`` got AE/AR).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import getpass
import inspect
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from hub import mailbox_cli, registry
from hub.cli_api import add_api_commands, api_command, api_options, cmd_identity_api
from hub.config import Settings, load_config
from hub.errors import ConfigError, HubError
from hub.statuses import FINISHED_MESSAGE_STATUSES, MessageStatus, ReviewState
from hub.store import Store, open_store

__all__ = ["main"]

DEFAULT_CONFIG = "config/hub.yaml"
_T = TypeVar("_T")


def _settings(args: argparse.Namespace) -> Settings:
    return load_config(args.config)


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a command's coroutine on uvloop (unless ``HUB_EVENT_LOOP`` says otherwise)."""
    if os.environ.get("HUB_EVENT_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop

            return uvloop.run(coro)
        except ImportError:
            pass
    return asyncio.run(coro)


# -- serve --------------------------------------------------------------------------------------------
async def _serve(settings: Settings) -> int:
    from hub.runtime import Hub

    hub = Hub(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[Any]] = set()

    def on_hup() -> None:  # SIGHUP: reload the routes, validated as `hub check` (hub/reload.py)
        task = loop.create_task(hub.reload(by="signal"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
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
    from hub.routetest import load_case_files

    settings = _settings(args)
    load_case_files(settings)  # route test case files too (run them with `hub test`)
    print(
        f"ok: {args.config}: {len(settings.hub.listeners)} listeners, {len(settings.hub.endpoints)} endpoints, "
        f"{len(settings.hub.sandboxes)} sandboxes, {len(settings.routes)} routes"
    )
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the running hub (admin API) to reload its routes; prints the result, exit 1 when refused."""
    import aiohttp

    from hub.admin.auth import bootstrap_token_path

    settings = _settings(args)
    token = args.token or os.environ.get("HUB_ADMIN_TOKEN")
    if not token:
        path = bootstrap_token_path(settings.hub)
        token = path.read_text().strip() if path.exists() else ""
    scheme = "https" if settings.hub.http.tls else "http"
    url = args.url or f"{scheme}://{settings.hub.http.listen}"

    async def go() -> int:
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session, session.post(f"{url}/api/config/reload", headers=headers) as r:
            text = await r.text()
        print(text)
        return 0 if r.status == 200 and json.loads(text).get("applied") else 1

    return _run(go())


def cmd_test(args: argparse.Namespace) -> int:
    from hub.routetest import run_route_tests

    settings = _settings(args)
    results = run_route_tests(settings, only=args.only)
    for r in results:
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.file}:{r.line}: {r.name}")
        for failure in r.failures:
            print("     " + failure.replace("\n", "\n     "))
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed or not results else 0


# -- store commands -------------------------------------------------------------------------------------
def _with_store(args: argparse.Namespace, fn: Callable[[Store, Settings], Awaitable[int]]) -> int:
    """Run `fn` on the configured store; the action is audited before (`started`) and after (`ok`/`failed`)."""
    from hub.admin.audit import load_audit_keys

    settings = _settings(args)

    async def go() -> int:
        store = await open_store(settings.hub.store)
        try:
            store.audit_key = load_audit_keys(settings.hub).current
            await _cli_audit(store, args, "started")
            rc = 1
            try:
                rc = await fn(store, settings)
            finally:
                await _cli_audit(store, args, "ok" if rc == 0 else "failed")
            return rc
        finally:
            await store.close()

    return _run(go())


def cmd_mailbox(args: argparse.Namespace) -> int:
    """Mailbox administration through the running hub's admin API (hub/mailbox_cli.py)."""
    return mailbox_cli.run(args, _settings(args))


_NOT_AUDITED_ARGS = frozenset({"fn", "config", "command", "json", "body", "payloads"})


async def _cli_audit(store: Store, args: argparse.Namespace, outcome: str) -> None:
    """One audit entry for a CLI action on the store, naming the operating-system user and the arguments."""
    from hub.store import AuditEvent

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = f"uid-{os.getuid()}"
    detail = {k: v for k, v in vars(args).items() if k not in _NOT_AUDITED_ARGS and v not in (None, False, [])}
    if getattr(args, "body", None):
        detail["corrected"] = True
    action = "cli_" + "_".join(filter(None, (args.command, getattr(args, "action", None))))
    await store.append_audit(
        AuditEvent(actor=f"cli:{who}", role="cli", action=action, message_id=getattr(args, "id", None),
                   detail=detail, outcome=outcome)
    )  # fmt: skip




def cmd_purge(args: argparse.Namespace) -> int:
    statuses = tuple(args.status or (MessageStatus.DELIVERED, MessageStatus.REJECTED, MessageStatus.UNROUTED))
    if not args.yes:
        question = f"Delete {', '.join(statuses)} messages older than {args.older_than_days:g} days?"
        if not sys.stdin.isatty():
            print(f"{question} Not confirmed: add --yes (no terminal to ask on); nothing was done", file=sys.stderr)
            return 1
        if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes", "o", "oui"):
            print("not confirmed; nothing was done", file=sys.stderr)
            return 1

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


def cmd_identity(args: argparse.Namespace) -> int:
    return api_command(cmd_identity_api)(args)


def cmd_audit(args: argparse.Namespace) -> int:
    """`hub audit-chain export` (JSON lines, exactly as hashed) and `hub audit-chain verify` (store or export)."""
    from hub.admin.audit import export_line, load_audit_keys, verify_chain, verify_export

    settings = _settings(args)
    keys = load_audit_keys(settings.hub)
    if args.action == "verify" and args.file:
        with open(args.file, encoding="utf-8") as f:
            report = verify_export(f, keys)
        print(json.dumps(report.as_dict()))
        return 0 if report.ok else 1

    async def go(store: Store, _settings: Settings) -> int:
        if args.action == "verify":
            report = await verify_chain(store, keys=keys)
            print(json.dumps(report.as_dict()))
            return 0 if report.ok else 1
        after = args.after
        while batch := await store.audit_chain(after_id=after, limit=1000):
            for entry in batch:
                print(export_line(entry))
            after = batch[-1].id
        return 0

    if args.action == "verify":
        # Verifying reads only: not itself audited, so that it can run on a copy of the database.
        async def plain() -> int:
            store = await open_store(settings.hub.store)
            try:
                return await go(store, settings)
            finally:
                await store.close()

        return _run(plain())
    return _with_store(args, go)


def _add_contributed(sub: Any, parent: str) -> None:
    """Add the commands registered under `parent` (kind ``command``, hub/registry.py): protocol clients
    live with their adapter, and the hub reaches them only through the registry."""
    for name in registry.names("command"):
        head, _, leaf = name.rpartition(" ")
        if head != parent:
            continue
        component = registry.get("command", name)
        assert component is not None
        component.factory(sub.add_parser(leaf, help=component.summary, description=component.summary))


def build_parser() -> argparse.ArgumentParser:
    registry.load_builtin()  # the registered commands
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
    sp = add("reload", cmd_reload, "validate the config as `hub check` does and apply its routes to the running hub")
    sp.add_argument("--url", help="the hub's HTTP base URL (default: from http.listen)")
    sp.add_argument("--token", help="admin bearer token (default: $HUB_ADMIN_TOKEN, then the bootstrap token file)")
    sp = add("test", cmd_test, "run the route test cases kept beside the routes (routes/tests/*.yaml)")
    sp.add_argument("--only", help="run only the cases whose name or file name holds this text")
    _add_contributed(sub, "")  # `hub send` (adapters/mllp/cli.py)
    add_api_commands(add, DEFAULT_CONFIG)
    help_mailbox = "hosted mailboxes: list, create, suspend, resume, delete, annuaire (through the admin API)"
    mailbox_cli.add_parser(add("mailbox", cmd_mailbox, help_mailbox))
    sp = add(
        "purge", cmd_purge, "offline maintenance, on the store directly: delete finished messages older than N "
        "days, batch by batch (the audit trail is kept)",
    )  # fmt: skip
    sp.add_argument("--older-than-days", type=float, required=True, help="received more than this many days ago")
    sp.add_argument(
        "--status",
        action="append",
        choices=FINISHED_MESSAGE_STATUSES,
        help="repeatable; default: delivered, rejected, unrouted (dead letters stay)",
    )
    sp.add_argument("--batch", type=int, default=1000, help="messages deleted per transaction (default 1000)")
    sp.add_argument("--yes", "-y", action="store_true", help="do it without asking (for scripts)")
    sp = add("sandboxes", cmd_sandboxes, "where the configured sandboxes listen")
    sp.add_argument("--json", action="store_true", help="one JSON object per line")
    ip = add("identity", cmd_identity, "the identity registry and the identity review queue", config=False)
    isub = ip.add_subparsers(dest="action", required=True)
    x = isub.add_parser("list", help="identities (and, with --with-reviews, review items)")
    api_options(x, DEFAULT_CONFIG, listing=True)
    x.add_argument("--status", help="only this RNIV status (provisoire, recuperee, validee, qualifiee)")
    x.add_argument("--with-reviews", action="store_true", help="add the open identity reviews")
    x.add_argument("--limit", type=int, default=1000, help="most listed (default 1000)")
    x = isub.add_parser("show", help="one identity, its history and the messages waiting for it")
    api_options(x, DEFAULT_CONFIG, listing=True)
    x.add_argument("key", help="patient key: local-id@authority")
    x = isub.add_parser("reviews", help="messages whose traits disagree with the registry")
    api_options(x, DEFAULT_CONFIG, listing=True)
    x.add_argument("--state", default=ReviewState.OPEN, choices=list(ReviewState), help="default: open")
    x.add_argument("--limit", type=int, default=1000, help="most listed (default 1000)")
    x = isub.add_parser("resolve", help="release a reviewed message (trait check waived) or discard it")
    api_options(x, DEFAULT_CONFIG, acting=True)
    x.add_argument("review_id", type=int, help="review id (from `hub identity reviews`)")
    group = x.add_mutually_exclusive_group(required=True)
    group.add_argument("--release", action="store_true", help="send it on, the trait check waived for it")
    group.add_argument("--discard", action="store_true", help="dead-letter it")
    x.add_argument("--by", help=argparse.SUPPRESS)  # before the API: who decided; now the token's user
    _add_contributed(isub, "identity")  # `hub identity insi` (adapters/insi/cli.py)
    ap = add("audit-chain", cmd_audit, "export the audit trail, or verify its keyed chain (in the store or an export)")
    asub = ap.add_subparsers(dest="action", required=True)
    x = asub.add_parser("export", help="every entry after --after, as JSON lines (exactly as hashed)")
    x.add_argument("--after", type=int, default=0, help="export entries after this id (default 0: all)")
    x = asub.add_parser("verify", help="check the chain with the configured keys; exit 1 when it does not verify")
    x.add_argument("--file", help="an export to check offline, instead of the store")
    for sp_ in asub.choices.values():
        sp_.add_argument(
            "--config", default=os.environ.get("HUB_CONFIG", DEFAULT_CONFIG),
            help="config file: the store and the audit keys (default: $HUB_CONFIG or config/hub.yaml)",
        )  # fmt: skip
    sp = add("dev-pki", cmd_dev_pki, "create a development CA and certificates (sandboxes only)", config=False)
    sp.add_argument("dir", nargs="?", default="var/pki", help="where to write them (default var/pki)")
    sp = add("describe", cmd_describe, "print a component's config schema", config=False)
    sp.add_argument("name", help="a listener, endpoint, sandbox or step type, e.g. mllp")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.fn(args)
        if inspect.iscoroutine(rc):  # a command may be a coroutine function (asyncio.run takes only a coroutine)
            rc = _run(rc)
        return int(rc)
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
