"""``create_app(config)``: the gateway, a Starlette application.

One request flows one way::

    Edge (pure ASGI, outermost): request id + context, canonical path, host, /_stackgate/,
        errors as JSON, access log and metrics
    -> user middleware ([gateway] middleware, ``middleware=``)
    -> Starlette's ExceptionMiddleware (GatewayError and HTTPException -> the JSON shape)
    -> GatewayRouter: user routes, then the config's routes (``gateway.routing``)
    -> policies (``gateway.policies``) -> backend

Everything derivable from the config is compiled once into a ``Compiled``;
a request reads ``app.compiled`` once, at its start (``RequestContext.compiled``),
so a reload that swaps it never changes a request in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable, Mapping, Optional, Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from gateway import headers as H
from gateway import logs, metrics, reload, telemetry
from gateway.edge import settings as server_settings
from gateway.admin import AdminApp
from gateway.backends import build_backend
from gateway.backends.wsgi import ClientDisconnected
from gateway.config import Config
from gateway.context import NON_ORIGIN_FORM, SCOPE_KEY, RequestContext, Services
from gateway.edge import heap
from gateway.edge.protocol import TWO_HOSTS
from gateway.errors import GatewayError, error_response, send_error, send_gateway_error
from gateway.host import BAD_HOST, HOST_NOT_ALLOWED, MISSING, AllowedHosts, BadHost, ForwardedHost, Host
from gateway.host import parse as parse_host
from gateway.paths import BadPath, canonical_path, valid_method
from gateway.policies import WithPolicies, build_chain, versions
from gateway.policies import auth as auth_policy
from gateway.routing import ADMIN_PREFIX, GatewayRouter, Route, RouteTable
from gateway.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("stackgate")

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def new_request_id() -> str:
    """32 hex digits, unique per process start (random) and request (counter); no syscall."""
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


@dataclass(frozen=True)
class Compiled:
    """A compiled config: what every request needs, built once."""

    config: Config
    table: RouteTable
    user_routes: tuple[BaseRoute, ...]
    user_chains: dict[int, tuple[Any, ASGIApp]]
    """``with_policies`` wrappers in user routes -> (config route, policy chain)."""
    proxies: Optional[ASGIApp]
    """The trusted-proxy layers in front of the edge's handler (None without ``trusted_proxies``)."""
    allowed_hosts: AllowedHosts


def compile_config(
    config: Config, services: Services, user_routes: tuple[BaseRoute, ...] = (), inner: Optional[ASGIApp] = None
) -> Compiled:
    """Build the route table, each route's policy chain and the proxy layers for ``config``."""
    routes: list[Route] = []
    version_prefix = {r.version: r.prefix for r in config.routes if r.version is not None}
    backends = services.backends
    for route_config in config.routes:
        request_headers: list[tuple[bytes, bytes]] = []
        response_headers: tuple[tuple[bytes, bytes], ...] = ()
        if route_config.version is not None:
            version = config.versions[route_config.version]
            request_headers.append((H.API_VERSION, route_config.version.encode()))
            successor = version_prefix.get(version.successor) if version.successor else None
            response_headers = versions.response_headers(version, successor)
        routes.append(
            Route(
                config=route_config,
                backend=backends.get(route_config.backend),
                handler=build_chain(backends.get(route_config.backend), route_config, config, services),
                root_path=route_config.prefix if route_config.strip_prefix and route_config.prefix != "/" else "",
                methods=frozenset(route_config.methods) if route_config.methods else None,
                hosts=tuple(route_config.hosts) if route_config.hosts else None,
                extra_request_headers=tuple(request_headers),
                extra_response_headers=response_headers,
                max_body_size=route_config.max_body_size or config.gateway.max_body_size,
            )
        )
    proxies = None
    if config.gateway.trusted_proxies and inner is not None:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        proxies = ProxyHeadersMiddleware(inner, trusted_hosts=list(config.gateway.trusted_proxies))
        proxies = ForwardedHost(proxies, config.gateway.trusted_proxies)  # outside: it must see the peer itself
    user_chains = {id(wrapped): wrapped.build(config, services) for wrapped in _with_policies(user_routes)}
    return Compiled(
        config=config,
        table=RouteTable(routes),
        user_routes=user_routes,
        user_chains=user_chains,
        proxies=proxies,
        allowed_hosts=AllowedHosts(config.gateway.allowed_hosts),
    )


def _with_policies(routes: Iterable[BaseRoute]) -> Iterable[WithPolicies]:
    """Every ``with_policies`` app in user routes, in ``Mount``s' routes too."""
    for route in routes:
        app = getattr(route, "app", None)
        if isinstance(app, WithPolicies):
            yield app
        yield from _with_policies(getattr(route, "routes", None) or ())


