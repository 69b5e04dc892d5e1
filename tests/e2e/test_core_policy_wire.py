"""Extensions through a real gateway: a policy package installed with pip, a middleware, a mounted ASGI app.

The package (tests/fixtures/ip_allow_policy) was written against
docs/extending.md: an entry point in ``stackgate.policies``, a pydantic
``Options`` and ``wrap(app, options, route, services)``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.services import ROOT, GatewayProcess, base_env

PACKAGE = Path(__file__).resolve().parents[1] / "fixtures" / "ip_allow_policy"

CONFIG = """
[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
threads = 2

[[routes]]
prefix = "/inside"
backend = "rec"
auth = "none"
ip_allow = { allow = ["10.0.0.0/8", "127.0.0.0/8"], header = "X-Let-In-By" }

[[routes]]
prefix = "/outside"
backend = "rec"
auth = "required"
ip_allow = { allow = ["10.0.0.0/8"] }

[[routes]]
prefix = "/open"
backend = "rec"
auth = "none"
"""

BAD_CONFIG = """
[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[[routes]]
prefix = "/v1"
backend = "rec"
auth = "none"
ip_allow = { allow = ["10.0.0.0/8", "ten"], hedaer = "X-Let-In-By" }
"""


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """``pip install`` the example package into a directory on the test processes' PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    source = build / "ip_allow_policy"
    subprocess.run(["cp", "-r", str(PACKAGE), str(source)], check=True)  # pip may write build files beside it
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(target.glob("stackgate_ip_allow-*.dist-info/entry_points.txt"))
    return target


def env_with(site: Path, **extra: str) -> dict:
    env = base_env(**extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return env


def test_stackgate_check_reports_the_policys_problems_by_key(installed, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BAD_CONFIG)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(path)], cwd=ROOT, env=env_with(installed), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f'{path}: routes[0].ip_allow.allow[1]: "ten" is not an IP address or network such as "10.0.0.0/8"',
        f'{path}: routes[0].ip_allow.hedaer: unknown key; did you mean "header"? (route "/v1", line 10)',
    ]


def test_without_the_package_the_key_is_unknown(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BAD_CONFIG)
    result = subprocess.run([sys.executable, "-m", "gateway", "check", str(path)], cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f'{path}: routes[0].ip_allow: unknown key (route "/v1", line 10)' in result.stderr.splitlines()


@pytest.fixture(scope="module")
def server(installed, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ip-allow")
    config = folder / "config.toml"
    config.write_text(CONFIG)
    proc = GatewayProcess(config, env_with(installed, STACKGATE_DATA_DIR=str(folder))).start(timeout=90)
    try:
        yield proc
    finally:
        proc.stop()


def test_the_policy_lets_listed_networks_in(server):
    response = httpx.get(server.url + "/inside/x", timeout=30)
    assert response.status_code == 200, server.log()
    assert response.headers["x-let-in-by"] == "127.0.0.0/8"


def test_the_policy_refuses_other_networks_in_the_json_shape_before_auth(server):
    response = httpx.get(server.url + "/outside/x", headers={"X-Request-ID": "ip-allow-1"}, timeout=30)
    assert response.status_code == 403, server.log()  # ORDER = 50: before auth's 401
    assert response.json() == {
        "error": {"status": 403, "code": "ip_not_allowed", "message": "Your address may not use this route.", "request_id": "ip-allow-1"}
    }
    assert response.headers["x-request-id"] == "ip-allow-1"


def test_routes_without_the_key_are_untouched(server):
    response = httpx.get(server.url + "/open/x", timeout=30)
    assert response.status_code == 200 and "x-let-in-by" not in response.headers


APPS_CONFIG = """
[gateway]
middleware = [{ use = "tests.fixtures.core_apps:Stamp", options = { header = "X-Stamp", value = "stamped" } }]

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
threads = 2

[backends.reports]
kind = "asgi"
app = "tests.fixtures.core_apps:reports"

[[routes]]
prefix = "/reports"
backend = "reports"
auth = "none"

[[routes]]
prefix = "/blocked"
backend = "rec"
auth = "none"
"""


@pytest.fixture(scope="module")
def apps_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("core-apps")
    config = folder / "config.toml"
    config.write_text(APPS_CONFIG)
    proc = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(folder))).start(timeout=90)
    try:
        yield proc
    finally:
        proc.stop()


def test_a_mounted_asgi_app_behind_the_config_middleware(apps_server):
    response = httpx.get(apps_server.url + "/reports/ping", headers={"X-Request-ID": "mw-1"}, timeout=30)
    assert response.status_code == 200, apps_server.log()
    assert response.json() == {"root_path": "/reports", "path": "/reports/ping", "identity": None}
    assert response.headers["x-stamp"] == "stamped mw-1" and response.headers["x-request-id"] == "mw-1"


def test_a_middlewares_error_gets_the_json_shape(apps_server):
    response = httpx.get(apps_server.url + "/blocked/x", headers={"X-Request-ID": "mw-2"}, timeout=30)
    assert response.status_code == 451, apps_server.log()
    assert response.json() == {
        "error": {"status": 451, "code": "blocked_here", "message": "The stamp middleware blocks this path.", "request_id": "mw-2"}
    }
    assert response.headers["x-stamp"] == "stamped mw-2"
