"""The migration report on the real stacks, behind ``stackgate run --workers 2``.

Both stacks serve the todo API under one split route; the report names the
endpoints by the stack's own route template, gives per-variant figures summed
over both workers, needs the admin role, and has a page on the dashboard.
"""

from __future__ import annotations

import time

import httpx

from tests.browser import chrome_driver, console_errors, screenshot
from tests.services import GatewayProcess, base_env
from tests.users import USERS, consumers_toml

CONFIG = """
[backends.django]
kind = "wsgi"
app = "backends.django_site.wsgi:application"

[backends.flask]
kind = "wsgi"
app = "backends.flask_site.wsgi:app"

[[routes]]
name = "api"
prefix = "/api"
split = { django = 50, flask = 50 }
mirror = true
""" + consumers_toml()

ADMIN = USERS["admin"].headers()
NAMES = ("alice", "bob", "tester", "admin")


def get(server, path: str, **kwargs) -> httpx.Response:
    return httpx.get(server.url + path, timeout=30, **kwargs)  # a new connection each time: either worker answers


def load(server) -> set[str]:
    served = set()
    for name in NAMES:
        todo = httpx.post(server.url + "/api/todos", json={"title": f"{name}'s"}, headers=USERS[name].headers(), timeout=30)
        assert todo.status_code == 201, todo.text
        for _ in range(3):
            for path in (f"/api/todos/{todo.json()['id']}", "/api/todos"):
                response = get(server, path, headers=USERS[name].headers())
                assert response.status_code == 200, response.text
                served.add(response.headers["x-served-by"])
    return served


def wait_for_report(server, compared: int) -> dict:
    deadline = time.monotonic() + 60
    while True:
        report = get(server, "/_stackgate/migration", headers=ADMIN).json()
        route = report["routes"][0]
        if route["matches"] + route["mismatches"] >= compared:
            return report
        assert time.monotonic() < deadline, (report, server.log())
        time.sleep(0.2)


def test_the_report_shows_each_endpoint_for_both_variants_summed_over_the_workers(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2).start(timeout=90)
    try:
        assert load(server) == {"django", "flask"}
        assert get(server, "/_stackgate/migration").status_code == 401
        refused = get(server, "/_stackgate/migration", headers=USERS["alice"].headers())
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"

        report = wait_for_report(server, 24)
        assert report["workers_summed"] is True
        [route] = report["routes"]
        assert (route["route"], route["matches"], route["mismatches"], route["match_rate"]) == ("api", 24, 0, 1.0), route
        assert route["rollout"] is None
        assert route["variants"]["django"]["requests"] + route["variants"]["flask"]["requests"] == 28  # 4 POSTs, 24 GETs
        endpoints = {e["endpoint"]: e for e in route["endpoints"]}
        assert set(endpoints) == {"GET /api/todos/{pk}", "GET /api/todos", "POST /api/todos"}, endpoints  # Django's own templates
        assert endpoints["POST /api/todos"]["match_rate"] is None  # writes are never replayed
        for name in ("GET /api/todos/{pk}", "GET /api/todos"):
            assert endpoints[name]["match_rate"] == 1.0 and endpoints[name]["top_fields"] == []
            assert endpoints[name]["matches"] == 12
        listing = endpoints["GET /api/todos"]["variants"]
        assert set(listing) == {"django", "flask"}, listing
        for variant in listing.values():
            assert variant["requests"] > 0 and variant["5xx_rate"] == 0.0
            assert 0 < variant["p50_ms"] <= variant["p99_ms"]
        # Every worker answers the same summed figures.
        for _ in range(6):
            stats = get(server, "/_stackgate/mirror", headers=ADMIN).json()["api"]
            assert (stats["matches"], stats["mismatches"]) == (24, 0), stats

        download = get(server, "/_stackgate/migration?format=json", headers=ADMIN)
        assert download.status_code == 200 and download.headers["content-type"] == "application/json"
        assert download.headers["content-disposition"].startswith('attachment; filename="stackgate-migration-')
        assert download.json()["routes"][0]["route"] == "api"

    finally:
        server.stop()


def test_the_migration_page_loads_and_offers_the_json(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path))).start(timeout=60)
    try:
        load(server)
        wait_for_report(server, 24)
        assert get(server, "/_stackgate/dashboard/migration.html").status_code == 401
        with chrome_driver() as driver:
            from selenium.webdriver.common.by import By

            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": ADMIN})
            driver.get(server.url + "/_stackgate/dashboard/migration.html")
            deadline = time.monotonic() + 30
            row = '[data-testid="report-api-endpoint-GET-api-todos-pk"]'
            while not driver.find_elements(By.CSS_SELECTOR, row):
                assert time.monotonic() < deadline, driver.page_source[:3000]
                time.sleep(0.3)
            assert driver.find_element(By.CSS_SELECTOR, '[data-testid="report-api-rate"]').text == "100.00%"
            assert driver.find_element(By.CSS_SELECTOR, '[data-testid="report-api-variants-django-requests"]').text != "–"
            assert "No rollout" in driver.find_element(By.CSS_SELECTOR, '[data-testid="report-api-rollout"]').text
            link = driver.find_element(By.CSS_SELECTOR, '[data-testid="download-json"]')
            assert link.get_attribute("href").endswith("/_stackgate/migration?format=json")
            assert console_errors(driver) == []
            screenshot(driver, "migration-report")
    finally:
        server.stop()
