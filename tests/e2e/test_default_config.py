"""The repository's own config.toml, served by `stackgate run`, used as the README says.

The demo credentials come from docs/demo-credentials.md, where a new user
finds them.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

from tests.services import ROOT, GatewayProcess, base_env

KEYS = dict(
    re.findall(r"^\| `(\w+)` \| [\w, ]+ \| `(sgk_[^`]+)` \|", (ROOT / "docs" / "demo-credentials.md").read_text(), re.MULTILINE)
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    data = tmp_path_factory.mktemp("default-config")
    env = base_env(STACKGATE_DATA_DIR=str(data), STACKGATE_WATCH="0")
    server = GatewayProcess(ROOT / "config.toml", env, log_dir=data).start()  # the log stays out of the repository
    yield server
    server.stop()


def alice() -> dict[str, str]:
    return {"X-API-Key": KEYS["alice"]}


@pytest.mark.parametrize("write, read", [("/v1", "/v2"), ("/v2", "/v1")])
def test_a_todo_written_through_one_stack_reads_back_through_the_other(gateway, write, read):
    with httpx.Client(base_url=gateway.url) as client:
        created = client.post(f"{write}/todos", json={"title": "Buy milk"}, headers=alice())
        assert created.status_code == 201, created.text
        todo = created.json()
        back = client.get(f"{read}/todos/{todo['id']}", headers=alice())
        assert back.status_code == 200
        other = back.json()
        assert {k: v for k, v in other.items() if k != "url"} == {k: v for k, v in todo.items() if k != "url"}
        assert todo["url"] == f"{gateway.url}{write}/todos/{todo['id']}"
        assert other["url"] == f"{gateway.url}{read}/todos/{todo['id']}"
        bob = client.get(f"{read}/todos/{todo['id']}", headers={"X-API-Key": KEYS["bob"]})
        assert bob.status_code == 404 and bob.json()["error"]["code"]


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link" and attrs.get("rel") == "stylesheet":
            self.urls.append(attrs["href"])
        elif tag == "script" and attrs.get("src"):
            self.urls.append(attrs["src"])


def test_drf_browsable_api_renders_with_its_stylesheets_and_scripts(gateway):
    with httpx.Client(base_url=gateway.url) as client:
        page = client.get("/v2/todos/", headers={**alice(), "Accept": "text/html"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "Django REST framework" in page.text
        parser = _Assets()
        parser.feed(page.text)
        assert any(url.endswith(".css") for url in parser.urls) and any(url.endswith(".js") for url in parser.urls)
        for url in parser.urls:
            asset = client.get(url)  # static files need no credentials
            assert asset.status_code == 200, url
            kind = "text/css" if url.endswith(".css") else "javascript"
            assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])


def test_a_browser_without_credentials_is_offered_basic(gateway):
    response = httpx.get(gateway.url + "/v2/todos/", headers={"Accept": "text/html"})
    assert response.status_code == 401
    challenges = response.headers.get_list("www-authenticate")
    assert 'Basic realm="stackgate"' in challenges
    assert response.json()["error"]["code"] == "unauthorized"
    with_basic = httpx.get(gateway.url + "/v2/todos/", auth=("alice", "alice-demo-password"), headers={"Accept": "text/html"})
    assert with_basic.status_code == 200


def test_unknown_routes_and_unsafe_paths_get_the_json_shape(gateway):
    for path, status in [("/nope", 404), ("/v1admin", 404), ("/v1/%2e%2e/v2/todos", 400), ("/v1/todos%2F1", 400)]:
        response = httpx.get(gateway.url + path, headers=alice())
        assert response.status_code == status, path
        error = response.json()["error"]
        assert error["status"] == status and error["request_id"] == response.headers["x-request-id"]
