"""A new user's first hour, as the README tells it: plain uvicorn on a fresh data directory, the
admin's first user, and Django's admin reachable through its own route only."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from tests.bootstrap_support import DEMO_KEYS, Proc, assert_names_each_key, clean_env, insecure
from tests.services import ROOT, GatewayProcess

ALICE = {"X-API-Key": "sgk_BjlsISJWJWt6sMBgjX-ty-q3R05j0-qpufoYZk4wf_0"}  # docs/demo-credentials.md
USERNAME = "operator"
PASSWORD = "a-long-admin-password-5137"


def stackgate(*args: str, env: dict, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        input=stdin, timeout=180,
    )


def test_plain_uvicorn_serves_the_default_config_on_a_fresh_data_directory(tmp_path):
    """The README's `uvicorn gateway.asgi:app`: the schema is there before the first request."""
    data = tmp_path / "data"
    proc = Proc([], clean_env(STACKGATE_DATA_DIR=str(data), STACKGATE_WATCH="0"), tmp_path / "uvicorn.log")
    proc.cmd = [sys.executable, "-m", "uvicorn", "gateway.asgi:app", "--port", str(proc.port)]
    proc.launch()
    try:
        proc.wait_healthy()
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            created = client.post("/v1/todos", json={"title": "first"}, headers=ALICE)
            assert created.status_code == 201, created.text + proc.log()
            back = client.get(f"/v2/todos/{created.json()['id']}", headers=ALICE)
            assert back.status_code == 200, back.text
    finally:
        proc.stop()
    assert (data / "stackgate.sqlite3").exists()
    assert_names_each_key(insecure(proc.bootstrap_lines(), "warning"), DEMO_KEYS, proc.log())


@pytest.fixture(scope="module")
def admin_gateway(tmp_path_factory):
    """The shipped config.toml, served by `stackgate run`, with the admin's first user made the README's way."""
    data = tmp_path_factory.mktemp("first-contact")
    env = clean_env(STACKGATE_DATA_DIR=str(data), STACKGATE_WATCH="0")
    made = stackgate(
        "createsuperuser", "--config", str(ROOT / "config.toml"), "--username", USERNAME, "--email", "ops@example.com",
        "--noinput", env=dict(env, DJANGO_SUPERUSER_PASSWORD=PASSWORD),
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert "Superuser created successfully." in made.stdout
    server = GatewayProcess(ROOT / "config.toml", env, log_dir=data).start(timeout=90)
    yield server
    server.stop()


def test_the_first_superuser_logs_in_to_the_admin(admin_gateway):
    with httpx.Client(base_url=admin_gateway.url, timeout=10) as client:
        anonymous = client.get("/admin/")
        assert anonymous.status_code == 302 and anonymous.headers["location"] == "/admin/login/?next=/admin/"
        form = client.get("/admin/login/")
        assert form.status_code == 200 and "csrftoken" in client.cookies
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        login = client.post(
            "/admin/login/?next=/admin/",
            data={"username": USERNAME, "password": PASSWORD, "next": "/admin/", "csrfmiddlewaretoken": token},
        )
        assert login.status_code == 302 and login.headers["location"] == "/admin/", login.text
        assert "sessionid" in client.cookies
        index = client.get("/admin/")
        assert index.status_code == 200, admin_gateway.log()
        assert "Site administration" in index.text and USERNAME in index.text


@pytest.mark.parametrize("path", ["/v2/admin/", "/v2/admin/login/", "/v2/admin/todos/todo/"])
def test_the_admin_is_not_served_under_another_route(admin_gateway, path):
    """/v2's policy must never govern the admin: through /v2 it is the API's JSON 404."""
    response = httpx.get(admin_gateway.url + path, headers=ALICE, timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"


def test_createsuperuser_without_a_terminal_says_what_to_pass(tmp_path):
    result = stackgate("createsuperuser", "--config", str(ROOT / "config.toml"), env=clean_env(STACKGATE_DATA_DIR=str(tmp_path)), stdin="")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "stackgate createsuperuser: no terminal to ask on; pass --noinput with --username and --email, "
        "and the password in DJANGO_SUPERUSER_PASSWORD"
    )


def test_createsuperuser_needs_a_django_backend(tmp_path):
    config = tmp_path / "flask-only.toml"
    config.write_text('[backends.flask]\nkind = "wsgi"\napp = "backends.flask_site.wsgi:app"\n\n[[routes]]\nprefix = "/v1"\nbackend = "flask"\nauth = "none"\n')
    result = stackgate("createsuperuser", "--config", str(config), "--noinput", env=clean_env(STACKGATE_DATA_DIR=str(tmp_path)))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f'{config}: no backend runs Django: give the Django backend django_settings, e.g. django_settings = "mysite.settings"'
    )


def test_createsuperuser_reports_django_refusals_in_one_line(tmp_path):
    env = clean_env(STACKGATE_DATA_DIR=str(tmp_path), DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    args = ("createsuperuser", "--config", str(ROOT / "config.toml"), "--username", "ops", "--email", "o@example.com", "--noinput")
    assert stackgate(*args, env=env).returncode == 0
    again = stackgate(*args, env=env)
    assert again.returncode == 1
    assert again.stderr.strip() == "stackgate createsuperuser: Error: That username is already taken."
