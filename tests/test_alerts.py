"""Alerts: a destination down fires to a local SMTP sink and a webhook receiver, repeats, then a recovery notice."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.sandboxes.mllp_peer import MllpPeer, MllpPeerConfig
from hub.alerting.channels import Notice
from hub.alerting.config import AlertsConfig
from hub.alerting.engine import AlertEngine
from hub.config import HubConfig
from hub.devpki import ensure_pki
from tests.conftest import free_port
from tests.hubkit import MllpClient, adt, mllp_port, running_hub, wait_until, write_config


class MailSink:
    """An SMTP server on loopback keeping what it receives (aiosmtpd, in the test's event loop)."""

    def __init__(self) -> None:
        self.mails: list[tuple[Envelope, email.message.EmailMessage]] = []
        self.port = 0

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
        self.mails.append((envelope, message))  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture
async def mail_sink() -> AsyncIterator[MailSink]:
    sink = MailSink()
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(sink), "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    try:
        yield sink
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer hook-secret"
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


def _alerts(hook_url: str, smtp_port: int, **rule: Any) -> dict[str, Any]:
    return {
        "check_secs": 0.1,
        "renotify_secs": 0.5,
        "channels": {
            "hook": {"type": "webhook", "url": hook_url, "headers": {"Authorization": "Bearer hook-secret"}},
            "mail": {
                "type": "mail", "smtp": f"127.0.0.1:{smtp_port}", "starttls": False,
                "from_address": "hub@hub.example", "to": ["astreinte@hub.example"],
            },
        },
        "rules": [{"name": "dpi-down", "when": "destination_down", "destination": "dpi", "over": 0, **rule}],
    }  # fmt: skip


async def test_destination_down_fires_to_mail_and_webhook_repeats_and_recovers(
    tmp_path: Path, mail_sink: MailSink, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    hook_url, hooks = webhook
    port = free_port()  # nothing listens there yet: the DPI is down
    config = write_config(tmp_path, peer_port=port, alerts=_alerts(hook_url, mail_sink.port))
    async with running_hub(config) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        try:
            await client.send(adt("DOWN1"))
        finally:
            await client.close()
        # Fires, and is repeated while it lasts.
        await wait_until(lambda: len([h for h in hooks if h["status"] == "firing"]) >= 2, timeout=20)
        first, again = hooks[0], hooks[1]
        assert (first["status"], first["rule"], first["kind"], first["repeat"]) == (
            "firing", "dpi-down", "destination_down", False,
        )  # fmt: skip
        assert first["subject"] == "adt -> dpi" and "dpi unreachable" in first["summary"]
        assert again["repeat"] is True and again["since"] == first["since"]
        assert first["node"] == "test-node" and "FIRING dpi-down" in first["text"]

        # The DPI comes back: the pending delivery goes out, and a recovery notice follows.
        peer = MllpPeer("dpi", MllpPeerConfig(listen=f"127.0.0.1:{port}"))
        await peer.start()
        try:
            await wait_until(lambda: peer.count == 1, timeout=30)
            await wait_until(lambda: hooks[-1]["status"] == "resolved", timeout=20)
            await wait_until(lambda: "RESOLVED" in str(mail_sink.mails[-1][1]["Subject"]), timeout=20)
        finally:
            await peer.stop()
    resolved = hooks[-1]
    assert resolved["rule"] == "dpi-down" and resolved["since"] == first["since"]
    assert [h["status"] for h in hooks].count("resolved") == 1

    subjects = [m["Subject"] for _, m in mail_sink.mails]
    assert subjects[0].startswith("[hub test-node] FIRING dpi-down: dpi unreachable")
    assert any(s.startswith("[hub test-node] STILL FIRING dpi-down") for s in subjects)
    assert subjects[-1].startswith("[hub test-node] RESOLVED dpi-down")
    envelope, message = mail_sink.mails[0]
    assert envelope.mail_from == "hub@hub.example" and envelope.rcpt_tos == ["astreinte@hub.example"]
    assert "subject:  adt -> dpi" in message.get_content()


class _Store:
    """A store whose answers the test sets: up or down, queues and reviews."""

    def __init__(self) -> None:
        self.up = True
        self.reviews: list[object] = []

    async def ping(self) -> None:
        from hub.errors import StoreError

        if not self.up:
            raise StoreError("postgres: ConnectionRefusedError")

    async def list_reviews(self, **_: Any) -> list[object]:
        await self.ping()
        return self.reviews


class _Hub:
    def __init__(self, store: _Store, queues: list[Any]) -> None:
        self.store = store
        self.config = HubConfig(node="n1")
        self.listeners: dict[str, Any] = {}
        self.workers: dict[tuple[str, str], Any] = {}
        self.queues = queues
        self.metrics = self
        self.settings = type("S", (), {"component_configs": {}})()

    async def refresh_queues(self, store: _Store, *, max_age_secs: float) -> list[Any]:
        await store.ping()
        return self.queues


class _Recorder:
    def __init__(self) -> None:
        self.notices: list[Notice] = []

    async def send(self, notice: Notice) -> None:
        self.notices.append(notice)

    async def close(self) -> None:
        return None


def _engine(hub: _Hub, *rules: dict[str, Any]) -> tuple[AlertEngine, _Recorder]:
    config = AlertsConfig.model_validate(
        {"renotify_secs": 0, "channels": {"r": {"type": "webhook", "url": "http://127.0.0.1:9/"}}, "rules": rules}
    )
    engine = AlertEngine(hub, config)  # type: ignore[arg-type]
    recorder = _Recorder()
    engine.senders = {"r": recorder}
    return engine, recorder


async def test_queue_rules_fire_once_and_a_store_outage_is_not_a_recovery() -> None:
    from hub.store import QueueStats

    now = datetime.now(UTC)
    store = _Store()
    old = QueueStats("adt", "dpi", pending=3, dead=2, oldest_at=now - timedelta(minutes=20))
    hub = _Hub(store, [old, QueueStats("adt", "lab")])
    engine, recorder = _engine(
        hub,
        {"name": "dead", "when": "dead_letters"},
        {"name": "age", "when": "queue_age", "over": 15},
        {"name": "deep", "when": "queue_depth", "over": 5},
        {"name": "store", "when": "store_down"},
        {"name": "reviews", "when": "reviews_waiting"},
    )
    await engine.check(now)
    assert sorted((n.rule, n.subject, n.status) for n in recorder.notices) == [
        ("age", "adt -> dpi", "firing"), ("dead", "adt -> dpi", "firing"),
    ]  # fmt: skip
    assert "2 dead letter(s) on adt -> dpi" in recorder.notices[1].summary + recorder.notices[0].summary
    await engine.check(now)  # still true, renotify off: nothing new
    assert len(recorder.notices) == 2

    # The store goes away: the store rule fires, the queue conditions are not "resolved" by it.
    store.up = False
    await engine.check(now)
    assert [(n.rule, n.status) for n in recorder.notices[2:]] == [("store", "firing")]
    store.up = True
    hub.queues = [QueueStats("adt", "dpi")]
    store.reviews = [object()]
    await engine.check(now)
    assert sorted((n.rule, n.status) for n in recorder.notices[3:]) == [
        ("age", "resolved"), ("dead", "resolved"), ("reviews", "firing"), ("store", "resolved"),
    ]  # fmt: skip


def test_certificate_expiry_and_config_checks(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki")
    hub = _Hub(_Store(), [])
    hub.config = HubConfig.model_validate({"http": {"tls": {"cert_file": str(pki.server_cert), "key_file": "k"}}})
    engine, _ = _engine(hub, {"name": "certs", "when": "certificate_expiry", "over": 10_000})
    conditions = list(engine._certificate_conditions(engine.config.rules[0], datetime.now(UTC)))
    assert [c.subject for c in conditions] == [f"certificate {pki.server_cert}"] and "expires" in conditions[0].summary
    assert not list(
        engine._certificate_conditions(engine.config.rules[0].model_copy(update={"over": 0}), datetime.now(UTC))
    )
    with pytest.raises(ValueError, match="unknown channel"):
        AlertsConfig.model_validate(
            {
                "channels": {"a": {"type": "webhook", "url": "http://x/"}},
                "rules": [{"name": "r", "when": "store_down", "channels": ["b"]}],
            }
        )
