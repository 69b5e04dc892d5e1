"""Fixtures for real servers: Redis on its own port, a fresh PostgreSQL database.

Imported by the conftest of each test folder that needs them."""

from __future__ import annotations

import pytest

from tests.services import RedisServer, create_database, drop_database, ensure_postgres


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    if server.binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; scripts/test installs it as root)")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_admin():
    url = ensure_postgres()
    if url is None:
        pytest.skip("no PostgreSQL server at STACKGATE_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/postgres) and none could be started")
    return url


@pytest.fixture
def postgres_database(postgres_admin):
    url = create_database(postgres_admin)
    yield url
    drop_database(postgres_admin, url)
