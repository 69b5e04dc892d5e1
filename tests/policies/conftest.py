from tests.service_fixtures import redis_server  # noqa: F401
