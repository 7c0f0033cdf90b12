"""The operator web console in headless Chromium (Selenium + Debian's chromedriver).

Real parts only: a ``msgin5g serve`` process (CoAP + HTTP, SQLite file, OAuth2
on), an operator client provisioned with ``msgin5g as add --role operator``,
UEs that are real device clients over UDP, and Debian's ``chromium`` driven
through ``/usr/bin/chromedriver`` (no browser download). The test logs in with
the operator's client credentials, finds a UE it registered, watches the rate
rise while messages flow, and discards a stored message, which the recipient
then never gets. Screenshots go to ``tmp_path``, or to the directory named by
``MSGIN5G_TEST_SCREENSHOTS`` (``docs/img`` refreshes those of docs/console.md).

Chromium is installed by scripts/install; without it the test fails under
``--interop`` (CI) and is skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msgin5g.client import Client
from tests.e2e.conftest import ServerProcess, msgin5g, spawn
from tests.e2e.test_as import Lines

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = "MSGIN5G_TEST_SCREENSHOTS"
"""Directory for the screenshots (docs/img to refresh the docs); default tmp_path."""
WAIT = 30.0


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        why = "chromium and chromium-driver are not installed (scripts/install does it)"
        if request.config.getoption("--interop"):
            pytest.fail(why)
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def console_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    http_port = free_tcp_port()
    srv = ServerProcess(
        tmp_path / "msgin5g.db",
        extra=(
            "--set",
            "rest.enabled=true",
            "--http",
            f"127.0.0.1:{http_port}",
            "--set",
            "rest.oauth2=true",
        ),
    )
    for ue in ("ue1", "ue2", "meter-42"):
        srv.add_ue(ue, "s-" + ue)
    msgin5g(
        "as", "add", "noc", "--role", "operator", "--secret", "noc-secret",
        "--storage", srv.storage,
    )  # fmt: skip
    srv.start()
    yield srv, f"http://127.0.0.1:{http_port}"
    err = srv.stop()
    assert "Traceback" not in err, err


class Traffic:
    """ue1 sends to meter-42 over CoAP from a thread of its own until stopped."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.sent = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._send())
        except BaseException as exc:  # reported by join()
            self.error = exc

    async def _send(self) -> None:
        async with Client("ue1", "s-ue1", server=self.server) as ue1:
            await ue1.register()
            while not self.stop.is_set():
                resp = await ue1.send("meter-42", b"reading", store_and_forward=False)
                assert resp.delivery_status == "DELY_ACCEPTED", resp
                self.sent += 1
                await asyncio.sleep(0.02)

    def join(self) -> None:
        self.stop.set()
        self.thread.join(timeout=WAIT)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


async def store_for_ue2(server: str, message_id: str) -> None:
    async with Client("ue1", "s-ue1", server=server) as ue1:
        await ue1.register()
        resp = await ue1.send("ue2", b"secret plans", message_id=message_id)
        assert resp.delivery_status == "DELY_STORED", resp


async def send_to_ue2(server: str, message_id: str) -> None:
    async with Client("ue1", "s-ue1", server=server) as ue1:
        await ue1.register()
        resp = await ue1.send("ue2", b"after the discard", message_id=message_id)
        assert resp.delivery_status in {"DELY_ACCEPTED", "DELY_STORED"}, resp


