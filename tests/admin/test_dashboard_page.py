"""The dashboard in a real browser, against the fake stats endpoint."""

from __future__ import annotations

import json
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import uvicorn

from tests.admin.fake_stats_app import FROZEN_NOW, FakeStats, create_app
from tests.browser import browser, console_errors, screenshot  # noqa: F401
from tests.services import free_port

ADMIN_API = Path(__file__).resolve().parents[2] / "docs" / "admin-api.md"
WAIT = 10.0


@contextmanager
def serve(app) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake stats app did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT)


@pytest.fixture
def fake() -> FakeStats:
    return FakeStats(frozen_at=FROZEN_NOW)


@pytest.fixture
def dashboard(fake, browser):  # noqa: F811
    """Opens the dashboard served by the fake; returns the driver."""
    with serve(create_app(fake)) as url:
        browser.get(url + "/_stackgate/")
        yield browser


def until(driver, condition, timeout: float = WAIT, message: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d), message)


def shown(driver, testid: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]').text


def number(driver, testid: str) -> int:
    return int(shown(driver, testid).replace(",", ""))


def rendered(driver) -> bool:
    return shown(driver, "total-requests") not in ("", "–")


def keys(value: Any) -> set[str]:
    return set(value) if isinstance(value, dict) else set()


def test_the_fake_follows_admin_api_md():
    example = json.loads(re.search(r"## `GET /_stackgate/stats`\s+```json\n(.*?)```", ADMIN_API.read_text(), re.S).group(1))
    data = FakeStats(frozen_at=FROZEN_NOW).snapshot()
    assert keys(data) == keys(example)
    assert keys(example["config"]) <= keys(data["config"])
    assert keys(example["config"]["last_reload"]) == keys(data["config"]["last_reload"])
    assert all(keys(route) == keys(example["routes"][0]) for route in data["routes"])
    assert keys(example["totals"]) == keys(data["totals"])
    assert all(keys(counts) == keys(example["totals"]["by_backend"]["flask"]) for counts in data["totals"]["by_backend"].values())
    assert keys(example["series"]) == keys(data["series"])
    assert all(len(s["requests"]) == len(data["series"]["timestamps"]) for s in data["series"]["backends"].values())
    example_route = example["mirror"]["todos-v1"]
    assert keys(example_route) == keys(data["mirror"]["todos-v1"])
    assert keys(example_route["recent_mismatches"][0]) == keys(data["mirror"]["todos-v1"]["recent_mismatches"][0])


def test_shows_the_stats_as_served(dashboard, fake):
    until(dashboard, rendered, message="the dashboard never rendered the stats")
    data = fake.snapshot()
    totals = data["totals"]

    assert shown(dashboard, "config-version") == data["config"]["version"]
    assert shown(dashboard, "config-source") == data["config"]["source"]
    assert shown(dashboard, "reload-status").lower() == "ok"
    assert shown(dashboard, "generated-at") == data["generated_at"]
    assert number(dashboard, "total-requests") == totals["requests"]
    assert number(dashboard, "throttled") == totals["throttled"]
    assert number(dashboard, "auth-failures") == totals["auth_failures"]
    assert number(dashboard, "mirror-not-comparable") == totals["mirror"]["not_comparable"]
    assert number(dashboard, "total-5xx") == sum(b["5xx"] for b in totals["by_backend"].values())
    for name, counts in totals["by_backend"].items():
        for key in ("requests", "2xx", "3xx", "4xx", "5xx"):
            assert number(dashboard, f"backend-{name}-{key}") == counts[key], (name, key)
    flask = data["backends"]["flask"]
    assert number(dashboard, "backend-flask-busy") == flask["busy"]
    assert number(dashboard, "backend-flask-threads") == flask["threads"]
    assert shown(dashboard, "backend-flask-saturation").lower() == "saturated"
    assert shown(dashboard, "backend-django-saturation").lower() == "ok"

    assert shown(dashboard, "route-todos-v1-weights") == "django 90 · flask 10"
    assert shown(dashboard, "route-todos-v1-mirror") == "on"
    assert shown(dashboard, "route-django-admin-auth") == "none"
    mirror = data["mirror"]["todos-v1"]
    assert shown(dashboard, "mirror-todos-v1-rate") == f"{mirror['match_rate'] * 100:.2f}%"
    assert number(dashboard, "mirror-todos-v1-mismatches") == mirror["mismatches"]
    assert number(dashboard, "mirror-todos-v2-not_comparable") == data["mirror"]["todos-v2"]["not_comparable"]
    assert console_errors(dashboard) == []
    screenshot(dashboard, "dashboard-frozen")


