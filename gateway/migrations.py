"""Apply the configured Django project's migrations, once per database, from any thread.

Processes that start together (``uvicorn --workers N``) take turns: on SQLite
through a lock file beside the database, on PostgreSQL through an advisory lock.
Django must be configured first (``DJANGO_SETTINGS_MODULE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from gateway.config import Config

_PG_LOCK = 0x5354_4B47  # "STKG": the advisory lock id migrating processes share


@contextlib.contextmanager
def _one_at_a_time(connection) -> Iterator[None]:
    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor == "sqlite" and name and not name.startswith(":memory:") and "mode=memory" not in name:
        with open(f"{name}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
    elif connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [_PG_LOCK])
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_PG_LOCK])
    else:
        yield


def _migrate(verbosity: int) -> None:
    import django
    from django.core.management import call_command
    from django.db import connection

    django.setup()
    with _one_at_a_time(connection):
        call_command("migrate", interactive=False, verbosity=verbosity)


def migrate(verbosity: int = 1) -> None:
    """``manage.py migrate`` for the configured project; in a thread of its own inside an event loop.

    A server that imports its app inside its loop (uvicorn ``--workers``/``--reload``) would
    otherwise get Django's refusal to run the ORM in an async context.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _migrate(verbosity)
        return

    def migrate_and_close() -> None:
        from django.db import connections

        try:
            _migrate(verbosity)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1, thread_name_prefix="stackgate-migrate") as pool:
        pool.submit(migrate_and_close).result()


def migrate_before_serving(config: "Config") -> bool:
    """What ``stackgate run`` and ``gateway.asgi`` do first: apply the migrations of the Django
    backend that has ``migrate = true`` (none by default). True when it did."""
    name = next((name for name, b in config.backends.items() if getattr(b, "migrate", False)), None)
    if name is None:
        return False
    config.backends[name].use_django_settings()
    migrate(verbosity=0)
    return True
