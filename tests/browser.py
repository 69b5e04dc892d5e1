"""Headless Chromium for browser tests: Debian's chromium and chromedriver, nothing downloaded.

``chrome_driver()`` yields a Selenium driver (or skips the test when the
browser is not installed); ``screenshot(driver, name)`` keeps a PNG under
tests/artifacts/ for a human to look at.
"""

from __future__ import annotations

import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SKIP_REASON = "chromium/chromedriver not installed: apt-get install chromium chromium-driver"
WINDOW = (1400, 1000)

# Without the background-networking flags Chromium's own connections are refused here
# and slow every page down; --disable-quic keeps it on plain TCP to loopback.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_available() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


@contextmanager
def chrome_driver(window: tuple[int, int] = WINDOW) -> Iterator["WebDriver"]:  # noqa: F821
    if not browser_available():
        pytest.skip(SKIP_REASON)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="stackgate-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={window[0]},{window[1]}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.set_page_load_timeout(30)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture
def browser() -> Iterator["WebDriver"]:  # noqa: F821
    with chrome_driver() as driver:
        yield driver


def screenshot(driver, name: str, full_page: bool = True) -> Path:
    """Save ``tests/artifacts/<name>.png``; full_page grows the window to the document's height first."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    if full_page:
        size = driver.get_window_size()
        chrome, height = driver.execute_script(
            "return [window.outerHeight - window.innerHeight, document.documentElement.scrollHeight]"
        )
        driver.set_window_size(size["width"], max(size["height"], height + chrome))
        driver.save_screenshot(str(path))
        driver.set_window_size(size["width"], size["height"])
    else:
        driver.save_screenshot(str(path))
    return path


def console_errors(driver) -> list[str]:
    """The page's console errors since the last call (CSP violations, uncaught exceptions)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
