"""``hub send``: send HL7 v2 files to an MLLP listener and print each ACK (a test client, not a destination).

Exit codes: 0 every message acknowledged (AA/CA), 1 failure (no ACK, bad ``--to``), 2 a peer refused (AE/AR).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from adapters.mllp.framing import FrameReader, frame
from adapters.mllp.outbound import classify_ack
from adapters.tls import TlsConfig, client_context
from hub.errors import HubError, MessageError
from hub.registry import register
from mappings.hl7v2 import decode_er7, read_header
from mappings.hl7v2.batch import split_messages

__all__ = ["add_send_command", "send_files"]

#: Largest ACK frame read back (an ACK is small; this only bounds a hostile peer).
MAX_ACK_BYTES = 16 * 2**20


@register("command", "send")
def add_send_command(parser: argparse.ArgumentParser) -> None:
    """send HL7 v2 file(s) over MLLP and print each ACK"""
    parser.add_argument("files", nargs="+", help="HL7 v2 files (LF or CR line ends, several messages per file)")
    parser.add_argument("--to", required=True, help="mllp://HOST:PORT or mllps://HOST:PORT")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each ACK (default 30)")
    parser.add_argument("--ca", help="mllps: trust anchors (PEM) for the server's certificate")
    parser.add_argument("--cert", help="mllps: our client certificate (PEM), for mutual TLS")
    parser.add_argument("--key", help="mllps: the private key of --cert (PEM)")
    parser.set_defaults(fn=send_files)


def send_files(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """Send every message of ``args.files`` in order on one connection, each after the previous one's ACK."""
    return _send([(path, Path(path).read_bytes()) for path in args.files], args)


async def _send(payloads: list[tuple[str, bytes]], args: argparse.Namespace) -> int:
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
    frames = FrameReader(reader, max_frame_bytes=MAX_ACK_BYTES, read_timeout_secs=args.timeout)
    worst = 0
    batches = [(path, split_messages(data)) for path, data in payloads]
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
                worst = max(worst, _show_ack(body, ack.body))
    finally:
        writer.close()
    return worst


def _show_ack(sent: bytes, ack: bytes) -> int:
    """Print the ACK (in its own MSH-18 character set); 0 when it accepts, 2 otherwise."""
    try:
        control_id = read_header(sent)[1].control_id
    except MessageError:
        control_id = ""
    try:
        code, _ = classify_ack(ack, control_id)
    except HubError:
        code = "??"
    try:
        text, _ = decode_er7(ack)
    except MessageError:
        text = ack.decode("utf-8", "replace")
    print(text.replace("\r", "\n").rstrip("\n"))
    print()
    return 0 if code in ("AA", "CA") else 2
