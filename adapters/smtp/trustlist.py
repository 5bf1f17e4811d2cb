"""The trust list kept up to date: downloaded on a schedule into ``trust_list_file``, its age visible.

Every port reads ``trust_list_file`` again when it changes (:class:`adapters.smtp.common.TrustList`);
this module only refreshes that file from ``trust_list_url`` (the list the ANS publishes for the
operators of the trust space) every ``trust_list_refresh_secs``:

* a download that fails (network, HTTP status, not UTF-8 text, no domain in it) keeps the last good
  file and is reported (``describe()``: ``trust_list_error``) and logged; the next round tries again;
* a good one replaces the file atomically (temporary file, fsync, rename), so no port ever reads half
  a list;
* ``trust_list_age_secs`` (since the file last changed) shows in ``describe()`` (startup log, ``hub
  sandboxes``/endpoints listing) so that a list that stopped refreshing is seen.

The format of the ANS publication and its address were not read in a primary source
(docs/mssante-clients.md): the file is taken in the hub's format (one domain a line, ``*.`` for
subdomains, ``#`` comments); a list in another shape is refused, never half-used.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import structlog

from adapters.smtp.common import TrustList

__all__ = ["TrustListRefresher"]

log = structlog.get_logger("hub.smtp.trust")
_MAX_BYTES = 4 * 2**20


class TrustListRefresher:
    """Download ``url`` into ``path`` now and then every ``interval_secs``."""

    def __init__(self, url: str, path: str, interval_secs: float, *, name: str) -> None:
        if not url.startswith(("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")):
            raise ValueError("trust_list_url must be https (plain http only on loopback)")
        self.url, self.path, self.interval_secs, self.name = url, Path(path), interval_secs, name
        self.error = ""
        self.refreshed_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"{self.name}-trust-list")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def age_secs(self) -> float | None:
        try:
            return max(0.0, time.time() - self.path.stat().st_mtime)
        except OSError:
            return None

    async def _loop(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_secs)

    async def refresh(self) -> bool:
        """One download; True when the file was replaced by a good list."""
        try:
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(timeout=timeout) as http, http.get(self.url) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                data = await resp.content.read(_MAX_BYTES + 1)
            if len(data) > _MAX_BYTES:
                raise ValueError("list over 4 MB")
            text = data.decode("utf-8")
            domains = await asyncio.to_thread(self._write_if_valid, text)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            self.error = str(exc)[:200] if isinstance(exc, ValueError) else type(exc).__name__
            log.warning("trust_list_refresh_failed", listener=self.name, error=self.error, age_secs=self.age_secs())
            return False
        self.error, self.refreshed_at = "", time.time()
        log.info("trust_list_refreshed", listener=self.name, domains=domains)
        return True

    def _write_if_valid(self, text: str) -> int:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        try:
            count = len(TrustList(str(tmp)))
            if count == 0:
                raise ValueError("no domain in the downloaded list")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        return count
