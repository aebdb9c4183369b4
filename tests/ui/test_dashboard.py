"""The dashboard in a real browser (Debian's headless Chromium) against real agents: nothing shows
without the token; with it, members, services (a stateful one with a hot standby shows the
standby's cluster and its state version) and a migration with its stage bars appear, and the
token is taken out of the address bar. Saves the browser's screenshot (docs/dashboard.png
with ROAM_SCREENSHOT=1)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from peer.runtime.waiting import wait_until
from tests.harness import TOKEN, federation
from tests.ui.browser import chromium, chromium_missing

pytestmark = pytest.mark.integration

A, B = "127.0.2.11", "127.0.2.12"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
DESCRIPTOR = {
    "name": "classifier", "port": 8080, "cpu": 0.25, "memory": "64Mi", "health": {"path": "/healthz"},
    "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
}
COUNTER = {  # stateful (issue 15): one warm copy at the other cluster, state saved every 0.5 s
    **DESCRIPTOR, "name": "counter", "standby": 1, "state": {"path": "/roam/state", "interval": 0.5},
    "command": [sys.executable, "-m", "peer.samples.stateful", "--host", "{host}", "--port", "{port}"],
}
STANDBYS_CELL, STATE_VERSION_CELL = 6, 8  # columns of the services table (peer/ui/static/index.html)


def cells(browser: Any, service: str) -> list[str]:
    row = browser.find_element(By.CSS_SELECTOR, f'#services tr[data-name="{service}"]')
    return [td.text for td in row.find_elements(By.TAG_NAME, "td")]


def test_chromium_is_installed() -> None:
    assert chromium_missing() is None, chromium_missing()


async def test_dashboard_shows_the_federation_only_with_the_token(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        fed.add("edge-a", A, extra=["--no-auto-migrate", "--tier", "edge"]).start()
        fed.add("cloud-b", B, join=[A], extra=["--no-auto-migrate", "--tier", "cloud"]).start()
        await fed.wait_healthy("edge-a")
        await fed.wait_healthy("cloud-b")

        async def both_alive() -> bool:
            members = await fed.get("edge-a", "/v1/members")
            return sum(1 for m in members if m["status"] == "alive" and m["load"]) == 2

        await wait_until(both_alive, timeout=20, what="edge-a sees both members alive")
        await fed.call("edge-a", "POST", "/v1/services", DESCRIPTOR, expect=201)
        counter = await fed.call("edge-a", "POST", "/v1/services", COUNTER, expect=201)
        async with aiohttp.ClientSession() as client:  # some state to save: counted requests
            for i in range(5):
                async with client.get(f"http://{counter['endpoint']}/classify?stream=cam{i}") as r:
                    assert r.status == 200
        await fed.call("edge-a", "POST", "/v1/services", {**DESCRIPTOR, "name": "stream"}, expect=201)
        moved = await fed.call("edge-a", "POST", "/v1/services/classifier/migrate", {"target": "cloud-b"})
        assert moved["outcome"] == "succeeded", moved

        async def cleaned_up() -> bool:  # the answer comes at the commit; the cleanup bar after it
            return any(m["id"] == moved["id"] and m["cleanup"] is not None
                       for m in await fed.get("edge-a", "/v1/migrations"))

        await wait_until(cleaned_up, timeout=15, what="the migration's cleanup timed")
        ui = f"http://{A}:7070/ui/"
        with chromium() as browser:
            wait = WebDriverWait(browser, 20, poll_frequency=0.1)
            browser.get(ui)
            wait.until(lambda b: b.find_element(By.ID, "login").is_displayed())
            assert not browser.find_element(By.ID, "app").is_displayed()
            assert browser.find_elements(By.CSS_SELECTOR, "#members tbody tr") == []
            assert "edge-a" not in browser.find_element(By.TAG_NAME, "body").text.replace("cluster edge-a", "")

            browser.get(ui + "#token=wrong-token")
            wait.until(lambda b: "refused" in b.find_element(By.ID, "login-error").text)
            assert browser.find_elements(By.CSS_SELECTOR, "#members tbody tr") == []

            browser.get(ui + f"#token={TOKEN}")
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#members tbody tr[data-name]")) == 2)
            assert TOKEN not in browser.current_url and "#" not in browser.current_url
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, '#services tr[data-name="classifier"]'))
            row = browser.find_element(By.CSS_SELECTOR, '#services tr[data-name="classifier"]')
            wait.until(lambda b: "cloud-b" in b.find_element(By.CSS_SELECTOR, '#services tr[data-name="classifier"]').text)
            migration = browser.find_element(By.CSS_SELECTOR, f'.migration[data-id="{moved["id"]}"]')
            stages = {s.get_attribute("data-stage") for s in migration.find_elements(By.CSS_SELECTOR, ".bar span")}
            assert {"pr", "replication", "wait", "reroute", "cleanup"} <= stages, stages
            # The hot standby and the saved state's version, once the standby is placed and a pull ran.
            wait.until(lambda b: cells(b, "counter")[STANDBYS_CELL] == "cloud-b")
            wait.until(lambda b: cells(b, "counter")[STATE_VERSION_CELL] not in ("", "-"))
            assert cells(browser, "classifier")[STANDBYS_CELL] in ("", "-")  # none asked
            members = browser.find_element(By.ID, "members").text
            assert "alive" in members and "edge" in members and "cloud" in members
            assert "edge-a" in row.text  # home / steward
            assert browser.execute_script("return sessionStorage.getItem('roam.token')") == TOKEN

            # Live: a new service appears without a reload.
            await fed.call("edge-a", "POST", "/v1/services", {**DESCRIPTOR, "name": "detector"}, expect=201)
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, '#services tr[data-name="detector"]'))
            painted = browser.find_element(By.ID, "live").get_attribute("title")
            wait.until(lambda b: b.find_element(By.ID, "live").get_attribute("title") != painted)  # one more poll
            shot = tmp_path / "dashboard.png"
            assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
            if os.environ.get("ROAM_SCREENSHOT"):
                DOCS.write_bytes(shot.read_bytes())

            browser.find_element(By.ID, "logout").click()
            wait.until(lambda b: b.find_element(By.ID, "login").is_displayed())
            assert browser.find_elements(By.CSS_SELECTOR, "#members tbody tr") == []
