"""Where both stacks find the one shared database.

``DATABASE_URL`` when set, otherwise an SQLite file under the project's
``var/`` folder (or ``STACKGATE_DATA_DIR``). Django's migrations own the
schema; Flask only maps the tables. The embedded database gets its schema
when either stack's ``wsgi`` module is imported (``ensure_embedded_schema``).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    return Path(os.environ.get("STACKGATE_DATA_DIR") or PROJECT_ROOT / "var")


def database_url() -> str:
    """The database URL both stacks use, as the operator wrote it."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url
    folder = data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'stackgate.sqlite3'}"


def sqlalchemy_url(url: str | None = None) -> str:
    """``database_url()`` in SQLAlchemy's form (psycopg 3 driver for PostgreSQL)."""
    url = url or database_url()
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def ensure_embedded_schema() -> None:
    """Apply Django's migrations to the embedded SQLite database, so that either stack serves at once.

    Not with ``DATABASE_URL`` (that schema is the operator's: ``stackgate migrate``), nor with
    ``STACKGATE_MIGRATE=0`` (the gateway has applied them already, or ``stackgate check`` imports).
    """
    if os.environ.get("DATABASE_URL", "").strip() or os.environ.get("STACKGATE_MIGRATE", "1") == "0":
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backends.django_site.settings")
    from gateway.migrations import migrate

    migrate(verbosity=0)
