"""Where each backend's own OpenAPI document comes from.

In order: the backend's ``openapi`` key (a file path, relative to the config
file, or an ``http(s)://`` URL; ``"none"`` leaves the backend out), else what
its app is (or wraps, as WhiteNoise does): a Django project
(drf-spectacular, ``drf.py``) or a Flask app (``flask_restful.py``). Other backends have no document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from gateway.backends.base import load_app

NONE = "none"


class SchemaSourceError(Exception):
    """A backend's document could not be produced; the message says which and why."""


def _read(where: str, base: Path) -> dict[str, Any]:
    if where.startswith(("http://", "https://")):
        import httpx

        response = httpx.get(where, timeout=10, follow_redirects=True)
        response.raise_for_status()
        text = response.text
    else:
        path = Path(where)
        text = (path if path.is_absolute() else base / path).read_text(encoding="utf-8")
    if where.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def _unwrapped(app: Any, depth: int = 3) -> list[Any]:
    """``app`` and what common WSGI wrappers hold (WhiteNoise's ``application``, ``app``, ``__wrapped__``)."""
    out = [app]
    for _ in range(depth):
        inner = next((getattr(app, name) for name in ("application", "app", "__wrapped__") if getattr(app, name, None) is not None), None)
        if inner is None or inner is app:
            break
        out.append(inner)
        app = inner
    return out


def stack_document(name: str, backend_config: Any, config_dir: Path) -> Optional[dict[str, Any]]:
    """The OpenAPI document backend ``name`` describes itself with, or None."""
    where = getattr(backend_config, "openapi", None)
    try:
        if where == NONE:
            return None
        if where:
            return _read(where, config_dir)
        import_string = getattr(backend_config, "app", None)
        if not import_string:
            return None
        from gateway.openapi.drf import drf_document, is_django_app
        from gateway.openapi.flask_restful import flask_document, is_flask_app

        for app in _unwrapped(load_app(import_string)):
            if is_django_app(app):
                return drf_document(app)
            if is_flask_app(app):
                return flask_document(app, title=name)
        return None
    except Exception as exc:  # one stack's failure must not hide the others
        raise SchemaSourceError(f"backends.{name}: no OpenAPI document: {type(exc).__name__}: {exc}") from exc
