"""Noise-aware comparison behind a real gateway: timestamps are learned as noise, real changes are not.

Two small stacks (tests/fixtures/noise_apps.py) stamp every answer; one of
them answers another ``title`` for every tenth item. Copies run in the shadow
process, as in production.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.services import GatewayProcess, base_env
from tests.users import USERS, consumers_toml

CONFIG = """
[split]
mirror_duty_cycle = 1.0

[backends.stable]
kind = "wsgi"
app = "tests.fixtures.noise_apps:stable"

[backends.twin]
kind = "wsgi"
app = "tests.fixtures.noise_apps:stable"

[backends.regressed]
kind = "wsgi"
app = "tests.fixtures.noise_apps:regressed"

[[routes]]
name = "noisy"
prefix = "/noisy"
split = { stable = 50, twin = 50 }
mirror = true
auth = "none"

[[routes]]
name = "strict"
prefix = "/strict"
split = { stable = 50, twin = 50 }
mirror = true
mirror_significant = ["stamp"]
auth = "none"

[[routes]]
name = "regress"
prefix = "/regress"
split = { stable = 50, regressed = 50 }
mirror = true
auth = "none"
""" + consumers_toml()

ADMIN = USERS["admin"].headers()


def mirror_of(server, route: str) -> dict:
    return httpx.get(server.url + "/_stackgate/mirror", headers=ADMIN, timeout=30).json().get(route, {})


def compared(stats: dict) -> int:
    return stats.get("matches", 0) + stats.get("mismatches", 0) + stats.get("errors", 0) + stats.get("skipped", 0)


def send(server, route: str, ids, expected_total: int) -> dict:
    """GET each item as a new anonymous client (so both stacks serve), in batches the shadow
    process keeps up with; then wait until every copy was compared."""
    served = set()
    ids = list(ids)
    done = compared(mirror_of(server, route))
    for start in range(0, len(ids), 10):
        for n in ids[start : start + 10]:
            response = httpx.get(f"{server.url}/{route}/items/{n}", timeout=30)
            assert response.status_code == 200, response.text
            served.add(response.headers["x-served-by"])
        done += len(ids[start : start + 10])
        deadline = time.monotonic() + 60
        while compared(stats := mirror_of(server, route)) < done:
            assert time.monotonic() < deadline, (stats, server.log())
            time.sleep(0.1)
    assert len(served) == 2, f"both stacks served: {served}"
    assert compared(stats) == expected_total
    return stats


def start(tmp_path, workers: int = 1) -> GatewayProcess:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    return GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=workers).start(timeout=90)


def test_a_field_that_differs_on_every_answer_is_noise_and_the_match_rate_stays_whole(tmp_path):
    server = start(tmp_path)
    try:
        stats = send(server, "noisy", range(40), 40)
        assert (stats["matches"], stats["mismatches"], stats["errors"], stats["skipped"]) == (40, 0, 0, 0), (stats, server.log())
        assert stats["match_rate"] == 1.0
        fields = stats["fields"]
        for name in ("stamp", "tags[].seen_at"):
            assert fields[name]["verdict"] == "noise", fields
            assert fields[name]["cross_differences"] == 40, fields
            assert set(fields[name]["self_differences"]) == {"stable", "twin"}
            assert fields[name]["examples"], fields[name]
        assert "title" not in fields and "id" not in fields
        assert set(stats["self_checks"]) == {"stable", "twin"}
    finally:
        server.stop()


def test_a_significant_field_is_never_noise(tmp_path):
    server = start(tmp_path)
    try:
        stats = send(server, "strict", range(20), 20)
        assert (stats["matches"], stats["mismatches"]) == (0, 20), (stats, server.log())
        fields = stats["fields"]
        assert fields["stamp"]["verdict"] == "real" and fields["stamp"]["significant"] is True
        assert fields["tags[].seen_at"]["verdict"] == "noise"  # learned from the checks the stamp still asks for
        latest = stats["recent_mismatches"][-1]
        assert latest["fields"] == ["stamp"], latest
    finally:
        server.stop()


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_a_real_difference_on_one_stack_is_a_mismatch_with_the_field_named(tmp_path, workers):
    """With 2 workers every count shown is the sum over both, whichever answers."""
    server = start(tmp_path, workers)
    try:
        stats = send(server, "regress", range(100), 100)
        assert (stats["matches"], stats["mismatches"], stats["errors"], stats["skipped"]) == (90, 10, 0, 0), (stats, server.log())
        assert stats["match_rate"] == 0.9
        fields = stats["fields"]
        assert fields["title"]["verdict"] == "real" and fields["title"]["cross_differences"] == 10, fields
        assert fields["stamp"]["verdict"] == "noise"
        examples = fields["title"]["examples"]  # the answering worker's own
        assert examples or workers > 1
        for example in examples:
            assert example["path"].startswith("/regress/items/") and sorted(example["values"]) == sorted(['"Item #' + example["path"].rsplit("/", 1)[1] + '"', '"item ' + example["path"].rsplit("/", 1)[1] + '"'])
        for mismatch in stats["recent_mismatches"]:
            assert mismatch["fields"] == ["title"] and set(mismatch["noise_fields"]) == {"stamp", "tags[].seen_at"}, mismatch
            assert int(mismatch["path"].rsplit("/", 1)[1]) % 10 == 0
        metrics = httpx.get(server.url + "/_stackgate/metrics", timeout=30).text
        assert 'stackgate_mirror_results_total{result="mismatch",route="regress"} 10.0' in metrics
    finally:
        server.stop()


def test_the_dashboard_marks_each_field_noise_or_real(tmp_path):
    from tests.browser import chrome_driver, console_errors, screenshot

    server = start(tmp_path)
    try:
        send(server, "regress", range(20), 20)
        with chrome_driver() as driver:
            from selenium.webdriver.common.by import By

            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": ADMIN})
            driver.get(server.url + "/_stackgate/")
            verdict = '[data-testid="mirror-regress-field-{}-verdict"]'
            deadline = time.monotonic() + 30
            while not driver.find_elements(By.CSS_SELECTOR, verdict.format("title")):
                assert time.monotonic() < deadline, driver.page_source[:3000]
                time.sleep(0.3)
            assert driver.find_element(By.CSS_SELECTOR, verdict.format("title")).text.lower() == "real"
            assert driver.find_element(By.CSS_SELECTOR, verdict.format("stamp")).text.lower() == "noise"
            row = driver.find_element(By.CSS_SELECTOR, '[data-testid="mirror-regress-field-title"]')
            assert "/regress/items/" in row.text  # an example
            assert driver.find_element(By.CSS_SELECTOR, '[data-testid="mirror-regress-rate"]').text == "90.00%"
            assert driver.find_element(By.CSS_SELECTOR, '[data-testid="migration-link"]').get_attribute("href").endswith("/migration.html")
            assert console_errors(driver) == []
            screenshot(driver, "dashboard-mirror-fields")
    finally:
        server.stop()


def test_the_migration_report_gives_each_variant_its_5xx_rate_per_endpoint(tmp_path):
    server = start(tmp_path)
    try:
        send(server, "regress", range(10), 10)
        deadline = time.monotonic() + 60
        sent = 0
        while True:  # new anonymous clients until each stack has served /broken a few times
            response = httpx.get(f"{server.url}/regress/broken/{sent}", timeout=30)
            sent += 1
            report = httpx.get(server.url + "/_stackgate/migration", headers=ADMIN, timeout=30).json()
            [route] = [r for r in report["routes"] if r["route"] == "regress"]
            endpoints = {e["endpoint"]: e for e in route["endpoints"]}
            broken = endpoints.get("GET /regress/broken/{id}", {}).get("variants", {})
            if all(broken.get(b, {}).get("requests", 0) >= 3 for b in ("stable", "regressed")):
                break
            assert time.monotonic() < deadline and response.status_code in (200, 500), (report, server.log())
        assert broken["regressed"]["5xx_rate"] == 1.0 and broken["stable"]["5xx_rate"] == 0.0, broken
        items = endpoints["GET /regress/items/{id}"]
        assert items["variants"]["stable"]["5xx"] == items["variants"]["regressed"]["5xx"] == 0
        assert items["matches"] + items["mismatches"] == 10
        assert {f["field"]: f["verdict"] for f in items["top_fields"]}["stamp"] == "noise"
        while not (found := endpoints["GET /regress/broken/{id}"])["mismatches"]:  # its pairs differ on the status
            assert time.monotonic() < deadline, (route, server.log())
            time.sleep(0.2)
            report = httpx.get(server.url + "/_stackgate/migration", headers=ADMIN, timeout=30).json()
            [route] = [r for r in report["routes"] if r["route"] == "regress"]
            endpoints = {e["endpoint"]: e for e in route["endpoints"]}
        assert {"field": "(status)", "verdict": "real"}.items() <= found["top_fields"][0].items(), found
        assert route["variants"]["regressed"]["5xx"] >= 3
    finally:
        server.stop()
