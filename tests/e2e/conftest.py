from tests.service_fixtures import postgres_admin, postgres_database, redis_server  # noqa: F401