def test_console_in_headless_chromium(
    console_server: tuple[ServerProcess, str], browser: Any, tmp_path: Path
) -> None:
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    srv, http = console_server
    # htmx swaps fragments while the test reads them: a vanished element or a
    # half-drawn number means "not yet", never a failure
    wait = WebDriverWait(
        browser,
        WAIT,
        poll_frequency=0.2,
        ignored_exceptions=(
            NoSuchElementException,
            StaleElementReferenceException,
            ValueError,
            IndexError,
        ),
    )
    img = Path(os.environ.get(SCREENSHOTS) or tmp_path)
    img.mkdir(parents=True, exist_ok=True)

    def text(selector: str) -> str:
        return str(browser.find_element(By.CSS_SELECTOR, selector).text)

    def click(selector: str) -> None:
        """Click once the element is there and stays long enough to be clicked."""

        def clicked(_: Any) -> bool:
            browser.find_element(By.CSS_SELECTOR, selector).click()
            return True

        wait.until(clicked)

    def chart_points() -> list[str]:
        lines = browser.find_elements(By.ID, "line-in")
        return str(lines[0].get_attribute("points")).split() if lines else []

    # a UE that stays registered (ue listen), so the console has one to show
    meter = Lines(
        spawn(
            "ue",
            "listen",
            "meter-42",
            "--secret",
            "s-meter-42",
            "--server",
            srv.url,
            "--bind",
            "127.0.0.1:0",
        )
    )
    try:
        assert meter.next()["registrationResult"] == "SUCCESS"

        # 1. not logged in: the console sends the browser to the login form
        browser.get(http + "/console")
        wait.until(ec.presence_of_element_located((By.ID, "client_id")))
        assert browser.current_url.endswith("/console/login")
        browser.find_element(By.ID, "client_id").send_keys("noc")
        browser.find_element(By.ID, "client_secret").send_keys("wrong")
        browser.find_element(By.ID, "login").click()
        wait.until(ec.presence_of_element_located((By.ID, "login-error")))
        assert "wrong secret" in text("#login-error")
        browser.find_element(By.ID, "client_id").clear()
        browser.find_element(By.ID, "client_id").send_keys("noc")
        browser.find_element(By.ID, "client_secret").send_keys("noc-secret")
        browser.save_screenshot(str(img / "console-login.png"))
        browser.find_element(By.ID, "login").click()

        # 2. the page loads and shows the registered UE
        wait.until(ec.text_to_be_present_in_element((By.ID, "ue-list"), "meter-42"))
        cookie = browser.get_cookie("msgin5g_console")
        assert cookie is not None
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert int(text("#count-ues")) >= 1

        # 3. the rate rises while messages flow (the summary polls every 2 s)
        traffic = Traffic(srv.url)
        traffic.thread.start()
        try:
            wait.until(lambda _: float(text("#rate-in")) > 0)
            wait.until(lambda _: float(text("#rate-out")) > 0)
            wait.until(lambda _: len(chart_points()) >= 4)  # 4 polls of the summary
            browser.find_element(By.ID, "ue-search").send_keys("meter")
            wait.until(ec.text_to_be_present_in_element((By.ID, "ue-list"), "meter-42"))
            browser.save_screenshot(str(img / "console-overview.png"))
        finally:
            traffic.join()
        assert traffic.sent > 0
        wait.until(lambda _: int(text("#total-in").split()[0]) >= traffic.sent)

        # 4. a message stored for ue2 (not registered) is discarded in the console
        asyncio.run(store_for_ue2(srv.url, "plan-9"))
        search = browser.find_element(By.ID, "ue-search")
        search.clear()
        search.send_keys("ue2")
        click('a[data-ue="ue2"]')
        wait.until(ec.text_to_be_present_in_element((By.ID, "stored-table"), "plan-9"))
        browser.save_screenshot(str(img / "console-ue.png"))
        click('button[data-message="plan-9"]')
        wait.until(ec.alert_is_present())
        browser.switch_to.alert.accept()
        wait.until(
            ec.text_to_be_present_in_element((By.ID, "notice"), "Discarded plan-9")
        )
        assert "plan-9" not in text("#ue-detail").replace("Discarded plan-9", "")
        # the list, the summary and the failures reload after the discard
        wait.until(
            ec.text_to_be_present_in_element((By.ID, "ue-list"), "no registered UE")
        )
        wait.until(ec.text_to_be_present_in_element((By.ID, "failures"), "plan-9"))
        assert "NOT_AUTHORIZED" in text("#failures")
        wait.until(lambda _: text("#count-stored") == "0")
        browser.save_screenshot(str(img / "console-discard.png"))
    finally:
        meter.stop()

    # 5. ue2 comes online: it gets the message sent after the discard, never plan-9
    ue2 = Lines(
        spawn(
            "ue",
            "listen",
            "ue2",
            "--secret",
            "s-ue2",
            "--server",
            srv.url,
            "--bind",
            "127.0.0.1:0",
            "--count",
            "1",
        )
    )
    try:
        assert ue2.next()["registrationResult"] == "SUCCESS"
        asyncio.run(send_to_ue2(srv.url, "after-1"))
        first = ue2.next()
        assert first["messageId"] == "after-1", json.dumps(first)
    finally:
        ue2.stop()
