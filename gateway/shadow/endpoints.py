"""Endpoint names for the migration report: the method plus the stack's own route template.

A split route's requests are grouped by endpoint: ``GET /api/todos/{pk}``. The
template comes from the first backend of the split that can say (Django's URL
resolver, a Flask app's ``url_map``), so both variants of one request share a
name; otherwise the path with its ids folded (``/todos/{id}``). A route keeps
at most ``ENDPOINTS_MAX`` names; the rest are ``OTHER_ENDPOINT``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from gateway.openapi.sources import _unwrapped  # the same wrappers the OpenAPI introspection looks through

#: Endpoints one route names; more are counted as ``OTHER_ENDPOINT`` (bounded metric labels).
ENDPOINTS_MAX = 40
OTHER_ENDPOINT = "(other)"
_CACHE_MAX = 4096

_ID_SEGMENT = re.compile(r"^(\d+|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}|[0-9a-fA-F]{16,})$")
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>(?:[^()]|\([^()]*\))*\)")
_FLASK_ARG = re.compile(r"<(?:[^:<>]+:)?(\w+)>")
_DJANGO_ARG = _FLASK_ARG

Resolver = Callable[[str, str], Optional[str]]


def fold_path(path: str) -> str:
    """``/todos/42/`` -> ``/todos/{id}/``: numbers, UUIDs and long hex segments are ids."""
    return "/".join("{id}" if _ID_SEGMENT.match(part) else part for part in path.split("/"))


def _django_template(route: str) -> str:
    """``todos/<int:pk>`` or DRF's ``^todos/(?P<pk>[^/.]+)/?$`` -> ``/todos/{pk}``."""
    text = _NAMED_GROUP.sub(lambda m: "{" + m.group(1) + "}", route)
    text = _DJANGO_ARG.sub(lambda m: "{" + m.group(1) + "}", text)
    text = text.lstrip("^").rstrip("$")
    if text.endswith("/?"):
        text = text[:-2]
    text = text.replace("\\.", ".").replace("\\", "")
    return "/" + text.lstrip("/")


def resolver(app: Any) -> Optional[Resolver]:
    """``(method, path_info) -> template or None`` for a Django or Flask app (or what wraps one), else None."""
    from gateway.openapi.drf import is_django_app
    from gateway.openapi.flask_restful import is_flask_app

    for inner in _unwrapped(app):
        if is_django_app(inner):
            return _django_resolver()
        if is_flask_app(inner):
            return _flask_resolver(inner)
    return None


def _django_resolver() -> Resolver:
    from django.urls import Resolver404, resolve

    def template(method: str, path: str) -> Optional[str]:
        try:
            match = resolve(path)
        except Resolver404:
            return None
        return _django_template(match.route) if match.route else None

    return template


def _flask_resolver(app: Any) -> Resolver:
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect

    adapter = app.url_map.bind("localhost")

    def template(method: str, path: str) -> Optional[str]:
        try:
            rule, _ = adapter.match(path, method=method, return_rule=True)
        except (HTTPException, RequestRedirect):
            return None
        return _FLASK_ARG.sub(lambda m: "{" + m.group(1) + "}", rule.rule)

    return template


class Endpoints:
    """One split route's endpoint names; ``name(scope)`` is cached by method and folded path."""

    def __init__(self, resolvers: list[tuple[str, Resolver]]) -> None:
        self.resolvers = resolvers
        self.names: set[str] = set()
        self.examples: dict[str, tuple[str, str, str]] = {}
        """Endpoint -> one (method, mount, path inside it) it was seen with, to ask each stack its template."""
        self._cache: dict[tuple[str, str, str], str] = {}

    def name(self, scope: Any) -> str:
        method, root = scope["method"], scope.get("root_path", "")
        path = scope["path"]
        path_info = path[len(root):] if root and path.startswith(root) else path
        folded = fold_path(path_info)
        key = (method, root, folded)
        found = self._cache.get(key)
        if found is not None:
            return found
        template = None
        for _, resolve in self.resolvers:
            try:
                template = resolve(method, path_info or "/")
            except Exception:  # a stack's resolver must never fail a request
                template = None
            if template:
                break
        name = f"{method} {root}{template or folded}"
        if name not in self.names:
            if len(self.names) >= ENDPOINTS_MAX:
                name = OTHER_ENDPOINT
            else:
                self.names.add(name)
                self.examples[name] = (method, root, path_info)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = name
        return name

    def templates(self, endpoint: str) -> dict[str, str]:
        """Each stack's own template for ``endpoint`` (those that have one)."""
        example = self.examples.get(endpoint)
        out: dict[str, str] = {}
        if example is None:
            return out
        method, root, path_info = example
        for backend, resolve in self.resolvers:
            try:
                template = resolve(method, path_info or "/")
            except Exception:
                template = None
            if template:
                out[backend] = root + template
        return out


def for_route(route: Any, backends: dict[str, Any]) -> Endpoints:
    resolvers = []
    for name in route.split:
        app = getattr(backends.get(name), "app", None)
        if app is not None:
            try:
                found = resolver(app)
            except Exception:  # pragma: no cover - an app that cannot be looked into: folded paths
                found = None
            if found is not None:
                resolvers.append((name, found))
    return Endpoints(resolvers)
