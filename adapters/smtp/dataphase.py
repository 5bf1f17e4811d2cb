"""Reading the mail data of one SMTP transaction (after DATA and its 354, up to the lone dot), in bounded memory.

aiosmtpd's own reader drops a mail over its size limit and answers 552 without
telling the handler, so the hub could not store it; and it keeps every piece of
an endless line. This one reads to the final dot in every case (RFC 5321
§4.2.5: the reply comes after the end of data) and hands the listener:

* the mail, dot-unstuffed (RFC 5321 §4.5.2), when it is within the limits;
* else the first ``keep`` bytes of it, its size, and what was wrong: more than
  ``limit`` octets (RFC 1870: 552) or a line longer than ``line_limit``
  (RFC 5321 §4.5.3.1.6). Past that point, what arrives is counted and dropped:
  a peer cannot make the listener hold more than ``limit`` bytes of a mail, nor
  more than the stream reader's own buffer of one line.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Literal

__all__ = ["MailData", "read_mail_data"]

Problem = Literal["too_large", "line_too_long"]


@dataclasses.dataclass(slots=True, repr=False)
class MailData:
    """What DATA received. Never printed: it holds the mail."""

    content: bytes
    """The mail (dot-unstuffed); when ``problem`` is set, only its first bytes."""
    size: int
    """Octets received between the 354 and the final ``.<CRLF>`` (line ends and dot-stuffing included)."""
    problem: Problem | None = None
    cut: bool = False
    """``content`` is not the whole mail (it stops at ``keep`` bytes, or the peer sent more after the problem)."""

    def __repr__(self) -> str:
        return f"MailData(size={self.size}, problem={self.problem}, cut={self.cut})"


def _unstuffed(line: bytes, first_piece: bool) -> bytes:
    # RFC 5321 §4.5.2: a line the client began with a dot had one more dot put before it.
    return line[1:] if first_piece and line.startswith(b".") else line


def _first_bytes(pieces: list[bytes], keep: int) -> bytes:
    # Not b"".join(pieces)[:keep]: that would copy the whole mail read so far (up to the limit) once more.
    out = bytearray()
    for piece in pieces:
        out += piece[: keep - len(out)]
        if len(out) >= keep:
            break
    return bytes(out)


async def read_mail_data(reader: asyncio.StreamReader, *, limit: int, line_limit: int, keep: int) -> MailData | None:
    """The mail data up to the lone dot (see the module docstring); None when the stream ends before it."""
    lines: list[bytes] = []  # the mail so far while it is within the limits
    head = b""  # its first `keep` bytes once it is not
    size = 0
    line_size = 0  # of the line being read, over the pieces the stream reader's buffer cut it into
    in_line = False  # the last piece did not end the line
    problem: Problem | None = None
    cut = False
    while True:
        try:
            piece = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as exc:
            # A line longer than the reader's buffer: take what it holds, the rest comes as further pieces.
            piece = await reader.read(exc.consumed)
        except asyncio.IncompleteReadError:
            return None
        if not in_line and piece == b".\r\n":
            break
        size += len(piece)
        line_size = (line_size if in_line else 0) + len(piece)
        if problem is None:
            piece = _unstuffed(piece, not in_line)
            if size > limit:
                problem = "too_large"
            elif line_size > line_limit:
                problem = "line_too_long"
            if problem is not None:
                head = _first_bytes([*lines, piece], keep)
                cut = len(head) < sum(map(len, lines)) + len(piece)
                lines.clear()
            else:
                lines.append(piece)
        else:
            cut = True  # counted, not kept
        in_line = not piece.endswith(b"\r\n")
    if problem is None:
        return MailData(b"".join(lines), size)
    return MailData(head, size, problem, cut)
