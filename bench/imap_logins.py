"""IMAP logins per second through Dovecot and the hub's authentication, by method.

Method: the `imap` listener (Dovecot run by the hub, generated config, auth penalty and failure delay off)
and the Pro Santé Connect sandbox run in this process, on loopback. `--clients` threads each open
`--logins` IMAPS connections one after the other with Python's imaplib: TLS handshake (with a client
certificate for EXTERNAL), AUTHENTICATE, SELECT INBOX, LOGOUT. Reported per method: logins/s over the
wall time, and the p50 / p99 of one connection's latency. What each method costs the hub:

* EXTERNAL (card): Dovecot runs the checkpassword program (a `python -I -S` process) which asks the hub
  over its UNIX socket;
* OAUTHBEARER (PSC token): Dovecot's oauth2 passdb POSTs the token to the hub's introspection endpoint,
  which checks its signature (PyJWT, RS256) against the sandbox's JWKS (fetched once);
* PLAIN (password, where allowed): checkpassword again, plus one scrypt (N=2^14) in the hub.

Run: `.venv/bin/python bench/imap_logins.py --clients 4 --logins 50` (needs Dovecot: `make dovecot`).
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.imap.dovecot import ImapConfig, ImapInbound, dovecot_binary  # noqa: E402
from adapters.sandboxes.mssante_peer import TEST_APP_CERT_NAME, make_test_pki  # noqa: E402
from adapters.sandboxes.psc import PscSandbox, PscSandboxConfig  # noqa: E402
from adapters.smtp.common import hash_password  # noqa: E402
from bench.mllp_ingest import free_port  # noqa: E402

PERSONAL, APP, ORG = "dr.bench@hub.test", "app@hub.test", "org@hub.test"
DOCTOR = "810000000001"
PASSWORD = "bench-password"


def run_clients(clients: int, logins: int, one: Callable[[], None]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(logins):
            t0 = time.perf_counter()
            one()
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--logins", type=int, default=50, help="per client and method")
    args = parser.parse_args()
    if dovecot_binary() is None:
        raise SystemExit("Dovecot is not installed (make dovecot)")
    folder = Path(tempfile.mkdtemp(prefix="hub-imap-bench-"))
    pki = make_test_pki(folder / "pki", peer_names=["peer.test"], hub_names=["localhost", "127.0.0.1"])
    psc = PscSandbox("psc", PscSandboxConfig(listen=f"127.0.0.1:{free_port()}"))
    await psc.start()
    port = free_port()
    config = ImapConfig.model_validate({
        "listen": None, "listen_tls": f"127.0.0.1:{port}", "hostname": "localhost",
        "tls": {"cert_file": str(pki["hub"]), "key_file": str(pki["hub_key"]), "ca_file": str(pki["ca"])},
        "mailbox_dir": str(folder / "mail"), "run_dir": str(folder / "dovecot"), "required": True,
        "failure_delay_secs": 0, "auth_penalty": False,
        "mailboxes": [
            {"address": PERSONAL, "kind": "personal", "owner": DOCTOR},
            {"address": APP, "kind": "application", "certificates": [TEST_APP_CERT_NAME]},
            {"address": ORG, "kind": "organisational", "password_hash": hash_password(PASSWORD)},
        ],
        "access": {"oidc": {"issuer": psc.issuer}, "password_kinds": ["organisational"]},
    })  # fmt: skip
    imap = ImapInbound("imap", config, None)  # type: ignore[arg-type]
    await imap.start()
    plain_ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    card_ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    card_ctx.load_cert_chain(str(pki["app"]), str(pki["app_key"]))
    token = psc.issue(DOCTOR, lifetime_secs=3600)
    bearer = f"n,a={PERSONAL},\x01auth=Bearer {token}\x01\x01".encode()

    def session(ctx: ssl.SSLContext, login: Callable[[imaplib.IMAP4_SSL], object]) -> None:
        client = imaplib.IMAP4_SSL("localhost", port, ssl_context=ctx, timeout=30)
        login(client)
        client.select("INBOX")
        client.logout()

    methods: dict[str, Callable[[], None]] = {
        "EXTERNAL (card -> checkpassword -> hub socket)": lambda: session(
            card_ctx, lambda c: c.authenticate("EXTERNAL", lambda _: b"")
        ),
        "OAUTHBEARER (PSC token -> oauth2 introspection -> hub)": lambda: session(
            plain_ctx,
            lambda c: c.authenticate("OAUTHBEARER", lambda _: bearer),
        ),
        "PLAIN (password -> checkpassword -> hub, scrypt)": lambda: session(
            plain_ctx, lambda c: c.login(ORG, PASSWORD)
        ),
    }
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"IMAP logins, {args.clients} clients x {args.logins} logins per method, Dovecot "
          f"(TLS, AUTHENTICATE, SELECT, LOGOUT per connection)")  # fmt: skip
    try:
        for name, one in methods.items():
            await asyncio.to_thread(one)  # warm-up (the JWKS fetch, Dovecot's first auth worker)
            wall, lat = await asyncio.to_thread(run_clients, args.clients, args.logins, one)
            lat.sort()
            print(
                f"  {name:<56} {len(lat) / wall:7.1f} logins/s   p50 {statistics.median(lat) * 1000:6.1f} ms"
                f"   p99 {lat[int(len(lat) * 0.99) - 1] * 1000:6.1f} ms"
            )
    finally:
        await imap.stop()
        await psc.stop()


if __name__ == "__main__":
    asyncio.run(main())
