"""Driving the dashboard in a real headless Chromium (Debian's chromium + chromedriver), and
plain HTTP requests sent exactly as written."""

from __future__ import annotations

import http.client
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def chrome(tmp_path: Path, width: int = 1400, height: int = 1000) -> WebDriver:
    """A headless Chromium; skips without one, except in CI (CI=true), where it fails."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = ("needs Debian chromium and chromedriver at /usr/bin (apt install chromium "
                   "chromium-driver)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--window-size={width},{height}",
                "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def wait(driver: WebDriver, script: str, what: str, timeout: float = 20.0) -> Any:
    """Poll a JavaScript expression until it is truthy; fail naming what was awaited."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(
            lambda d: d.execute_script(f"return {script}"))
    except TimeoutException:
        body = driver.execute_script("return document.body.innerText")[:2000]
        pytest.fail(f"timed out waiting for {what}; page text:\n{body}")


def text(driver: WebDriver, selector: str) -> str:
    """An element's text, read in one script call (the page re-renders every refresh, so a
    found element can be replaced before its text is read)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", selector)


def wait_text(driver: WebDriver, selector: str, *needles: str, timeout: float = 20.0) -> None:
    """Wait until an element's text contains every needle."""
    script = ("(() => { const e = document.querySelector(%s);"
              " return !!e && %s.every(n => e.textContent.includes(n)); })()")
    wait(driver, script % (json.dumps(selector), json.dumps(list(needles))),
         f"{selector} to show {needles}", timeout)


def click(driver: WebDriver, selector: str) -> None:
    """Click the element (found afresh, in one script call)."""
    found = driver.execute_script(
        "const e = document.querySelector(arguments[0]); if (e) { e.scrollIntoView({block: "
        "'center'}); e.click(); } return !!e", selector)
    assert found, f"nothing to click at {selector}"


def full_page_screenshot(driver: WebDriver, path: Path, width: int = 1400) -> None:
    """The whole page in the picture (the window grows to the page's height)."""
    import time

    for _ in range(2):
        inner = driver.execute_script("return [window.outerHeight - window.innerHeight,"
                                      " document.documentElement.scrollHeight]")
        driver.set_window_size(width, max(900, min(6000, sum(inner))))
    time.sleep(0.6)  # let plotly's responsive resize settle before the picture
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path))


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage  # case-insensitive
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_get(url: str, path: str, headers: dict[str, str] | None = None,
             method: str = "GET", body: bytes | None = None) -> Reply:
    """A request with the path sent exactly as given (no client-side normalisation)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def post_json(url: str, path: str, payload: object, headers: dict[str, str] | None = None
              ) -> Reply:
    return http_get(url, path, {"Content-Type": "application/json", **(headers or {})},
                    method="POST", body=json.dumps(payload).encode())


def choose(driver: WebDriver, dropdown: str, value: str) -> None:
    """Pick ``value`` in a Dash dropdown as a user does: open it, click the option."""
    click(driver, dropdown)
    option = f".dash-dropdown-content input[value={json.dumps(value)}]"
    wait(driver, f"!!document.querySelector({json.dumps(option)})", f"option {value} to show")
    driver.execute_script("document.querySelector(arguments[0]).closest('label').click()",
                          option)


def click_plot_point(driver: WebDriver, graph: str, x: float, y: float) -> None:
    """A real mouse click on a plotly graph at data coordinates (x, y)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    plot = f"document.querySelector({json.dumps(graph + ' .js-plotly-plot')})"
    wait(driver, f"!!({plot} && {plot}._fullLayout && {plot}._fullLayout.xaxis)", "the plot")
    left, top = driver.execute_script(
        f"const g = {plot}, l = g._fullLayout; g.scrollIntoView({{block: 'center'}});"
        "return [l._size.l + l.xaxis.l2p(arguments[0]), l._size.t + l.yaxis.l2p(arguments[1])]",
        x, y)
    element = driver.find_element(By.CSS_SELECTOR, f"{graph} .js-plotly-plot")
    size = element.size
    ActionChains(driver).move_to_element_with_offset(
        element, int(left - size["width"] / 2), int(top - size["height"] / 2)).click().perform()
