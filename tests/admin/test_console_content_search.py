"""The console's content search, in headless Chromium: operators only, a time window required, each search in the
audit trail with the user and without the text, results leading to the message's trace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hub.store import SearchQuery
from tests.admin.adminkit import NAMES, TOKENS, admin_hub
from tests.hubkit import MllpClient, adt, mllp_port, wait_until


async def _login(page: Any, base: str, role: str) -> None:
    await page.goto(base + "/")
    await page.fill("#token", TOKENS[role])
    await page.click("#login-button")
    await page.wait_for_selector("#nav:not([hidden])")


async def test_operators_search_payloads_from_the_console(tmp_path: Path, browser: Any, shots: Path) -> None:
    async with admin_hub(tmp_path) as (hub, _dpi, apis):
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(mllp_port(hub))
        try:
            for control_id, name in (("CC1", "DUPONT"), ("CC2", "MARTIN")):
                await client.send(adt(control_id).replace(b"TESTNOM^TESTPRENOM", f"{name}^JEAN".encode()))
        finally:
            await client.close()

        async def indexed() -> bool:
            return (await store.content_index_lag()).pending == 0

        await wait_until(indexed, timeout=20)
        [dupont] = await store.search(SearchQuery(control_id="CC1", limit=1))
        base = f"http://127.0.0.1:{hub.http_port}"
        errors: list[str] = []

        # A viewer neither sees the screen in the menu nor gets it by its address.
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await _login(page, base, "viewer")
        assert await page.is_hidden("nav a[data-page='content']")
        await page.goto(base + "/#/content")
        await page.wait_for_selector("#content-denied")
        await page.close()

        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await _login(page, base, "operator")
        await page.click("nav a[data-page='content']")
        await page.wait_for_selector("#content-form")

        # The window is required: without its start the form does not go out.
        await page.fill("#c-text", "dupont")
        await page.fill("#c-since", "")
        assert not await page.eval_on_selector("#content-form", "f => f.checkValidity()")
        await page.click("#content-button")
        assert await page.inner_text("#content-results") == ""
        # A window longer than the API accepts is refused, with the reason.
        too_long = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M")
        await page.fill("#c-since", too_long)
        await page.click("#content-button")
        await page.wait_for_selector("#toast .bad")
        assert "31 days" in await page.inner_text("#toast")

        since = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
        await page.fill("#c-since", since)
        await page.click("#content-button")
        await page.wait_for_selector("#content-results table")
        rows = await page.query_selector_all("#content-results tbody tr")
        assert len(rows) == 1 and "CC1" in await rows[0].inner_text()
        assert await page.is_hidden("#content-lag") and await page.is_hidden("#content-truncated")
        assert "dupont" not in page.url.lower()  # the searched text stays out of the address and history
        await page.screenshot(path=str(shots / "content-search.png"), full_page=True)

        # A field condition, then the result leads to the message's trace.
        await page.fill("#c-text", "PID-5.1=martin")
        await page.click("#content-button")
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#content-results tbody tr')].some(r => r.innerText.includes('CC2'))"
        )
        await page.fill("#c-text", "DUPONT")
        await page.click("#content-button")
        await page.wait_for_selector(f"#content-results a.trace-link[href='#/messages/{dupont.message.id}']")
        await page.click("#content-results a.trace-link")
        await page.wait_for_selector("#summary")
        assert page.url.endswith(f"#/messages/{dupont.message.id}")
        await page.close()

        # Every search went to the audit trail, with the user and the window, never the text.
        trail = (await apis["admin"].get("/api/audit", limit=50))["items"]
        searches = [e for e in trail if e["action"] == "search_content"]
        ok = [e for e in searches if e["outcome"] == "ok"]
        assert len(ok) == 3 and {e["actor"] for e in ok} == {NAMES["operator"]}
        assert {e["detail"]["kind"] for e in ok} == {"text", "field"}
        assert all("since" in e["detail"] and "until" in e["detail"] for e in ok)
        assert not any(word in str(e).upper() for e in searches for word in ("DUPONT", "MARTIN"))
    assert errors == []