def request_host(scope: Scope, forwarded: Optional[bytes] = None) -> Host:
    """The request's one host (``gateway.host``): a trusted proxy's ``X-Forwarded-Host``, else ``Host``."""
    value = None
    for name, given in scope["headers"]:
        if name == b"host":
            if value is not None:  # a backend would see both, joined: route on neither
                raise GatewayError(*TWO_HOSTS)
            value = given
    if forwarded is not None:
        value = forwarded
    if value is None:
        raise GatewayError(400, BAD_HOST, MISSING)
    try:
        return parse_host(value, scope.get("scheme", "http"))
    except BadHost as exc:
        raise GatewayError(400, BAD_HOST, str(exc)) from None


def _not_allowed(host: Host) -> GatewayError:
    return GatewayError(421, HOST_NOT_ALLOWED, f'The host "{host.name}" is not served here: [gateway] allowed_hosts does not list it.')


async def gateway_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: a ``GatewayError`` -> the JSON error shape (counted per route)."""
    assert isinstance(exc, GatewayError)
    ctx: RequestContext = request.scope[SCOPE_KEY]
    _count(ctx, exc)
    return error_response(exc, ctx.request_id)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "body_too_large", 429: "rate_limited"}


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's ``HTTPException`` (user routes, mounted apps) -> the JSON error shape."""
    assert isinstance(exc, HTTPException)
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(GatewayError(exc.status_code, code, str(exc.detail), headers), request.scope[SCOPE_KEY].request_id)


