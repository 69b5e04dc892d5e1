"""``create_app(config)``: the gateway as one pure ASGI callable.

One request flows one way::

    canonical path, request id, host (``gateway.host``) -> route table -> policies -> backend
    <- response headers added on the way out (X-Request-ID, Deprecation, ...)

Everything derivable from the config is compiled once into a ``State``;
a request reads ``self.state`` once at its start, so a reload that swaps it
never changes a request in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from gateway import headers as H
from gateway import logs, metrics, reload
from gateway.edge import heap
from gateway.edge import settings as server_settings
from gateway.admin import AdminApp
from gateway.backends import build_backend
from gateway.backends.wsgi import ClientDisconnected
from gateway.config import Config
from gateway.errors import GatewayError, send_error, send_gateway_error
from gateway.host import BAD_HOST, FORWARDED_HOST, HOST_NOT_ALLOWED, MISSING, AllowedHosts, BadHost, ForwardedHost, Host
from gateway.host import parse as parse_host
from gateway.paths import BadPath, canonical_path, encode_path, valid_method
from gateway.policies import Runtime, build_chain, versions
from gateway.routing import ADMIN_PREFIX, MethodNotAllowed, NoRoute, Route, RouteTable
from gateway.edge.protocol import TWO_HOSTS
from gateway.types import Receive, Scope, Send

logger = logging.getLogger("stackgate")

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def new_request_id() -> str:
    """32 hex digits, unique per process start (random) and request (counter); no syscall."""
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


@dataclass(frozen=True)
class State:
    """A compiled config: what every request needs, built once."""

    config: Config
    table: RouteTable
    entry: Any
    allowed_hosts: AllowedHosts


def compile_state(config: Config, backends: dict[str, Any], runtime: Runtime, handler: Any) -> State:
    routes: list[Route] = []
    version_prefix = {r.version: r.prefix for r in config.routes if r.version is not None}
    runtime["backends"] = backends
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
                handler=build_chain(backends.get(route_config.backend), route_config, config, runtime),
                root_path=route_config.prefix if route_config.strip_prefix and route_config.prefix != "/" else "",
                methods=frozenset(route_config.methods) if route_config.methods else None,
                hosts=tuple(route_config.hosts) if route_config.hosts else None,
                extra_request_headers=tuple(request_headers),
                extra_response_headers=response_headers,
            )
        )
    entry = handler
    if config.gateway.trusted_proxies:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        entry = ProxyHeadersMiddleware(handler, trusted_hosts=list(config.gateway.trusted_proxies))
        entry = ForwardedHost(entry, config.gateway.trusted_proxies)  # outside: it must see the peer itself
    return State(config=config, table=RouteTable(routes), entry=entry, allowed_hosts=AllowedHosts(config.gateway.allowed_hosts))


def request_host(scope: Scope) -> Host:
    """The request's one host (``gateway.host``): a trusted proxy's ``X-Forwarded-Host``, else ``Host``."""
    value = None
    for name, given in scope["headers"]:
        if name == b"host":
            if value is not None:  # a backend would see both, joined: route on neither
                raise GatewayError(*TWO_HOSTS)
            value = given
    value = scope.get(FORWARDED_HOST, value)
    if value is None:
        raise GatewayError(400, BAD_HOST, MISSING)
    try:
        return parse_host(value, scope.get("scheme", "http"))
    except BadHost as exc:
        raise GatewayError(400, BAD_HOST, str(exc)) from None


def _not_allowed(host: Host) -> GatewayError:
    return GatewayError(421, HOST_NOT_ALLOWED, f'The host "{host.name}" is not served here: [gateway] allowed_hosts does not list it.')


class Gateway:
    """The ASGI application ``create_app`` returns."""

    def __init__(self, config: Config, watch: bool = False, freeze_gc: bool = False) -> None:
        self.freeze_gc = freeze_gc
        self.backends = {name: build_backend(name, cfg) for name, cfg in config.backends.items()}
        self.runtime = Runtime()
        self.state = compile_state(config, self.backends, self.runtime, self._handle)
        self.admin = AdminApp(self)
        self._sampler: Optional[asyncio.Task] = None
        self._refreeze: Optional[asyncio.Future] = None
        self.reloader = None
        if watch and config.source != "<memory>":
            from gateway.reload import Reloader

            self.reloader = Reloader(self, config.source)

    def apply(self, config: Config) -> None:
        """Swap in a new config (one assignment: requests in flight keep the state they hold)."""
        self.state = compile_state(config, self.backends, self.runtime, self._handle)

    def restart_needed(self, config: Config) -> list[str]:
        """What in ``config`` cannot be applied without a restart (backends are built once)."""
        problems = []
        for name in sorted(set(self.backends) | set(config.backends)):
            loc = f"{config.source}: backends.{name}"
            if name not in config.backends:
                problems.append(f"{loc}: removed; a restart is needed to remove a backend")
            elif name not in self.backends:
                problems.append(f"{loc}: added; a restart is needed to add a backend")
            elif self.backends[name].restart_key() != config.backends[name]:
                changed = sorted(
                    key
                    for key in type(config.backends[name]).model_fields
                    if getattr(self.backends[name].config, key, None) != getattr(config.backends[name], key, None)
                )
                problems.append(f"{loc}: {', '.join(changed)} changed; a restart is needed to rebuild a backend")
        problems.extend(server_settings.restart_needed(self.state.config.server, config.server, config.source))
        return problems

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.state.entry(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await _refuse_websocket(scope, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    for backend in self.backends.values():
                        await backend.startup()
                    shadow = self.runtime.get("shadow_process")
                    if shadow is not None:
                        await shadow.warm()
                    metrics.forget_dead_workers()
                    if self.reloader is not None:
                        await self.reloader.start()
                    else:
                        reload.on_sighup(_sighup_ignored)
                    self._sampler = asyncio.ensure_future(self.admin.series.run())
                    if self.freeze_gc:
                        heap.freeze_loaded_objects()
                        self._refreeze = asyncio.ensure_future(heap.Refreeze().run())
                except Exception as exc:  # pragma: no cover - reported to the server
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.reloader is not None:
                    await self.reloader.stop()
                if self._sampler is not None:
                    self._sampler.cancel()
                if self._refreeze is not None:
                    self._refreeze.cancel()
                shadow = self.runtime.get("shadow_process")
                if shadow is not None:
                    await shadow.aclose()
                for backend in self.backends.values():
                    await backend.shutdown()
                limiter = self.runtime.get("throttle")
                if limiter is not None:
                    await limiter.aclose()
                metrics.mark_process_dead(os.getpid())
                logs.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def readiness(self) -> dict[str, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {
            f"backend:{name}": {"ok": True, "kind": backend.kind} for name, backend in self.backends.items()
        }
        limiter = self.runtime.get("throttle")
        if limiter is not None:
            checks["throttle_store"] = {"ok": await limiter.healthy(), "storage": limiter.settings_key[0].split("@")[-1]}
        return checks

    async def require_admin(self, scope: Scope) -> None:
        """401/403 unless the request carries credentials of a consumer with an admin role."""
        from gateway.policies.auth import require

        config = self.state.config
        await require(scope, config, config.gateway.admin_roles)

    def status(self) -> dict[str, Any]:
        config = self.state.config
        last = self.reloader.last if self.reloader else {"ok": True, "version": config.digest, "message": "not watching", "problems": []}
        return {
            "version": config.digest, "source": config.source, "watching": self.reloader is not None, "last_reload": last,
            "server": config.server.model_dump(),  # the [server] table, environment overrides applied
        }

    def route_summary(self) -> list[dict[str, Any]]:
        out = []
        for route in self.state.config.routes:
            split = getattr(route, "split", None)
            out.append(
                {
                    "name": route.label,
                    "prefix": route.prefix,
                    "backends": dict(split) if split else {route.backend: 100},
                    "auth": getattr(route, "auth", None),
                    "roles": list(getattr(route, "roles", None) or []),
                    "throttle": getattr(route, "throttle", None),
                    "mirror": bool(getattr(route, "mirror", False)),
                    "version": route.version,
                }
            )
        return out

    def mirror_stats(self) -> dict[str, Any]:
        registry = self.runtime.get("mirror") or {}
        return {label: stats.as_dict() for label, stats in registry.items()}

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        state = self.state
        raw_headers = scope["headers"]
        given = H.get(raw_headers, H.REQUEST_ID)
        request_id = given.decode() if given is not None and _REQUEST_ID.match(given) else new_request_id()
        rid = request_id.encode()
        out_headers: list[tuple[bytes, bytes]] = [(H.REQUEST_ID, rid)]
        status = 0
        response_started = False
        route: Optional[Route] = None
        route_label = "-"
        host: Optional[Host] = None
        child: dict = {}

        async def send_out(message: dict) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *out_headers]
            await send(message)

        try:
            method = scope["method"]
            if not valid_method(method):
                raise GatewayError(400, "bad_method", "The request method must be an upper-case token such as GET.")
            if scope.get("stackgate.non_origin_form"):
                raise GatewayError(400, "bad_path", "The request target must be a path starting with '/' (origin form).")
            try:
                path = canonical_path(scope.get("raw_path") or scope["path"].encode("utf-8"))
            except BadPath as exc:
                raise GatewayError(400, "bad_path", str(exc)) from None
            host = request_host(scope)

            if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
                # Not held to allowed_hosts: probes and scrapers come by address, and nothing here links to the host.
                route_label = ADMIN_PREFIX  # the gateway's own traffic is logged, not counted
                await self.admin(scope, receive, send_out, path)
                return
            if not state.allowed_hosts.allows(host.name):
                raise _not_allowed(host)

            try:
                route = state.table.match(path, method, host.name)
            except NoRoute:
                raise GatewayError(404, "route_not_found", f"No route for {method} {path}.") from None
            except MethodNotAllowed as exc:
                allow = ", ".join(sorted(exc.allowed)).encode()
                raise GatewayError(405, "method_not_allowed", f'Method "{method}" not allowed.', [(b"allow", allow)]) from None

            out_headers.extend(route.extra_response_headers)
            limit = route.config.max_body_size or state.config.gateway.max_body_size
            declared = H.get(raw_headers, b"content-length")
            if declared is not None:
                if not declared.isdigit():
                    raise GatewayError(400, "bad_request", "Content-Length must be a non-negative integer.")
                if int(declared) > limit:
                    raise GatewayError(413, "body_too_large", f"The request body exceeds the limit of {limit} bytes.")

            child.update(scope)
            child["path"] = path
            child["raw_path"] = encode_path(path)
            child["root_path"] = scope.get("root_path", "") + route.root_path
            # Both stacks build links from these: the Host header and SERVER_NAME/SERVER_PORT (a2wsgi reads ``server``).
            child["headers"] = [
                (b"host", host.value.encode()),
                *[(name, value) for name, value in H.inbound(raw_headers) if name != b"host"],
                (H.REQUEST_ID, rid),
                *route.extra_request_headers,
            ]
            child["server"] = host.server(scope.get("scheme", "http"))
            child["stackgate.max_body_size"] = limit
            child["stackgate.request_id"] = request_id
            # Policies add response headers here (RateLimit, X-Served-By): they go on every
            # answer of the route, the gateway's own errors from further in included.
            child["stackgate.response_headers"] = out_headers
            override = H.get(raw_headers, H.BACKEND_OVERRIDE)
            if override is not None:
                child["stackgate.override"] = override
            await route.handler(child, receive, send_out)
        except GatewayError as exc:
            if response_started:
                raise
            if route is not None:
                _count_refusal(route.config.label, exc)
            elif exc.code in (BAD_HOST, HOST_NOT_ALLOWED):
                metrics.HOSTS_REFUSED.labels(exc.code).inc()
            await send_gateway_error(send_out, exc, request_id)
        except ClientDisconnected:
            status = status or 499
        except asyncio.CancelledError:
            # The server's graceful shutdown timed out on this request: answer it, then let the cancel go on.
            if not response_started:
                await send_error(
                    send_out, 503, "shutting_down", "The gateway is shutting down; retry.", request_id,
                    [(b"retry-after", b"1"), (b"connection", b"close")],
                )
            raise
        except Exception:
            logger.exception("request %s failed in backend %s", request_id, route.config.backend if route else "-")
            if response_started:
                # The server closes the connection: a truncated body must not look complete.
                raise logs.Logged(f"request {request_id}: the backend failed after the response began") from None
            await send_error(send_out, 502, "backend_error", "The backend failed to answer.", request_id)
        finally:
            duration = time.perf_counter() - started
            if route is not None:
                route_label = route.config.label
            backend_name = child.get("stackgate.backend") or (route.config.backend if route and route.config.backend else "-")
            if route_label != ADMIN_PREFIX:
                metrics.observe_request(route_label, backend_name, status, duration)
            logs.access(
                {
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "host": host.value if host is not None else None,
                    "route": route_label,
                    "backend": backend_name,
                    "identity": child.get("stackgate.identity"),
                    "status": status,
                    "duration_ms": round(duration * 1000, 3),
                }
            )


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


def create_app(config: Config, watch: bool = False, freeze_gc: bool = False) -> Gateway:
    """Build the gateway for a validated config (imports every backend's app).

    ``watch`` reloads the config file when it changes (and on SIGHUP);
    ``freeze_gc`` freezes what startup loaded, and again what the first requests loaded
    (``gateway.edge.heap``), for a server process.
    """
    return Gateway(config, watch=watch, freeze_gc=freeze_gc)
