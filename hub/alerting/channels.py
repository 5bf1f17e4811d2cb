"""Where notices go: a webhook (JSON POST, aiohttp) or mail (aiosmtplib, the SMTP client the hub already uses).

A channel raises :class:`hub.errors.DeliveryError` when a notice could not be
handed over; the engine tries it again at the next check.
"""

from __future__ import annotations

import dataclasses
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol

import aiohttp
import aiosmtplib

from hub.alerting.config import MailChannel, WebhookChannel
from hub.errors import DeliveryError

__all__ = ["Notice", "Sender", "build_sender"]


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    """One thing to say: a condition started (or is still) true, or it ended."""

    status: str  # firing | resolved
    rule: str
    kind: str
    severity: str
    subject: str
    summary: str
    since: str
    node: str
    at: str
    repeat: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def title(self) -> str:
        state = "RESOLVED" if self.status == "resolved" else ("STILL FIRING" if self.repeat else "FIRING")
        return f"[hub {self.node}] {state} {self.rule}: {self.summary}"


class Sender(Protocol):
    async def send(self, notice: Notice) -> None: ...

    async def close(self) -> None: ...


class WebhookSender:
    def __init__(self, name: str, config: WebhookChannel) -> None:
        self.name, self.config = name, config
        self._session: aiohttp.ClientSession | None = None

    async def send(self, notice: Notice) -> None:
        if self._session is None:
            https = self.config.url.startswith("https")
            ctx = ssl.create_default_context(cafile=self.config.ca_file) if https else None
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_secs),
                connector=aiohttp.TCPConnector(ssl=ctx) if ctx else None,
            )
        body = {**notice.as_dict(), "text": notice.title()}
        try:
            async with self._session.post(self.config.url, json=body, headers=self.config.headers) as response:
                if response.status >= 300:
                    raise DeliveryError(f"webhook {self.name} answered HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"webhook {self.name}: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class MailSender:
    def __init__(self, name: str, config: MailChannel) -> None:
        self.name, self.config = name, config

    async def send(self, notice: Notice) -> None:
        cfg = self.config
        mail = EmailMessage()
        mail["From"] = cfg.from_address
        mail["To"] = ", ".join(cfg.to)
        mail["Subject"] = notice.title()
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(domain=cfg.from_address.rpartition("@")[2])
        mail["X-Hub-Alert"] = f"{notice.status}; rule={notice.rule}"
        mail.set_content(_mail_text(notice))
        host, _, port = cfg.smtp.rpartition(":")
        ctx = ssl.create_default_context(cafile=cfg.ca_file) if cfg.starttls else None
        try:
            await aiosmtplib.send(
                mail, hostname=host, port=int(port), start_tls=cfg.starttls, tls_context=ctx,
                username=cfg.username, password=cfg.password, timeout=cfg.timeout_secs,
            )  # fmt: skip
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"mail {self.name}: {type(exc).__name__}") from None

    async def close(self) -> None:
        return None


def _mail_text(notice: Notice) -> str:
    lines = [
        notice.title(),
        "",
        f"state:    {notice.status}{' (repeated)' if notice.repeat else ''}",
        f"rule:     {notice.rule} ({notice.kind}, {notice.severity})",
        f"subject:  {notice.subject}",
        f"since:    {notice.since}",
        f"at:       {notice.at}",
        f"node:     {notice.node}",
        "",
        "Open the console's dashboard for what to do; `hub stats` shows the same from a terminal.",
    ]
    return "\n".join(lines) + "\n"


def build_sender(name: str, config: WebhookChannel | MailChannel) -> Sender:
    return WebhookSender(name, config) if isinstance(config, WebhookChannel) else MailSender(name, config)
