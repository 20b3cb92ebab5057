"""The agent page in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
installed by ``make browser``): sign-in, the current customer, a prompt appearing live,
and a customer the agent is not connected to."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from portrait.config import Settings
from tests.support.api import STORY, get, live_call, write_tokens
from tests.support.envelopes import ANGRY_ZH, HAPPY_EN, QUESTION_ZH
from tests.support.worker import StartWorker, produce, profile_get, wait_for

pytestmark = pytest.mark.integration

SCREENSHOTS = os.environ.get("PORTRAIT_SCREENSHOTS")
"""A directory to save the page's screenshots in (the README's come from here)."""


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "chromium and chromium-driver are missing: run `make browser`"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--lang=zh-CN"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield chrome
    finally:
        chrome.quit()


def _text(chrome: webdriver.Chrome, element_id: str) -> str:
    return str(chrome.find_element(By.ID, element_id).text)


def _shot(chrome: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    chrome.save_screenshot(str(path))
    if SCREENSHOTS:
        shutil.copy(path, Path(SCREENSHOTS) / name)
    return path


def test_the_page_shows_the_current_customer_and_prompts_as_they_arrive(
    stack_settings: Settings, tmp_path: Path, worker: StartWorker, browser: webdriver.Chrome
) -> None:
    settings = stack_settings.model_copy(
        update={"api_tokens_file": write_tokens(tmp_path / "tokens.json")}
    )
    port = settings.http_port
    base = f"http://127.0.0.1:{port}"
    customer = {"phone": "13700000001"}
    produce(settings, [*STORY, *live_call("call-p", customer, [])])  # the call has begun
    with worker(settings, tmp_path / "worker.log"):
        wait_for(
            lambda: get(port, "/v1/agents/agent-li/current", "li-token-1")[0] == 200,
            what="agent-li's current call",
        )
        wait = WebDriverWait(browser, 30)

        # no cookie: the sign-in form; the agent's token opens its page
        browser.get(f"{base}/agent/agent-li")
        browser.find_element(By.ID, "token").send_keys("li-token-1")
        browser.find_element(By.ID, "sign-in").click()
        wait.until(ready.text_to_be_present_in_element((By.ID, "name"), "李雷"))
        assert "ACC-7" in _text(browser, "accounts") and "holder" in _text(browser, "accounts")
        assert _text(browser, "priority") in {"low", "normal", "high", "urgent"}

        # a customer turn: its prompt appears without a reload
        produce(settings, live_call("call-p", customer, [QUESTION_ZH, ANGRY_ZH])[1:])
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#prompts li")))
        wait.until(
            ready.presence_of_element_located((By.CSS_SELECTOR, "#prompts li.soothe_and_close"))
        )
        first = browser.find_element(By.CSS_SELECTOR, "#prompts li")
        assert first.find_element(By.CLASS_NAME, "text").text  # what to say, rendered
        wait.until(ready.text_to_be_present_in_element((By.ID, "emotion"), "negative"))
        assert _shot(browser, tmp_path, "agent-page.png").stat().st_size > 10_000

        # an English turn renders too
        produce(settings, live_call("call-p", customer, [QUESTION_ZH, ANGRY_ZH, HAPPY_EN])[3:])
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#prompts li")) >= 3)

        # another agent's page: 403; a customer agent-li is not connected to: refused
        browser.get(f"{base}/agent/agent-wang")
        assert "Not allowed" in _text(browser, "forbidden")
        _, far, _ = profile_get(settings, "--email", "c@corp.cn")
        assert far is not None
        browser.get(f"{base}/agent/agent-li?customer={far['customer_id']}")
        wait.until(ready.text_to_be_present_in_element((By.ID, "notice"), "Not connected"))
        assert not browser.find_element(By.ID, "profile").is_displayed()
        _shot(browser, tmp_path, "agent-page-refused.png")

        # a link with a wrong token is refused; with a right one it signs in and drops it
        browser.delete_all_cookies()
        browser.get(f"{base}/agent/agent-wang?token=wrong")
        assert "unknown token" in _text(browser, "note")
        browser.get(f"{base}/agent/agent-wang?token=wang-token-1")
        assert "token" not in browser.current_url
        wait.until(ready.text_to_be_present_in_element((By.ID, "agent-id"), "agent-wang"))