class _ExceptionHandlers(ExceptionMiddleware):
    """Starlette's ``ExceptionMiddleware``, the same handlers, without its per-request ``send`` wrapper.

    The edge already tracks whether a response began (``RequestContext.response_started``);
    the wrapper cost about a microsecond a request (docs/performance.md).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["starlette.exception_handlers"] = (self._exception_handlers, self._status_handlers)
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            handler = None
            if isinstance(exc, HTTPException):
                handler = self._status_handlers.get(exc.status_code)
            if handler is None:
                handler = next((self._exception_handlers[c] for c in type(exc).__mro__ if c in self._exception_handlers), None)
            if handler is None:
                raise
            if scope[SCOPE_KEY].response_started:
                raise RuntimeError("Caught handled exception, but response already started.") from exc
            request = Request(scope, receive, send)
            if asyncio.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
            if response is not None:
                await response(scope, receive, send)
            exc.__traceback__ = None  # a reused exception instance would collect tracebacks


class Edge:
    """The outermost layer (pure ASGI): everything every request gets, whatever serves it."""

    def __init__(self, app: ASGIApp, gateway: "Gateway") -> None:
        self.app = app
        self.gateway = gateway
        gateway._edge = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            elif scope["type"] == "websocket":
                await _refuse_websocket(scope, send)
            return
        ctx: Optional[RequestContext] = scope.pop(_PROXIED, None)
        if ctx is None:
            compiled: Compiled = self.gateway.compiled
            given = H.get(scope["headers"], H.REQUEST_ID)
            request_id = given.decode() if given is not None and _REQUEST_ID.match(given) else new_request_id()
            ctx = scope[SCOPE_KEY] = RequestContext(request_id=request_id, started=time.perf_counter(), compiled=compiled)
            if compiled.proxies is not None:
                # The trusted-proxy layers run first and come back here (``_ToEdge``) with the context set.
                await compiled.proxies(scope, receive, send)
                return
        else:
            compiled = ctx.compiled
            request_id = ctx.request_id
        out_headers = ctx.response_headers
        out_headers.append((H.REQUEST_ID, request_id.encode()))
        status = 0
        admin = False

        async def send_out(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                ctx.response_started = True
                status = ctx.status = message["status"]
                message["headers"] = [*message.get("headers", ()), *out_headers]
            await send(message)

        try:
            method = scope["method"]
            if not valid_method(method):
                raise GatewayError(400, "bad_method", "The request method must be an upper-case token such as GET.")
            if scope.get(NON_ORIGIN_FORM):
                raise GatewayError(400, "bad_path", "The request target must be a path starting with '/' (origin form).")
            try:
                path = ctx.path = canonical_path(scope.get("raw_path") or scope["path"].encode("utf-8"))
            except BadPath as exc:
                raise GatewayError(400, "bad_path", str(exc)) from None
            host = ctx.host = request_host(scope, ctx.forwarded_host)

            if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
                # Not held to allowed_hosts: probes and scrapers come by address, and nothing here links to the host.
                admin = True  # the gateway's own traffic is logged, not counted
                await self.gateway.admin(scope, receive, send_out, path)
                return
            if not compiled.allowed_hosts.allows(host.name):
                raise _not_allowed(host)
            await self.app(scope, receive, send_out)
        except GatewayError as exc:
            if ctx.response_started:
                raise
            _count(ctx, exc)
            await send_gateway_error(send_out, exc, request_id)
        except ClientDisconnected:
            status = status or 499
        except asyncio.CancelledError:
            # The server's graceful shutdown timed out on this request: answer it, then let the cancel go on.
            if not ctx.response_started:
                await send_error(
                    send_out, 503, "shutting_down", "The gateway is shutting down; retry.", request_id,
                    [(b"retry-after", b"1"), (b"connection", b"close")],
                )
            raise
        except Exception as exc:
            if isinstance(exc.__cause__, GatewayError) and ctx.response_started:
                raise exc.__cause__ from None  # Starlette's "response already started": the gateway's own error
            route = ctx.route
            logger.exception("request %s failed in backend %s", request_id, route.config.backend if route else "-")
            if ctx.response_started:
                # The server closes the connection: a truncated body must not look complete.
                raise logs.Logged(f"request {request_id}: the backend failed after the response began") from None
            await send_error(send_out, 502, "backend_error", "The backend failed to answer.", request_id)
        finally:
            duration = time.perf_counter() - ctx.started
            route = ctx.route
            if admin:
                route_label = ADMIN_PREFIX
            elif route is not None:
                route_label = route.config.label
            else:
                user_route = scope.get("route")
                route_label = getattr(user_route, "path", None) or "-"
            backend_name = ctx.backend or (route.config.backend if route is not None and route.config.backend else "-")
            if not admin:
                metrics.observe_request(route_label, backend_name, status, duration)
            host = ctx.host
            logs.access(
                {
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "host": host.value if host is not None else None,
                    "route": route_label,
                    "backend": backend_name,
                    "identity": ctx.identity,
                    "status": status,
                    "duration_ms": round(duration * 1000, 3),
                }
            )


_PROXIED = "stackgate.proxied"
"""Set by ``_ToEdge`` for the edge's second pass: the request's context, admitted already."""


class _ToEdge:
    """The trusted-proxy layers' inner app: the edge's handler (the edge is built on the first request)."""

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_PROXIED] = scope[SCOPE_KEY]
        await self.gateway._edge(scope, receive, send)


class Gateway(Starlette):
    """The Starlette application ``create_app`` returns."""

    def __init__(
        self,
        config: Config,
        *,
        middleware: Sequence[Middleware] = (),
        routes: Sequence[BaseRoute] = (),
        exception_handlers: Optional[Mapping[Any, Callable]] = None,
        watch: bool = False,
        freeze_gc: bool = False,
    ) -> None:
        super().__init__(
            middleware=[*_config_middleware(config), *middleware],
            exception_handlers=exception_handlers,
            lifespan=self._lifespan,
        )
        self.router = GatewayRouter(self, lifespan=self._lifespan)
        self.freeze_gc = freeze_gc
        self.tracing = telemetry.install(config)  # [telemetry]: before the stacks are imported; None when off
        self.services = Services(backends={name: build_backend(name, cfg) for name, cfg in config.backends.items()})
        self.user_routes = tuple(routes)
        self._edge: Optional[Edge] = None
        self._outer: list[Callable[[ASGIApp], ASGIApp]] = []
        if self.tracing is not None:
            self._outer.append(self.tracing.server_layer(self))
        self.compiled = compile_config(config, self.services, self.user_routes, _ToEdge(self))
        self.admin = AdminApp(self)
        self._sampler: Optional[asyncio.Task] = None
        self._refreeze: Optional[asyncio.Future] = None
        self.reloader = None
        if watch and config.source != "<memory>":
            from gateway.reload import Reloader

            # Late-bound: a test (or a subclass) may replace ``apply``.
            self.reloader = Reloader(
                config, config.source, apply=lambda c: self.apply(c), restart_needed=lambda c: self.restart_needed(c)
            )

    @property
    def backends(self) -> dict[str, Any]:
        return self.services.backends

    def build_middleware_stack(self) -> ASGIApp:
        """Edge -> user middleware -> ExceptionMiddleware -> router (no ServerErrorMiddleware: every error is JSON)."""
        handlers: dict[Any, Callable] = {GatewayError: gateway_error_handler, HTTPException: http_exception_handler}
        handlers.update(self.exception_handlers)
        app: ASGIApp = _ExceptionHandlers(self.router.app, handlers=handlers, debug=self.debug)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        app = Edge(app, self)
        for wrap in self._outer:
            app = wrap(app)
        return app

    def wrap_outside(self, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
        """Put a layer outside the edge (the bootstrap checks): it sees every message, lifespan included."""
        if self.middleware_stack is not None:
            raise RuntimeError("Cannot add a layer after the application has started")
        self._outer.append(wrap)

    def add_user_route(self, route: BaseRoute) -> None:
        """One more user route, after those given (``add_route``, ``mount`` and ``host`` come here)."""
        self.user_routes = (*self.user_routes, route)
        self.apply(self.compiled.config)

    def apply(self, config: Config) -> None:
        """Swap in a new config (one assignment: requests in flight keep the state they hold)."""
        self.compiled = compile_config(config, self.services, self.user_routes, _ToEdge(self))

    def restart_needed(self, config: Config) -> list[str]:
        """What in ``config`` cannot be applied without a restart (backends are built once)."""
        backends = self.services.backends
        problems = []
        for name in sorted(set(backends) | set(config.backends)):
            loc = f"{config.source}: backends.{name}"
            if name not in config.backends:
                problems.append(f"{loc}: removed; a restart is needed to remove a backend")
            elif name not in backends:
                problems.append(f"{loc}: added; a restart is needed to add a backend")
            elif backends[name].restart_key() != config.backends[name]:
                changed = sorted(
                    key
                    for key in type(config.backends[name]).model_fields
                    if getattr(backends[name].config, key, None) != getattr(config.backends[name], key, None)
                )
                problems.append(f"{loc}: {', '.join(changed)} changed; a restart is needed to rebuild a backend")
        problems.extend(server_settings.restart_needed(self.compiled.config.server, config.server, config.source))
        problems.extend(telemetry.restart_needed(self.compiled.config.telemetry, config.telemetry, config.source))
        if _middleware_key(config) != _middleware_key(self.compiled.config):
            problems.append(f"{config.source}: gateway.middleware: changed; a restart is needed to rebuild the middleware")
        return problems

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Any) -> AsyncIterator[None]:
        services = self.services
        if self.tracing is not None:
            self.tracing.start()  # the export thread: in this worker, after the fork
        for backend in services.backends.values():
            await backend.startup()
        if services.shadow_process is not None:
            await services.shadow_process.warm()
        metrics.forget_dead_workers()
        auth_policy.start_fetching(self.compiled.config)  # OpenID keys: in this worker, in the background
        if self.reloader is not None:
            await self.reloader.start()
        else:
            reload.on_sighup(_sighup_ignored)
        self._sampler = asyncio.ensure_future(self.admin.series.run())
        if services.rollout is not None:
            await services.rollout.start()  # gated rollouts: follow the shared step before serving
        if self.freeze_gc:
            heap.freeze_loaded_objects()
            self._refreeze = asyncio.ensure_future(heap.Refreeze().run())
        try:
            yield
        finally:
            if self.reloader is not None:
                await self.reloader.stop()
            if self._sampler is not None:
                self._sampler.cancel()
            if services.rollout is not None:
                await services.rollout.stop()
            if self._refreeze is not None:
                self._refreeze.cancel()
            if services.shadow_process is not None:
                await services.shadow_process.aclose()
            for backend in services.backends.values():
                await backend.shutdown()
            if services.throttle is not None:
                await services.throttle.aclose()
            if self.tracing is not None:
                await asyncio.to_thread(self.tracing.shutdown)  # bounded by export_timeout
            metrics.mark_process_dead(os.getpid())
            logs.flush()

    async def readiness(self) -> dict[str, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {
            f"backend:{name}": {"ok": True, "kind": backend.kind} for name, backend in self.services.backends.items()
        }
        limiter = self.services.throttle
        if limiter is not None:
            checks["throttle_store"] = {"ok": await limiter.healthy(), "storage": limiter.settings_key[0].split("@")[-1]}
        checks.update(auth_policy.readiness(self.compiled.config))
        return checks

    async def require_admin(self, scope: Scope) -> None:
        """401/403 unless the request carries credentials of a consumer with an admin role."""
        from gateway.policies.auth import require

        config = self.compiled.config
        await require(scope, config, config.gateway.admin_roles)

    def status(self) -> dict[str, Any]:
        config = self.compiled.config
        last = self.reloader.last if self.reloader else {"ok": True, "version": config.digest, "message": "not watching", "problems": []}
        return {
            "version": config.digest, "source": config.source, "watching": self.reloader is not None, "last_reload": last,
            "server": config.server.model_dump(),  # the [server] table, environment overrides applied
        }

    def route_summary(self) -> list[dict[str, Any]]:
        out = []
        for route in self.compiled.config.routes:
            split = getattr(route, "split", None)
            out.append(
                {
                    "name": route.label,
                    "prefix": route.prefix,
                    "backends": self._rollout_weights(route) or (dict(split) if split else {route.backend: 100}),
                    "auth": getattr(route, "auth", None),
                    "roles": list(getattr(route, "roles", None) or []),
                    "throttle": getattr(route, "throttle", None),
                    "mirror": bool(getattr(route, "mirror", False)),
                    "rollout": getattr(route, "rollout", None) is not None,
                    "version": route.version,
                }
            )
        return out

    def _rollout_weights(self, route: Any) -> Optional[dict[str, float]]:
        """A route's weights as its running rollout sets them (None without one)."""
        manager = self.services.rollout
        runtime = manager.routes.get(route.label) if manager is not None and getattr(route, "rollout", None) else None
        return {name.decode(): weight for name, weight in runtime.weights} if runtime is not None else None

    def mirror_stats(self) -> dict[str, Any]:
        """Per mirrored route; with ``--workers N`` the counts are summed over every worker (docs/migration.md)."""
        registry = self.services.mirror or {}
        shared = None
        if metrics.MULTIPROCESS:
            from gateway.shadow.report import mirror_totals

            shared = mirror_totals()
        return {label: stats.as_dict(None if shared is None else shared.get(label, {})) for label, stats in registry.items()}


