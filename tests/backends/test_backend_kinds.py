"""The ``asgi`` and ``http`` backend kinds, the latter against a real uvicorn upstream on loopback.

What an upstream learns of the client comes from the gateway alone: identity
headers it set, the client address it resolved, the public prefix; never a
client-sent copy of any of them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.services import ROOT, free_port, wait_for_port
from tests.users import USERS, consumers_toml

SPOOFED = {
    "X-Consumer-Id": "mallory",
    "X_Consumer_Roles": "admin",
    "x-auth-scheme": "jwt",
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "https",
    "Forwarded": "for=6.6.6.6",
    "X-Forwarded-Prefix": "/evil",
    "X-Real-IP": "6.6.6.6",
}


@pytest.fixture(scope="module")
def upstream():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.fixtures.asgi_apps:echo", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def config(upstream_url: str, timeout: float = 30) -> str:
    return f"""
[backends.remote]
kind = "http"
url = "{upstream_url}"
timeout = {timeout}

[backends.local]
kind = "asgi"
app = "tests.fixtures.asgi_apps:echo"

[[routes]]
prefix = "/remote"
backend = "remote"

[[routes]]
prefix = "/local"
backend = "local"

[[routes]]
prefix = "/open"
backend = "remote"
auth = "none"
""" + consumers_toml()


def received(response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        out.setdefault(name, []).append(value)
    return out


@pytest.mark.parametrize("prefix", ["/remote", "/local"])
async def test_identity_reaches_the_backend_and_spoofed_copies_do_not(gateway_client, upstream, prefix):
    client = gateway_client(config(upstream))
    response = await client.get(f"{prefix}/todos/1?x=1", headers={**USERS["alice"].headers(), **SPOOFED})
    assert response.status_code == 200
    data = response.json()
    headers = received(response)
    assert headers["x-consumer-id"] == ["alice"]
    assert headers["x-consumer-roles"] == ["user"]
    assert headers["x-auth-scheme"] == ["api-key"]
    assert "x-api-key" not in headers and "authorization" not in headers  # credentials stay at the gateway
    assert not any("_" in name for name in headers)
    for name in ("forwarded", "x-real-ip"):
        assert name not in headers
    if prefix == "/remote":
        assert data["path"] == "/todos/1" and data["query"] == "x=1"
        assert headers["x-forwarded-for"] == ["127.0.0.1"]
        assert headers["x-forwarded-host"] == ["testserver"]
        assert headers["x-forwarded-proto"] == ["http"]
        assert headers["x-forwarded-prefix"] == ["/remote"]
        assert response.headers["x-upstream"] == "echo"
    else:
        assert (data["root_path"], data["path"]) == ("/local", "/local/todos/1")


async def test_refused_requests_never_reach_the_upstream(gateway_client, upstream):
    client = gateway_client(config(upstream))
    response = await client.get("/remote/todos", headers={"X-API-Key": "sgk_wrong"})
    assert response.status_code == 401 and response.json()["error"]["code"]
    assert "x-upstream" not in response.headers


async def test_bodies_and_statuses_pass_through(gateway_client, upstream):
    client = gateway_client(config(upstream))
    response = await client.post("/open/created", content=b"x" * 100_000)
    assert response.status_code == 201 and response.json()["body_size"] == 100_000
    assert response.json()["method"] == "POST"
    streamed = await client.get("/open/stream")
    assert streamed.text == "one,two,three"


async def test_an_upstream_that_is_down_is_a_502(gateway_client):
    client = gateway_client(config(f"http://127.0.0.1:{free_port()}"))
    response = await client.get("/open/x")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "backend_unavailable" and "Traceback" not in response.text


async def test_a_slow_upstream_is_a_504(gateway_client, upstream):
    client = gateway_client(config(upstream, timeout=0.5))
    response = await client.get("/open/slow")
    assert response.status_code == 504 and response.json()["error"]["code"] == "backend_timeout"
