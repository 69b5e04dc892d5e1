"""Shadow comparison between the real stacks: writes run once, reads are compared.

Both stacks serve one contract on one database, so a GET answered by one and
replayed on the other must match; a POST is never replayed (the row count
proves it).
"""

from __future__ import annotations

import sqlite3
import time

import httpx

from tests.services import GatewayProcess, base_env
from tests.users import USERS, consumers_toml

CONFIG = """
[backends.flask]
kind = "wsgi"
app = "backends.flask_site.wsgi:app"

[backends.django]
kind = "wsgi"
app = "backends.django_site.wsgi:application"

[[routes]]
name = "api"
prefix = "/api"
split = { django = 50, flask = 50 }
mirror = true
""" + consumers_toml()


def mirror_stats(server) -> dict:
    return httpx.get(server.url + "/_stackgate/mirror", headers=USERS["admin"].headers()).json().get("api", {})


def test_writes_run_once_and_reads_are_compared_between_the_stacks(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path))).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            served = set()
            ids = []
            for name in ("alice", "bob", "tester", "admin"):
                response = client.post("/api/todos", json={"title": f"{name}'s"}, headers=USERS[name].headers())
                assert response.status_code == 201, response.text
                served.add(response.headers["x-served-by"])
                ids.append((name, response.json()["id"]))
            for name, todo in ids:
                assert client.get(f"/api/todos/{todo}", headers=USERS[name].headers()).status_code == 200
                assert client.get("/api/todos", headers=USERS[name].headers()).status_code == 200
        deadline = time.monotonic() + 15
        while (stats := mirror_stats(server)).get("matches", 0) + stats.get("mismatches", 0) < 8:
            assert time.monotonic() < deadline, stats
            time.sleep(0.2)
        assert stats["matches"] == 8 and stats["mismatches"] == 0, stats["recent_mismatches"]
        with sqlite3.connect(tmp_path / "stackgate.sqlite3") as db:
            assert db.execute("SELECT COUNT(*) FROM todos").fetchone()[0] == 4
    finally:
        server.stop()


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_a_browser_asking_for_html_is_not_comparable_and_stores_no_diff(tmp_path):
    """DRF answers a browser with its HTML page, Flask with JSON: counted apart, nothing kept, no mismatch."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path))).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            served = {}
            for name in ("alice", "bob", "tester", "admin"):
                todo = client.post("/api/todos", json={"title": f"{name}'s"}, headers=USERS[name].headers())
                assert todo.status_code == 201, todo.text
                page = client.get(f"/api/todos/{todo.json()['id']}", headers={**USERS[name].headers(), "Accept": BROWSER_ACCEPT})
                listing = client.get("/api/todos", headers={**USERS[name].headers(), "Accept": BROWSER_ACCEPT})
                assert page.status_code == listing.status_code == 200, server.log()
                served[page.headers["x-served-by"]] = page.headers["content-type"]
        assert set(served) == {"django", "flask"}, "both stacks served some of the consumers"
        assert served["django"].startswith("text/html") and served["flask"].startswith("application/json")
        deadline = time.monotonic() + 30
        while (stats := mirror_stats(server)).get("not_comparable", 0) + stats.get("matches", 0) + stats.get("mismatches", 0) < 8:
            assert time.monotonic() < deadline, (stats, server.log())
            time.sleep(0.2)
        assert (stats["not_comparable"], stats["mismatches"], stats["matches"]) == (8, 0, 0), stats
        assert stats["recent_mismatches"] == []
        metrics = httpx.get(server.url + "/_stackgate/metrics").text
        assert 'stackgate_mirror_results_total{result="not_comparable",route="api"} 8.0' in metrics
    finally:
        server.stop()
