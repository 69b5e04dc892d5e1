"""The dashboard's rollout section, in headless Chromium: a rolled-back rollout says why on its timeline."""

from __future__ import annotations

import re

from tests.browser import chrome_driver, console_errors, screenshot
from tests.rollout.support import ADMIN, Traffic, config_text, wait_for, wait_status
from tests.services import GatewayProcess, base_env


def test_the_dashboard_shows_the_rollback_and_the_failing_gate(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(config_text("tests.rollout.apps:errors", min_time=30, min_requests=100,
                                  gates="max_5xx_increase = 0.01\nlatency_slack_ms = 100000\n"))
    server = GatewayProcess(config, base_env()).start(60)
    try:
        with Traffic(server.url):
            wait_status(server, ("rolled_back",), timeout=120)
        from selenium.webdriver.common.by import By

        with chrome_driver() as driver:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": ADMIN})
            driver.get(server.url + "/_stackgate/")

            def text(testid: str) -> str:
                found = driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')
                return found[0].text if found else ""

            wait_for(lambda: text("rollout-status-api").lower() == "rolled back", 30, lambda: driver.page_source[:3000])
            assert "5xx_rate_increase" in text("rollout-failure-api")
            timeline = text("rollout-timeline-api")
            assert "rollback: 10 % → 0 % (gates)" in timeline and "start: 0 % → 10 %" in timeline, timeline
            gates = text("rollout-gates-api")
            # The figure is the 5xx share of the requests counted by then: about 0.05, not exactly.
            assert "Gates at the rollback" in gates and re.search(r"5xx_rate_increase 0\.0\d* 0\.01 fails", gates), gates
            assert text("route-api-weights") == "new 0 · old 100"  # the rollout's weights, not the config's split
            screenshot(driver, "dashboard-rollout-rolled-back")
            assert console_errors(driver) == []
    finally:
        server.stop()
