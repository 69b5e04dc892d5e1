"""Config routes on Starlette's routing API: which backend serves a canonical path.

Prefixes match on segment boundaries (``/v1`` matches ``/v1`` and
``/v1/...``, never ``/v1admin``); the longest matching prefix wins, then the
first route in file order. A route may narrow itself to methods and hosts; a
path that routes match only for other methods gets 405 with the union of
their methods in ``Allow``. ``RouteFields`` are a route's own keys; the
policies add theirs (``gateway.config.RouteConfig`` is assembled from the
policy registry).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Optional

from pydantic import field_validator, model_validator
from starlette.routing import BaseRoute, Match, Router

from gateway import headers as H
from gateway.context import SCOPE_KEY, RequestContext
from gateway.errors import GatewayError
from gateway.paths import BadPath, canonical_path, encode_path, valid_method
from gateway.schema import ByteSize, Schema

ADMIN_PREFIX = "/_stackgate"
_HOST = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class RouteFields(Schema):
    """A ``[[routes]]`` entry's own keys; policies add theirs (``gateway.config.RouteConfig``)."""

    prefix: str
    """Public path prefix, e.g. ``/v1``; ``/`` matches everything."""
    backend: Optional[str] = None
    """Name of a ``[backends.NAME]`` table (or give ``split``)."""
    name: Optional[str] = None
    """Label used in logs and metrics; defaults to the prefix."""
    methods: Optional[list[str]] = None
    """Only these methods (upper case); others get 405. Default: all."""
    hosts: Optional[list[str]] = None
    """Only these Host names (``api.example.com``, ``*.example.com``). Default: any."""
    version: Optional[str] = None
    """Name of a ``[versions.NAME]`` table; sent to the backend as ``X-API-Version``."""
    strip_prefix: bool = True
    """Pass the prefix as ``SCRIPT_NAME`` (true) or leave it in ``PATH_INFO`` (false)."""
    max_body_size: Optional[ByteSize] = None
    """Overrides ``gateway.max_body_size`` for this route."""

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        form = 'must be a path such as "/v1" (a leading "/", no trailing "/", no "//", "." or "..")'
        if value != "/" and (not value.startswith("/") or value.endswith("/")):
            raise ValueError(form)
        try:
            if canonical_path(value.encode("utf-8")) != value:
                raise ValueError(form + "; write it unescaped")
        except BadPath as exc:
            raise ValueError(f"{form}: {exc}") from None
        if value == ADMIN_PREFIX or value.startswith(ADMIN_PREFIX + "/"):
            raise ValueError(f'"{ADMIN_PREFIX}" is reserved for the gateway\'s own endpoints')
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None:
            if not value:
                raise ValueError("must list at least one method, or be left out for all methods")
            for method in value:
                if not valid_method(method):
                    raise ValueError(f'"{method}" is not an upper-case HTTP method such as "GET"')
        return value

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None:
            if not value:
                raise ValueError("must list at least one host, or be left out for any host")
            for host in value:
                if not _HOST.match(host):
                    raise ValueError(f'"{host}" is not a lower-case host name such as "api.example.com" or "*.example.com"')
        return value

    @model_validator(mode="after")
    def _one_target(self) -> "RouteFields":
        if (self.backend is None) == (getattr(self, "split", None) is None):
            raise ValueError('give either "backend" or "split", not both' if self.backend else 'needs "backend" (a backend\'s name) or "split" (backend weights)')
        return self

    @property
    def label(self) -> str:
        return self.name or self.prefix


