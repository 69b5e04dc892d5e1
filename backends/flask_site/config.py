"""Configuration defaults, so the Flask stack opens the same database as Django."""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url

from backends.database import sqlalchemy_url


def defaults() -> dict:
    """Fresh defaults for one app, so no two apps share a mutable engine-options dict."""
    return {
        "MAX_CONTENT_LENGTH": 10 * 1024 * 1024,
        "SQLALCHEMY_ENGINE_OPTIONS": {},
    }


def pre_ping(uri: str) -> bool:
    """Whether a pooled connection is tested (``SELECT 1``) each time it is taken.

    A database server's connection can die in the pool (a restart, an idle
    timeout, a failover), and the ping replaces it before a request uses it.
    A connection to an SQLite file cannot go stale: there the ping is one
    more statement per request for nothing (7 % of a one-todo view's CPU,
    and one more hand-off of the GIL).
    """
    return make_url(uri).get_backend_name() != "sqlite"


def database_uri() -> str:
    """``DATABASE_URL`` in SQLAlchemy's form, relative SQLite paths made absolute.

    Flask-SQLAlchemy resolves a relative SQLite path against the instance
    folder while Django resolves it against the working directory; resolving
    it here keeps both stacks on one file.
    """
    url = make_url(sqlalchemy_url())
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not url.query.get("uri") and not os.path.isabs(url.database):
            url = url.set(database=os.path.abspath(url.database))
    return url.render_as_string(hide_password=False)