def _count(ctx: RequestContext, exc: GatewayError) -> None:
    route = ctx.route
    if route is not None:
        _count_refusal(route.config.label, exc)
    elif exc.code in (BAD_HOST, HOST_NOT_ALLOWED):
        metrics.HOSTS_REFUSED.labels(exc.code).inc()


def _config_middleware(config: Config) -> list[Middleware]:
    """``[gateway] middleware``: each ``use`` imported, with its ``options`` as keyword arguments."""
    from gateway.backends.base import load_app

    return [Middleware(load_app(entry.use), **entry.options) for entry in config.gateway.middleware]


def _middleware_key(config: Config) -> list:
    return [(entry.use, entry.options) for entry in config.gateway.middleware]


WEBSOCKET_REFUSED = "WebSocket connections are not supported by this gateway."


async def _refuse_websocket(scope: Scope, send: Send) -> None:
    """No route takes WebSockets: a 403 in the JSON shape where the server can send one, a close otherwise."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})  # the server answers a bare 403
        return

    async def as_denial(message: dict) -> None:  # http.response.* -> websocket.http.response.*
        await send({**message, "type": "websocket." + message["type"]})

    request_id = new_request_id()
    await send_error(as_denial, 403, "forbidden", WEBSOCKET_REFUSED, request_id, [(H.REQUEST_ID, request_id.encode())])


def _count_refusal(route: str, exc: GatewayError) -> None:
    if exc.status in (401, 403):
        metrics.AUTH_FAILURES.labels(route, str(exc.status)).inc()
    elif exc.code == "rate_limited":
        metrics.THROTTLED.labels(route).inc()


def _sighup_ignored() -> None:
    """Not watching (``STACKGATE_WATCH=0``): SIGHUP, the usual reload signal, must not end the process."""
    logger.warning("SIGHUP ignored: the config is not watched (STACKGATE_WATCH=0); restart to apply a change")


def create_app(
    config: Config,
    *,
    middleware: Iterable[Middleware] = (),
    routes: Iterable[BaseRoute] = (),
    exception_handlers: Optional[Mapping[Any, Callable]] = None,
    watch: bool = False,
    freeze_gc: bool = False,
) -> Gateway:
    """Build the gateway, a ``Starlette`` app, for a validated config (imports every backend's app).

    ``middleware`` (Starlette ``Middleware``) wraps the gateway inside the
    request-id/error layer, after ``[gateway] middleware``; ``routes``
    (Starlette routes) are tried before the config's routes; see docs/extending.md.
    ``watch`` reloads the config file when it changes (and on SIGHUP);
    ``freeze_gc`` freezes what startup loaded, and again what the first requests loaded
    (``gateway.edge.heap``), for a server process.
    """
    return Gateway(
        config, middleware=list(middleware), routes=list(routes), exception_handlers=exception_handlers,
        watch=watch, freeze_gc=freeze_gc,
    )