class Route(BaseRoute):
    """A compiled config route: its config, its policy chain, and how it changes the scope."""

    __slots__ = ("config", "backend", "handler", "root_path", "methods", "hosts", "prefix",
                 "under", "max_body_size", "extra_request_headers", "extra_response_headers")

    def __init__(
        self,
        config: Any,
        backend: object,
        handler: Any,
        root_path: str,
        methods: Optional[frozenset[str]],
        hosts: Optional[tuple[str, ...]],
        extra_request_headers: tuple[tuple[bytes, bytes], ...] = (),
        extra_response_headers: tuple[tuple[bytes, bytes], ...] = (),
        max_body_size: Optional[int] = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.handler = handler
        self.root_path = root_path
        self.methods = methods
        self.hosts = hosts
        self.prefix: str = config.prefix
        # What a path below the prefix starts with (every canonical path, for "/").
        self.under = "/" if config.prefix == "/" else config.prefix + "/"
        self.max_body_size = max_body_size
        self.extra_request_headers = extra_request_headers
        self.extra_response_headers = extra_response_headers

    def __repr__(self) -> str:
        return f"Route(prefix={self.prefix!r}, name={self.config.label!r})"

    def matches_path(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.under)

    def matches_host(self, host: str) -> bool:
        if self.hosts is None:
            return True
        for pattern in self.hosts:
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                    return True
            elif host == pattern:
                return True
        return False

    def allows(self, method: str) -> bool:
        methods = self.methods
        return methods is None or method in methods or (method == "HEAD" and "GET" in methods)

    # Starlette's routing API (``GatewayRouter`` uses the table's faster ``match``)

    def matches(self, scope: Any) -> tuple[Match, dict[str, Any]]:
        if scope["type"] != "http":
            return Match.NONE, {}
        ctx: RequestContext = scope[SCOPE_KEY]
        if not self.matches_path(ctx.path) or not self.matches_host(ctx.host.name):
            return Match.NONE, {}
        return (Match.FULL if self.allows(scope["method"]) else Match.PARTIAL), {}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        from starlette.routing import NoMatchFound

        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        """Check the body limit, build the backend's scope, run the policies and the backend."""
        ctx: RequestContext = scope[SCOPE_KEY]
        method = scope["method"]
        methods = self.methods
        if methods is not None and method not in methods and not (method == "HEAD" and "GET" in methods):
            raise method_not_allowed(method, methods)
        ctx.route = self
        if self.extra_response_headers:
            ctx.response_headers.extend(self.extra_response_headers)
        limit = self.max_body_size
        if limit is None:
            limit = ctx.compiled.config.gateway.max_body_size
        ctx.max_body_size = limit
        host = ctx.host
        path = ctx.path
        # Both stacks build links from these: the Host header and SERVER_NAME/SERVER_PORT (a2wsgi reads ``server``).
        headers, declared, ctx.override = H.forwarded(scope["headers"], host.value.encode())
        if declared is not None:
            check_length(declared, limit)
        headers.append((H.REQUEST_ID, ctx.request_id.encode()))
        if self.extra_request_headers:
            headers.extend(self.extra_request_headers)
        child = dict(scope)
        child["path"] = path
        child["raw_path"] = encode_path(path)
        child["root_path"] = scope.get("root_path", "") + self.root_path
        child["headers"] = headers
        child["server"] = host.server(scope.get("scheme", "http"))
        await self.handler(child, receive, send)


def check_declared_length(headers: list[tuple[bytes, bytes]], limit: int) -> None:
    """400 for a Content-Length that is not a number, 413 for one over ``limit`` (before a backend reads)."""
    declared = H.get(headers, H.CONTENT_LENGTH)
    if declared is not None:
        check_length(declared, limit)


def check_length(declared: bytes, limit: int) -> None:
    """400 for a Content-Length value that is not a number, 413 for one over ``limit``."""
    if not declared.isdigit():
        raise GatewayError(400, "bad_request", "Content-Length must be a non-negative integer.")
    if int(declared) > limit:
        raise GatewayError(413, "body_too_large", f"The request body exceeds the limit of {limit} bytes.")


class NoRoute(Exception):
    pass


class MethodNotAllowed(Exception):
    def __init__(self, allowed: set[str]) -> None:
        super().__init__(allowed)
        self.allowed = allowed


def method_not_allowed(method: str, allowed: Iterable[str]) -> GatewayError:
    allow = ", ".join(sorted(allowed)).encode()
    return GatewayError(405, "method_not_allowed", f'Method "{method}" not allowed.', [(b"allow", allow)])


class RouteTable:
    """Config routes ordered for matching: longest prefix first, then file order."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = sorted(routes, key=lambda r: -len(r.prefix) if r.prefix != "/" else 0)

    def match(self, path: str, method: str, host: str) -> Route:
        allowed: set[str] = set()
        path_matched = False
        for route in self.routes:
            if not (path == route.prefix or path.startswith(route.under)):
                continue
            if route.hosts is not None and not route.matches_host(host):
                continue
            path_matched = True
            methods = route.methods
            if methods is None or method in methods or (method == "HEAD" and "GET" in methods):
                return route
            allowed |= route.methods  # type: ignore[arg-type]  # allows() is true when None
        if path_matched:
            raise MethodNotAllowed(allowed)
        raise NoRoute()


class GatewayRouter(Router):
    """Starlette's ``Router`` for the gateway: user routes first, then the config's route table.

    The routes a request sees are those of the compiled config it was admitted
    with (``RequestContext.compiled``), so a reload never changes a request in
    flight. A path that routes match only for other methods gets 405 with the
    union of their methods in ``Allow``; no match at all gets 404 ``route_not_found``.
    """

    def __init__(self, gateway: Any, lifespan: Any = None) -> None:
        super().__init__(redirect_slashes=False, lifespan=lifespan)
        self._gateway = gateway

    @property  # type: ignore[override]
    def routes(self) -> list[BaseRoute]:
        compiled = self._gateway.compiled
        return [*compiled.user_routes, *compiled.table.routes]

    @routes.setter
    def routes(self, value: list[BaseRoute]) -> None:
        if value:
            raise TypeError("add routes with create_app(routes=...), add_route() or mount(), or [[routes]] in the config")

    def mount(self, path: str, app: Any = None, routes: Any = None, name: Optional[str] = None) -> None:
        from starlette.routing import Mount

        self._gateway.add_user_route(Mount(path, app=app, routes=routes, name=name))

    def host(self, host: str, app: Any, name: Optional[str] = None) -> None:
        from starlette.routing import Host

        self._gateway.add_user_route(Host(host, app=app, name=name))

    def add_route(self, path: str, endpoint: Any, methods: Any = None, name: Optional[str] = None, include_in_schema: bool = True) -> None:
        from starlette.routing import Route as StarletteRoute

        self._gateway.add_user_route(
            StarletteRoute(path, endpoint=endpoint, methods=methods, name=name, include_in_schema=include_in_schema)
        )

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().app(scope, receive, send)
            return
        if "router" not in scope:
            scope["router"] = self
        ctx: RequestContext = scope[SCOPE_KEY]
        compiled = ctx.compiled
        method = scope["method"]
        allowed: set[str] = set()
        if compiled.user_routes:
            for user_route in compiled.user_routes:
                match, child_scope = user_route.matches(scope)
                if match is Match.FULL:
                    scope["route"] = user_route
                    scope.update(child_scope)
                    await user_route.handle(scope, receive, send)
                    return
                if match is Match.PARTIAL:
                    allowed |= set(getattr(user_route, "methods", None) or ())
        try:
            route = compiled.table.match(ctx.path, method, ctx.host.name)
        except NoRoute:
            if allowed:
                raise method_not_allowed(method, allowed) from None
            raise GatewayError(404, "route_not_found", f"No route for {method} {ctx.path}.") from None
        except MethodNotAllowed as exc:
            raise method_not_allowed(method, exc.allowed | allowed) from None
        scope["route"] = route
        await route.handle(scope, receive, send)
