"""MLLP framing: <VT> message <FS><CR> (HL7 v2.5.1 Appendix C.4.3) over asyncio streams.

The reader is deliberately forgiving of what real senders do and strict on
resources:

* bytes between frames (garbage, stray CR/LF) are skipped and counted;
* a frame cut short by a new <VT> is dropped and counted, and the new frame read;
* a missing trailing <CR> after <FS> is accepted (Camel's requireEndOfData=false);
* several frames in one read and one frame over many reads are both normal;
* a frame over ``max_frame_bytes`` is read to its end without being kept: the
  caller gets its first bytes (to answer with an ACK that echoes MSH) and its size;
* ``receive_timeout_secs`` bounds the wait for a frame to start (an idle
  connection), ``read_timeout_secs`` the silence inside a frame, and
  ``frame_timeout_secs`` the whole time from <VT> to <FS>, so that a sender
  dribbling one byte at a time cannot hold a connection forever.
"""

from __future__ import annotations

import asyncio
import dataclasses

__all__ = ["CR", "FS", "VT", "Frame", "FrameReader", "FrameTimeout", "frame"]

VT = b"\x0b"
FS = b"\x1c"
CR = b"\x0d"
_HEAD_BYTES = 64 * 1024
_CHUNK = 64 * 1024
_SHRINK_AFTER = 1024 * 1024


class FrameTimeout(Exception):
    """No complete frame within the configured timeout."""


def frame(body: bytes) -> bytes:
    return VT + body + FS + CR


@dataclasses.dataclass(slots=True)
class Frame:
    body: bytes  # the whole message, or only its first bytes when oversized
    size: int
    oversized: bool = False


class FrameReader:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        *,
        max_frame_bytes: int,
        receive_timeout_secs: float | None = None,
        read_timeout_secs: float | None = None,
        frame_timeout_secs: float | None = None,
    ) -> None:
        self._reader = reader
        self._max = max_frame_bytes
        self.receive_timeout_secs = receive_timeout_secs
        self._read_timeout = read_timeout_secs
        self._frame_timeout = frame_timeout_secs
        self._frame_deadline: float | None = None
        self._buf = bytearray()
        self.garbage_bytes = 0
        self.truncated_frames = 0

    async def _fill(self, in_frame: bool) -> bool:
        timeout = self._read_timeout if in_frame else self.receive_timeout_secs
        if in_frame and self._frame_deadline is not None:
            left = self._frame_deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise FrameTimeout("frame not complete within frame_timeout_secs")
            timeout = left if timeout is None else min(timeout, left)
        try:
            async with asyncio.timeout(timeout):
                chunk = await self._reader.read(_CHUNK)
        except TimeoutError:
            raise FrameTimeout("read timeout inside a frame" if in_frame else "idle timeout") from None
        if not chunk:
            return False
        self._buf += chunk
        return True

    def _take_frame(self, end: int, kept: int, head: bytes) -> Frame:
        """The frame ending at `end` in the buffer, removed from it (with the CR that may follow the end block).

        `kept` counts the bytes of an oversized frame already discarded and `head` holds its first bytes.
        """
        buf = self._buf
        body = bytes(memoryview(buf)[1:end])  # one copy (a bytearray slice would be a second)
        size = kept + len(body)
        del buf[: end + 1]
        if buf[:1] == CR:
            del buf[:1]
        if end > _SHRINK_AFTER:
            # A bytearray keeps its capacity after `del`: give a big frame's back.
            self._buf = bytearray(buf)
        if kept:
            return Frame(head, size, oversized=True)
        if size > self._max:
            return Frame(body[:_HEAD_BYTES], size, oversized=True)
        return Frame(body, size)

    async def read_frame(self) -> Frame | None:
        """The next frame, or None at end of stream. Raises FrameTimeout."""
        buf = self._buf
        while True:
            # 1. find the start block, skipping what precedes it
            start = buf.find(VT)
            if start < 0:
                self.garbage_bytes += len(buf.strip(b"\r\n"))
                buf.clear()
                if not await self._fill(in_frame=False):
                    return None
                continue
            if start:
                self.garbage_bytes += len(bytes(buf[:start]).strip(b"\r\n"))
                del buf[:start]
            # 2. find the end block, watching for a new start block (truncated frame) and the size limit
            scanned = 1
            if self._frame_timeout is not None:
                self._frame_deadline = asyncio.get_running_loop().time() + self._frame_timeout
            kept = 0  # bytes of an oversized frame already discarded
            head = b""
            while True:
                end = buf.find(FS, scanned)
                restart = buf.find(VT, 1, end if end >= 0 else len(buf))
                if restart >= 0:
                    self.truncated_frames += 1
                    del buf[:restart]
                    scanned, kept, head = 1, 0, b""
                    continue
                if end >= 0:
                    return self._take_frame(end, kept, head)
                if kept or len(buf) - 1 > self._max:
                    # Oversized: keep the head once, then discard as it streams in.
                    if not kept:
                        head = bytes(buf[1 : 1 + _HEAD_BYTES])
                    kept += len(buf) - 1
                    del buf[1:]
                    scanned = 1
                else:
                    scanned = max(1, len(buf))
                if not await self._fill(in_frame=True):
                    # End of stream inside a frame: the frame is lost, as the sender knows (no ACK).
                    self.truncated_frames += 1
                    buf.clear()
                    return None
