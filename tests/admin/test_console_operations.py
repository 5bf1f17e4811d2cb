"""The console as an operator at 3 a.m. uses it, in headless Chromium: a failing destination stands out with its
last error, a replay asks first and goes only where it is told, and the hourly statistics survive a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.admin.adminkit import TOKENS, admin_section
from tests.hubkit import MllpClient, adt, default_route, mllp_port, running_hub, running_peer, wait_until, write_config

SLOW_RETRY = {"max_attempts": 100, "initial_secs": 0.2, "max_secs": 0.5, "jitter": 0.1}


def _config(folder: Path, dpi_port: int, lab_port: int) -> Path:
    route = default_route()
    route["to"] = [route["to"][0], {"destination": "lab", "retry": SLOW_RETRY}]
    lab = {"lab": {"type": "mllp", "endpoint": f"127.0.0.1:{lab_port}", "ack_timeout_secs": 2}}
    return write_config(folder, peer_port=dpi_port, routes=[route], endpoints_extra=lab, admin=admin_section())


async def _login(page: Any, base: str) -> None:
    await page.goto(base + "/")
    await page.fill("#token", TOKENS["operator"])
    await page.click("#login-button")
    await page.wait_for_selector("#needs-action")


async def test_failing_destination_replay_to_one_destination_and_stats_after_restart(
    tmp_path: Path,
    browser: Any,
    shots: Path,
) -> None:
    async with running_peer() as dpi, running_peer(ack="AE") as lab:
        config = _config(tmp_path, dpi.port, lab.port)
        async with running_hub(config) as hub:
            store = hub.store
            assert store is not None
            client = await MllpClient.connect(mllp_port(hub))
            try:
                await client.send(adt("OPS1"))
            finally:
                await client.close()

            async def lab_failing() -> bool:
                waiting = await store.find_deliveries(status="pending", destination="lab")
                return dpi.count == 1 and bool(waiting) and waiting[0].attempts >= 2

            await wait_until(lab_failing, timeout=20)
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            base = f"http://127.0.0.1:{hub.http_port}"
            await _login(page, base)

            # The failing queue comes first, in red, with the peer's answer and what to do.
            row = "tr[data-queue='adt/lab']"
            await page.wait_for_selector(f"{row}.attention-alert")
            assert await page.get_attribute(f"{row}", "data-state") == "failing"
            assert "AE" in await page.inner_text(f"{row} td.last-error")
            assert "retried" in await page.inner_text(f"{row} td.advice")
            first = await page.eval_on_selector("table tbody tr", "r => r.dataset.queue")
            assert first == "adt/lab"
            assert await page.get_attribute("tr[data-queue='adt/dpi']", "class") in (None, "")
            assert "Failing: lab" in await page.inner_text("#needs-action")
            await page.screenshot(path=str(shots / "ops-1-failing.png"), full_page=True)

            # The lab recovers; replay the message to the lab only: the DPI, which has it, does not get it again.
            lab.ack = "AA"
            await wait_until(lambda: lab.count >= 3, timeout=20)  # AE, AE, then AA

            async def all_delivered() -> bool:
                return len(await store.find_deliveries(status="delivered")) == 2  # dpi and lab, none in flight

            await wait_until(all_delivered, timeout=20)
            received = lab.count
            mid = await _message_id(store, "OPS1")
            await page.goto(f"{base}/#/messages/{mid}")
            await page.click("#replay")
            await page.wait_for_selector("#confirm input[value='lab']")
            assert not await page.is_checked("#confirm input[value='dpi']")
            assert not await page.is_checked("#confirm input[value='lab']")
            await page.check("#confirm input[value='lab']")
            await page.screenshot(path=str(shots / "ops-2-replay-confirm.png"), full_page=True)
            await page.click("#confirm-ok")
            await page.wait_for_selector("#replayed-link")
            new_id = await page.inner_text("#replayed-link")
            await wait_until(lambda: lab.count == received + 1, timeout=20)
            deliveries = (await store.deliveries([new_id]))[new_id]
            assert [d.destination for d in deliveries] == ["lab"] and dpi.count == 1
            await page.close()

        # A restart: the hourly totals come back from the store.
        async with running_hub(config) as hub:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await _login(page, f"http://127.0.0.1:{hub.http_port}")
            await page.wait_for_selector("#stats figure[data-series='delivered'] .total")
            delivered = int(await page.inner_text("#stats figure[data-series='delivered'] .total"))
            failed = int(await page.inner_text("#stats figure[data-series='failed'] .total"))
            received_total = int(await page.inner_text("#stats figure[data-series='received'] .total"))
            assert delivered == 3 and failed >= 2 and received_total == 1  # dpi, lab, the replay to lab
            assert "All clear" in await page.inner_text("#needs-action")
            await page.screenshot(path=str(shots / "ops-3-stats-after-restart.png"), full_page=True)
    assert errors == []


async def _message_id(store: Any, control_id: str) -> str:
    from hub.store import SearchQuery

    [rec] = await store.search(SearchQuery(control_id=control_id, limit=10))
    return rec.message.id
