"""The Flask + Flask-RESTful stack of Stackgate, serving the todos contract.

``flask --app backends.flask_site run`` finds :func:`create_app`; the gateway
mounts ``backends.flask_site.wsgi:app`` and passes its prefix as ``SCRIPT_NAME``.
"""

from __future__ import annotations

from flask import Flask

from .api import init_api
from .config import database_uri, defaults, pre_ping
from .errors import register_error_handlers
from .models import db
from .urls import check_host


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(defaults())
    if test_config is None:
        app.config.from_prefixed_env()
    else:
        app.config.from_mapping(test_config)
    if "SQLALCHEMY_DATABASE_URI" not in app.config:
        app.config["SQLALCHEMY_DATABASE_URI"] = database_uri()
    engine_options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
    engine_options.setdefault("pool_pre_ping", pre_ping(app.config["SQLALCHEMY_DATABASE_URI"]))

    db.init_app(app)
    register_error_handlers(app)
    app.before_request(check_host)
    init_api(app)
    app.wsgi_app = _empty_path_is_root(app.wsgi_app)
    return app


def _empty_path_is_root(wsgi_app):
    """Serve a request for exactly the prefix (empty ``PATH_INFO``) as ``/``, as Django does.

    Werkzeug would redirect it to the prefix with a slash instead.
    """

    def app(environ, start_response):
        if not environ.get("PATH_INFO"):
            environ["PATH_INFO"] = "/"
        return wsgi_app(environ, start_response)

    return app
