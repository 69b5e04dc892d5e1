import pytest

from tests.services import RedisServer


@pytest.fixture
def redis(tmp_path):
    """A Redis of the test's own (a fresh state store), on a free port."""
    server = RedisServer(tmp_path)
    if server.binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; scripts/test installs it as root)")
    server.start()
    yield server
    server.stop()
