"""The trust list refreshed from its publication: a new operator domain is accepted after the next download, a
bad download keeps the last good list, and the list's age and last error are visible."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from adapters.smtp.inbound import SmtpMtaInbound
from hub.runtime import Hub
from tests.hubkit import running_hub, running_peer, wait_until
from tests.smtp.smtpkit import HUB_DOMAIN, PEER_DOMAIN, Setup, hub_config


class Publication:
    """A stand-in for the list's publisher: serves whatever `text` and `status` say."""

    def __init__(self) -> None:
        self.body, self.status = f"# trust space\n{HUB_DOMAIN}\n{PEER_DOMAIN}\n".encode(), 200

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=self.body, status=self.status)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, Publication, Setup]]:
    publication = Publication()
    app = web.Application()
    app.router.add_get("/trust-list.txt", publication.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    setup = Setup(tmp_path)
    listed = tmp_path / "var" / "trust-list.txt"
    mta = {"trust_list_url": f"http://127.0.0.1:{port}/trust-list.txt", "trust_list_refresh_secs": 3600,
           "trust_list_file": str(listed)}  # fmt: skip
    try:
        async with running_peer() as dpi, running_hub(hub_config(setup, dpi_port=dpi.port, mta=mta)) as running:
            yield running, publication, setup
    finally:
        await runner.cleanup()


async def test_the_list_follows_its_publication_and_keeps_the_last_good_one(
    hub: tuple[Hub, Publication, Setup],
) -> None:
    running, publication, _ = hub
    mta = running.listeners["smtp_mta"]
    assert isinstance(mta, SmtpMtaInbound) and mta.trust_refresher is not None
    await wait_until(lambda: PEER_DOMAIN in mta.trust)  # downloaded at start
    assert "new-operator.fr" not in mta.trust
    state = mta.describe()
    assert state["trust_list_error"] == "" and state["trust_list_age_secs"] < 60

    publication.body += b"new-operator.fr\n"
    assert await mta.trust_refresher.refresh()
    assert "new-operator.fr" in mta.trust

    for status, body, error in ((503, b"busy", "HTTP 503"), (200, b"# nothing here\n", "no domain"),
                                (200, b"caf\xe9.fr\n", "utf-8")):  # fmt: skip
        publication.status, publication.body = status, body
        assert not await mta.trust_refresher.refresh()
        assert error in mta.describe()["trust_list_error"]
        assert "new-operator.fr" in mta.trust and PEER_DOMAIN in mta.trust  # the last good list stays
