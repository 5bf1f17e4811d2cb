"""The DATA phase of the SMTP listeners: the hub's reader (adapters/smtp/dataphase.py) against aiosmtpd's own.

Method: the `smtp_mta` listener runs in a child process (one per variant and case, so that its peak RSS is
its own) on loopback, STARTTLS with a test PKI, no client certificate asked, its InboundContext an in-memory
stand-in (submit and reject keep nothing: the store is not measured here). The variant `aiosmtpd` puts back
aiosmtpd's `smtp_DATA` on the listener's protocol class, the code before this reader. One aiosmtplib client
on the same connection sends, one after the other:

* `nominal`: `--count` mails of `--size-mb` MB in 78-octet lines (base64-like), under the limit: the time
  from the DATA command to the 250 (analyse() of each mail included: the listener's real handle_DATA);
* `oversize`: one mail of `--big-mb` MB in 78-octet lines, over `max_message_bytes` (`--size-mb` x 2);
* `endless`: one mail of `--big-mb` MB on a single line (no CRLF until the end), the hostile case.

Reported: seconds per mail, MB/s, the reply code, and the child's RSS before the traffic and its high-water
mark (VmHWM) after it.

Run: `.venv/bin/python bench/smtp_data.py --size-mb 4 --count 10 --big-mb 64`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402
from aiosmtpd.smtp import SMTP  # noqa: E402

from adapters.smtp import inbound  # noqa: E402
from adapters.tls import TlsConfig, client_context  # noqa: E402
from hub.devpki import make_pki  # noqa: E402
from hub.store.base import SubmitResult  # noqa: E402

DOMAIN, PEER = "hub.bench", "peer.bench"


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Ctx:
    """The hub as the listener sees it, keeping nothing (the store is another benchmark's subject)."""

    endpoint = "in"

    async def submit(self, message: Any, *, dedup_key: str | None = None) -> SubmitResult:
        return SubmitResult(message_id=message.id, duplicate=False, deliveries=0)

    async def reject(self, message: Any, *, reason: str) -> None:
        return None

    async def audit(self, action: str, *, actor: str, outcome: str, detail: Any) -> None:
        return None


def _mail(n: int, body: bytes) -> bytes:
    head = f"From: <lab@{PEER}>\r\nTo: <dr@{DOMAIN}>\r\nSubject: bench\r\nMessage-ID: <b{n}@{PEER}>\r\n\r\n"
    return head.encode() + body


def _lines(size: int) -> bytes:
    return (b"QUJD" * 19 + b"\r\n") * (size // 78 + 1)


async def _send(smtp: aiosmtplib.SMTP, mail: bytes) -> tuple[int, float]:
    assert (await smtp.execute_command(f"MAIL FROM:<lab@{PEER}>".encode())).code == 250
    assert (await smtp.execute_command(f"RCPT TO:<dr@{DOMAIN}>".encode())).code == 250
    start = time.perf_counter()
    try:
        code = (await smtp.data(mail)).code
    except aiosmtplib.SMTPDataError as exc:
        code = exc.code
    return code, time.perf_counter() - start


async def serve(variant: str, limit: int) -> None:
    """The child: the listener on loopback; prints its port and RSS, then its high-water mark when told to stop."""
    if variant == "aiosmtpd":
        inbound._Protocol.smtp_DATA = SMTP.smtp_DATA  # type: ignore[method-assign]
    folder = Path(tempfile.mkdtemp(prefix="hub-smtp-data-"))
    pki = make_pki(folder)
    config = inbound.SmtpMtaConfig(
        listen="127.0.0.1:0", hostname=f"mx.{DOMAIN}", require_client_cert=False, domains=[DOMAIN],
        tls=TlsConfig(cert_file=str(pki.server_cert), key_file=str(pki.server_key)),
        mailboxes=[inbound.HostedMailbox(address=f"dr@{DOMAIN}", kind="personal")],
        trusted_domains=[PEER], max_message_bytes=limit, timeout_secs=600,
    )  # fmt: skip
    listener = inbound.SmtpMtaInbound("in", config, _Ctx())
    await listener.start()
    print("\n" + json.dumps({"port": listener.port, "ca": str(pki.ca), "rss_mb": rss_mb("VmRSS")}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await listener.stop()
    print(json.dumps({"peak_mb": rss_mb("VmHWM")}), flush=True)


async def _report(stdout: asyncio.StreamReader, key: str) -> dict[str, Any]:
    """The child's next JSON line holding `key` (the listener's own log lines come on stdout too)."""
    while line := await stdout.readline():
        if line.startswith(b'{"' + key.encode()):
            return dict(json.loads(line))
    raise RuntimeError("the listener stopped without reporting")


async def run(variant: str, case: str, size_mb: float, count: int, big_mb: float) -> dict[str, Any]:
    limit = int(size_mb * 2 * 2**20)
    cmd = [sys.executable, __file__, "--serve", variant, str(limit)]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert proc.stdin is not None and proc.stdout is not None
    ready = await _report(proc.stdout, "port")
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=ready["port"], start_tls=False, timeout=600)
    await smtp.connect()
    await smtp.starttls(tls_context=client_context(TlsConfig(ca_file=ready["ca"])))
    await smtp.ehlo()
    if case == "nominal":
        mails = [_mail(i, _lines(int(size_mb * 2**20))) for i in range(count)]
    elif case == "oversize":
        mails = [_mail(0, _lines(int(big_mb * 2**20)))]
    else:
        mails = [_mail(0, b"A" * int(big_mb * 2**20) + b"\r\n")]
    times, codes = [], set()
    for mail in mails:
        code, secs = await _send(smtp, mail)
        times.append(secs)
        codes.add(code)
    smtp.close()
    proc.stdin.write(b"stop\n")
    peak = await _report(proc.stdout, "peak_mb")
    await proc.wait()
    size = len(mails[0])
    return {
        "mail_mb": round(size / 2**20, 1), "codes": sorted(codes), "secs_per_mail": round(sum(times) / len(times), 3),
        "mb_per_s": round(size * len(mails) / 2**20 / sum(times), 1), "rss_before_mb": round(ready["rss_mb"]),
        "rss_peak_mb": round(peak["peak_mb"]),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=float, default=4.0)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--big-mb", type=float, default=64.0)
    p.add_argument("--serve", nargs=2, metavar=("VARIANT", "LIMIT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve[0], int(args.serve[1])))
        return
    print(f"load average at start: {os.getloadavg()}")
    columns = ("case", "variant", "mail MB", "codes", "s/mail", "MB/s", "RSS before", "peak")
    print("{:<9} {:<9} {:>8} {:>7} {:>8} {:>7} {:>11} {:>6}".format(*columns))
    for case in ("nominal", "oversize", "endless"):
        for variant in ("aiosmtpd", "hub"):
            r = asyncio.run(run(variant, case, args.size_mb, args.count, args.big_mb))
            print(
                f"{case:<9} {variant:<9} {r['mail_mb']:>8} {','.join(map(str, r['codes'])):>7} "
                f"{r['secs_per_mail']:>8} {r['mb_per_s']:>7} {r['rss_before_mb']:>9} MB {r['rss_peak_mb']:>3} MB"
            )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
