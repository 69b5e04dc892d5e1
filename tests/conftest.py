"""Shared fixtures: configs built in code, gateways behind httpx's ASGI transport."""

from __future__ import annotations

import os

import httpx
import pytest

os.environ.pop("SCRIPT_NAME", None)

from gateway.app import create_app  # noqa: E402
from gateway.config import parse_config  # noqa: E402
from tests.fixtures import wsgi_apps  # noqa: E402

BASE_TEST_CONFIG = """
[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
threads = 4

[[routes]]
prefix = "/v1"
backend = "rec"
auth = "none"
"""


@pytest.fixture(autouse=True)
def _clear_recorder():
    wsgi_apps.RECORDED.clear()
    wsgi_apps.CLOSED.clear()
    yield


def make_gateway(toml: str, environ: dict | None = None):
    return create_app(parse_config(toml.encode(), "test.toml", environ))


@pytest.fixture
def gateway_client():
    """``async with gateway_client(toml) as client`` -> an httpx client on an in-process gateway."""
    clients = []

    def factory(toml: str = BASE_TEST_CONFIG, environ: dict | None = None, client=("127.0.0.1", 5555)):
        app = make_gateway(toml, environ)
        transport = httpx.ASGITransport(app=app, client=client)
        c = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        c.gateway = app
        clients.append(c)
        return c

    yield factory
