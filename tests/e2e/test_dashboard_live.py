"""The dashboard on a real gateway, in headless Chromium, showing the load just sent."""

from __future__ import annotations

import time

import httpx

from tests.browser import chrome_driver, screenshot
from tests.services import GatewayProcess, base_env
from tests.users import USERS, consumers_toml

CONFIG = """
[throttle.policies.tight]
rates = ["5/minute"]

[backends.a]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_a"

[backends.b]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_b"

[[routes]]
name = "ab"
prefix = "/ab"
split = { a = 50, b = 50 }
mirror = true
mirror_ignore = ["served_at"]
auth = "required"

[[routes]]
name = "tight"
prefix = "/tight"
backend = "a"
auth = "required"
throttle = "tight"
""" + consumers_toml()


def number(driver, testid: str) -> int:
    from selenium.webdriver.common.by import By

    text = driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]').text
    return int(text.replace(",", "").strip() or 0)


def test_dashboard_shows_the_load_just_sent(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path))).start()
    try:
        alice = USERS["alice"].headers()
        with httpx.Client(base_url=server.url) as client:
            served = [client.get("/ab/item", headers=alice).headers["x-served-by"] for _ in range(30)]
            differ = client.get("/ab/differ", headers=alice)
            tight = [client.get("/tight/x", headers=alice).status_code for _ in range(8)]
            refused = [client.get("/ab/x").status_code for _ in range(4)]
        assert differ.status_code == 200 and tight.count(429) == 3 and refused == [401] * 4
        time.sleep(0.5)  # let the shadow comparisons finish

        with chrome_driver() as driver:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": USERS["admin"].headers()})
            driver.get(server.url + "/_stackgate/")
            deadline = time.monotonic() + 15
            while True:
                try:
                    if number(driver, "total-requests") == 43:
                        break
                except Exception:
                    pass
                assert time.monotonic() < deadline, driver.page_source[:2000]
                time.sleep(0.3)
            natural = served[0]
            assert number(driver, f"backend-{natural}-requests") >= 30
            assert number(driver, "throttled") == 3
            assert number(driver, "auth-failures") == 4
            assert number(driver, "mirror-mismatches") >= 1
            from selenium.webdriver.common.by import By

            weights = driver.find_element(By.CSS_SELECTOR, '[data-testid="route-ab-weights"]').text
            assert "a 50" in weights and "b 50" in weights
            diff = driver.find_element(By.CSS_SELECTOR, '[data-testid="mirror-ab-diff-0"]').text
            assert '"value"' in diff
            deadline = time.monotonic() + 12  # the charts close an interval every 5 s
            while driver.find_elements(By.CSS_SELECTOR, '[data-testid="chart-requests-empty"]'):
                assert time.monotonic() < deadline, "the traffic chart stayed empty"
                time.sleep(0.5)
            assert driver.find_elements(By.CSS_SELECTOR, f'[data-testid="chart-requests-line-{natural}"]')
            screenshot(driver, "dashboard-live")
    finally:
        server.stop()


def test_dashboard_needs_the_admin_role(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path))).start()
    try:
        anonymous = httpx.get(server.url + "/_stackgate/")
        assert anonymous.status_code == 401 and "ApiKey" in anonymous.headers["www-authenticate"]
        assert httpx.get(server.url + "/_stackgate/stats", headers=USERS["alice"].headers()).status_code == 403
        page = httpx.get(server.url + "/_stackgate/", headers=USERS["admin"].headers())
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
    finally:
        server.stop()
