"""The contract suite's servers: the real gateway (``stackgate run``) in front of both
stacks, once on SQLite and once on PostgreSQL; tests are parametrised by prefix."""

from __future__ import annotations

import httpx
import pytest

from tests.service_fixtures import postgres_admin, postgres_database, redis_server  # noqa: F401
from tests.services import GatewayProcess, base_env, create_database, drop_database, migrate
from tests.users import USERS, consumers_toml

PREFIXES = {"/v1": "flask", "/v2": "django"}

CONFIG = """
[backends.flask]
kind = "wsgi"
app = "backends.flask_site.wsgi:app"
threads = 8

[backends.django]
kind = "wsgi"
app = "backends.django_site.wsgi:application"
threads = 8

[backends.static]
kind = "static"
packages = ["rest_framework", "django.contrib.admin"]

[[routes]]
prefix = "/v1"
backend = "flask"

[[routes]]
prefix = "/v2"
backend = "django"

[[routes]]
prefix = "/static"
backend = "static"
auth = "none"
"""


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory):
    """A running gateway on one database; yields it with the other database's name."""
    tmp = tmp_path_factory.mktemp(f"contract-{request.param}")
    env = base_env(STACKGATE_DATA_DIR=str(tmp))
    admin = database = None
    if request.param == "postgres":
        admin = request.getfixturevalue("postgres_admin")
        database = create_database(admin)
        env["DATABASE_URL"] = database
        migrate(env)
    config = tmp / "config.toml"
    config.write_text(CONFIG + consumers_toml())
    server = GatewayProcess(config, env).start()
    yield server
    server.stop()
    if database:
        drop_database(admin, database)


@pytest.fixture(params=list(PREFIXES))
def prefix(request):
    return request.param


@pytest.fixture
def api(stack, prefix):
    """``api(user)`` -> an httpx client on ``{gateway}{prefix}`` authenticated as ``user``."""
    clients = []

    def client(user: str = "alice") -> httpx.Client:
        c = httpx.Client(base_url=stack.url + prefix, headers=USERS[user].headers(), timeout=30)
        clients.append(c)
        return c

    yield client
    for c in clients:
        c.close()