def test_charts_draw_one_line_per_backend(dashboard, fake):
    from selenium.webdriver.common.by import By

    until(dashboard, rendered)
    series = fake.snapshot()["series"]
    for chart in ("requests", "errors"):
        lines = dashboard.find_elements(By.CSS_SELECTOR, f'[data-testid="chart-{chart}-svg"] path')
        assert sorted(line.get_attribute("data-backend") for line in lines) == sorted(series["backends"])
        assert all(line.get_attribute("d").count("L") == len(series["timestamps"]) - 1 for line in lines)
    legend = shown(dashboard, "chart-legend").split()
    assert legend == sorted(series["backends"])


def test_shows_the_latest_mismatch_diff_in_colour(dashboard, fake):
    from selenium.webdriver.common.by import By

    until(dashboard, rendered)
    newest = fake.snapshot()["mirror"]["todos-v1"]["recent_mismatches"][-1]
    diff = dashboard.find_element(By.CSS_SELECTOR, '[data-testid="mirror-todos-v1-diff-0"]')
    assert diff.tag_name == "pre" and diff.is_displayed()
    assert diff.text.splitlines() == newest["diff"].splitlines()
    added = diff.find_element(By.CSS_SELECTOR, ".diff-add")
    removed = diff.find_element(By.CSS_SELECTOR, ".diff-del")
    assert added.text.startswith("+") and removed.text.startswith("-")
    assert added.value_of_css_property("background-color") != removed.value_of_css_property("background-color")
    assert added.value_of_css_property("background-color") not in ("rgba(0, 0, 0, 0)", "transparent")
    assert "No mismatches recorded." in shown(dashboard, "mirror-todos-v2")


def test_follows_the_counts_as_they_grow(dashboard, fake):
    until(dashboard, rendered)
    before = number(dashboard, "total-requests")
    fake.frozen_at += 60
    expected = fake.snapshot()["totals"]["requests"]
    assert expected > before
    until(dashboard, lambda d: number(d, "total-requests") == expected, message="the dashboard did not poll again")


def test_a_failed_reload_is_shown_in_red_with_its_problems(dashboard, fake):
    fake.reload_failed = True
    until(dashboard, lambda d: shown(d, "reload-status").lower() == "failed")
    problems = fake.snapshot()["config"]["last_reload"]["problems"]
    assert shown(dashboard, "reload-problem-list").splitlines() == problems
    status = dashboard.find_element("css selector", '[data-testid="reload-status"]')
    red, green, blue = map(int, re.findall(r"\d+", status.value_of_css_property("background-color"))[:3])
    assert red > 180 and green < 80 and blue < 80
    screenshot(dashboard, "dashboard-reload-failed")


def test_nothing_served_yet_has_an_empty_state(fake, browser):  # noqa: F811
    fake.fresh = True
    with serve(create_app(fake)) as url:
        browser.get(url + "/_stackgate/")
        until(browser, rendered)
        assert number(browser, "total-requests") == 0
        assert "No traffic recorded yet" in shown(browser, "chart-requests")
        assert shown(browser, "mirror-todos-v1-rate") == "–"
        screenshot(browser, "dashboard-empty")


def test_a_failing_stats_endpoint_shows_a_banner_and_recovers(fake, browser):  # noqa: F811
    fake.failing = True
    with serve(create_app(fake)) as url:
        browser.get(url + "/_stackgate/")
        until(browser, lambda d: shown(d, "stats-error") != "", message="no error banner")
        assert shown(browser, "stats-error").startswith("stats unavailable: HTTP 503")
        assert "metrics store unreachable" in shown(browser, "stats-error")
        screenshot(browser, "dashboard-stats-unavailable")

        fake.failing = False
        until(browser, rendered, message="the dashboard stopped retrying")
        assert shown(browser, "stats-error") == ""
        assert number(browser, "total-requests") == fake.snapshot()["totals"]["requests"]

        fake.failing = True
        until(browser, lambda d: shown(d, "stats-error") != "")
        assert "Showing data from" in shown(browser, "stats-error")
        assert number(browser, "total-requests") == fake.snapshot()["totals"]["requests"]
