"""End to end: the chat page in headless Chromium, two tabs in one room, served for real.

Uses Debian's chromium and chromedriver (``.ci/run`` installs them) through Selenium; nothing
downloads a browser.  The server is ``python -m trio_asgi_ws examples.chat:app`` in a subprocess.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.served import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DEADLINE = 15.0


@pytest.fixture
def chat_server() -> Iterator[int]:
    """Serve the chat example on a free port; yield the port; SIGTERM it afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_asgi_ws", "examples.chat:app", "--port", "0"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + DEADLINE
        port = None
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line, "the chat server exited before serving"
            found = re.search(r"Running on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
        assert port is not None, "the chat server did not start in time"
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromedriver are needed (.ci/run installs them with apt-get)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def join(driver: webdriver.Chrome, port: int, name: str, room: str) -> None:
    driver.get(f"http://127.0.0.1:{port}/")
    driver.find_element(By.ID, "name").send_keys(name)
    room_input = driver.find_element(By.ID, "room")
    room_input.clear()
    room_input.send_keys(room)
    driver.find_element(By.CSS_SELECTOR, "#join button").click()
    WebDriverWait(driver, DEADLINE).until(lambda d: d.find_element(By.ID, "status").text.startswith("in "))


def log_text(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.ID, "log").text)


def test_two_browser_tabs_in_one_room_see_each_others_messages(
    chat_server: int, browser: webdriver.Chrome
) -> None:
    join(browser, chat_server, "ann", "garden")
    ann_tab = browser.current_window_handle
    browser.switch_to.new_window("tab")
    join(browser, chat_server, "bob", "garden")
    bob_tab = browser.current_window_handle

    browser.find_element(By.ID, "text").send_keys("hello from bob")
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, DEADLINE).until(lambda d: "bob: hello from bob" in log_text(d))

    browser.switch_to.window(ann_tab)
    WebDriverWait(browser, DEADLINE).until(lambda d: "bob joined garden" in log_text(d))
    WebDriverWait(browser, DEADLINE).until(lambda d: "bob: hello from bob" in log_text(d))
    browser.find_element(By.ID, "text").send_keys("hi bob, ann here")
    browser.find_element(By.ID, "send").click()

    browser.switch_to.window(bob_tab)
    WebDriverWait(browser, DEADLINE).until(lambda d: "ann: hi bob, ann here" in log_text(d))
    # The page's live view of the room, from the hub (GET /rooms/garden once a second).
    seen: list[str] = []

    def room_view_shows_both(driver: webdriver.Chrome) -> bool:
        seen.append(driver.find_element(By.ID, "room-view").text)
        return (
            re.fullmatch(r"2 here · \d+ messages · 0 dropped · 0 waiting · hub connected", seen[-1])
            is not None
        )

    try:
        WebDriverWait(browser, DEADLINE).until(room_view_shows_both)
    except TimeoutException:
        pytest.fail(f"the room view showed {seen[-3:]}")
    browser.save_screenshot(os.path.join(tempfile.gettempdir(), "trio_asgi_ws_chat.png"))


def say(driver: webdriver.Chrome, text: str) -> None:
    driver.find_element(By.ID, "text").send_keys(text)
    driver.find_element(By.ID, "send").click()
    WebDriverWait(driver, DEADLINE).until(lambda d: f": {text}" in log_text(d))


def network(driver: webdriver.Chrome, *, online: bool) -> None:
    """Take the current tab offline or back (Chromium's DevTools emulation: new connections,
    WebSockets included, fail while offline; ``Network.setBlockedURLs`` does not stop them)."""
    driver.execute_cdp_cmd("Network.enable", {})
    conditions = {"offline": not online, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", conditions)


def status(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.ID, "status").text)


def test_a_tab_whose_connection_drops_resumes_from_the_last_message_it_saw(
    chat_server: int, browser: webdriver.Chrome
) -> None:
    """The room's history fills in what a page missed while its connection was down: the page
    reconnects with the id of the last message it showed, and shows each missed one once."""
    join(browser, chat_server, "ann", "pond")
    ann_tab = browser.current_window_handle
    browser.switch_to.new_window("tab")
    join(browser, chat_server, "bob", "pond")
    bob_tab = browser.current_window_handle
    say(browser, "before the cut")

    browser.switch_to.window(ann_tab)
    WebDriverWait(browser, DEADLINE).until(lambda d: "bob: before the cut" in log_text(d))
    network(browser, online=False)  # this tab's network goes down
    browser.execute_script("socket.close()")  # and the connection is cut
    WebDriverWait(browser, DEADLINE).until(lambda d: status(d).startswith("disconnected"))

    browser.switch_to.window(bob_tab)
    for n in (1, 2, 3):
        say(browser, f"while ann was away {n}")

    browser.switch_to.window(ann_tab)
    assert "while ann was away" not in log_text(browser)
    time.sleep(1.5)  # the page's reconnection attempts fail meanwhile
    assert status(browser).startswith("disconnected")
    network(browser, online=True)  # and comes back
    WebDriverWait(browser, DEADLINE).until(lambda d: "ann is back" in log_text(d))
    lines = log_text(browser).splitlines()
    assert lines[: lines.index("bob: before the cut") + 1] == [
        "ann joined pond",
        "bob joined pond",
        "bob: before the cut",
    ]
    missed = lines[lines.index("bob: before the cut") + 1 :]
    assert missed == [
        "ann left",
        "bob: while ann was away 1",
        "bob: while ann was away 2",
        "bob: while ann was away 3",
        "ann is back",
    ]
    assert status(browser) == "in pond as ann"
