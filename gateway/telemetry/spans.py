"""The request's spans: the server span outside the edge, policy spans, backend spans (WSGI: queue, run).

A request's trace (docs/observability.md#the-span-tree)::

    SERVER "GET todos-v2"             ServerSpans, outside the edge
      auth | throttle | split | ...   PolicySpan: from the policy's start to its inner app
      backend NAME                    TracedBackend: the backend's call
        queue                         WSGI: submitted -> a thread takes it
        run                           WSGI: the app's call; HTTP_TRACEPARENT points here,
          (Django/Flask spans)          so the stacks' instrumentation nests here
      mirror NAME                     in_span, around the mirror copy, after the response
"""

from __future__ import annotations

import contextvars
import functools
import ipaddress
import time
from typing import Any, Optional, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Link, SpanKind, StatusCode, Tracer

from gateway import headers as H
from gateway.context import SCOPE_KEY
from gateway.errors import GatewayError
from gateway.routing import ADMIN_PREFIX
from gateway.types import ASGIApp, Receive, Scope, Send

TRACEPARENT = H.TRACEPARENT.decode()
TRACESTATE = H.TRACESTATE.decode()
_TRACE_HEADERS = (H.TRACEPARENT, H.TRACESTATE)
ENVIRON_KEY = "stackgate.trace"
"""WSGI environ key (taken out before the app runs): the backend span's context and when the call was queued."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"})
_ADMIN = ADMIN_PREFIX + "/"

_open_policy: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("stackgate_open_policy_span", default=None)
"""The policy span that waits for its inner app (a one-item list, emptied when the span ends)."""


class Trust:
    """Whether a peer's ``traceparent`` is continued (``trust_incoming``)."""

    def __init__(self, setting: Any) -> None:
        self.setting = setting
        self.always = setting == "always"
        self.networks = (
            tuple(ipaddress.ip_network(n, strict=False) for n in setting) if isinstance(setting, list) else ()
        )
        self.trusts = functools.lru_cache(maxsize=1024)(self._trusts)

    def _trusts(self, address: Optional[str]) -> bool:
        if self.always:
            return True
        if not self.networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


def log_fields() -> Optional[dict[str, str]]:
    """``trace_id`` and ``span_id`` of the current span, for the JSON log lines (``gateway.logs``)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}


def _end_open_policy(backend: Optional[str] = None) -> None:
    """End the policy span waiting for its inner app; ``backend``: the policy called that backend itself (split)."""
    holder = _open_policy.get()
    if holder:
        span = holder.pop()
        if backend is not None:
            span.set_attribute("stackgate.backend", backend)
        span.end()


async def in_span(tracer: Any, coro: Any, name: str, attributes: dict) -> Any:
    span = tracer.start_span(name, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        return await coro
    except BaseException as exc:
        _failed(span, exc)
        raise
    finally:
        span.end()
        otel_context.detach(token)


def _failed(span: Any, exc: BaseException) -> None:
    if isinstance(exc, GatewayError):
        span.set_attribute("http.response.status_code", exc.status)
        span.set_attribute("stackgate.error.code", exc.code)
        if exc.status < 500:
            return
        span.set_attribute("error.type", exc.code)
        span.set_status(StatusCode.ERROR, exc.code)
        return
    span.record_exception(exc)
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(StatusCode.ERROR, type(exc).__qualname__)


class TracingLike(Protocol):
    """What the spans take of the process's tracer, ``gateway.telemetry.tracing.Tracing``.

    Declared here so that the dependency runs one way: tracing.py builds on this module, and
    this module names only the members it uses.
    """

    settings: Any
    """The ``TelemetrySettings`` it serves by."""
    tracer: Tracer
    propagator: TextMapPropagator
    trust: Trust

    def update(self, settings: Any) -> None: ...

    def traceparent_headers(self) -> list[tuple[bytes, bytes]]: ...

    def instrument_app(self, app: Any) -> None: ...


class ServerSpans:
    """Outside the edge: one SERVER span per request (not for ``/_stackgate/``), current while it runs."""

    def __init__(self, app: ASGIApp, tracing: TracingLike, gateway: Any) -> None:
        self.app = app
        self.tracing = tracing
        self.gateway = gateway
        self.settings = tracing.settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == ADMIN_PREFIX or path.startswith(_ADMIN):
            await self.app(scope, receive, send)
            return
        tracing = self.tracing
        settings = self.gateway.compiled.config.telemetry
        if settings is not self.settings:  # a reload: the ratio and the trust may change
            tracing.update(settings)
            self.settings = settings
        carrier: dict[str, str] = {}
        user_agent = None
        for name, value in scope["headers"]:
            if name in _TRACE_HEADERS:
                carrier[name.decode()] = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        client = scope.get("client")
        links = None
        parent: Context = Context()
        if carrier:
            extracted = tracing.propagator.extract(carrier)
            given = trace.get_current_span(extracted).get_span_context()
            if given.is_valid:
                if tracing.trust.trusts(client[0] if client else None):
                    parent = extracted
                else:  # a new trace, linked to the client's: see docs/observability.md#trust
                    links = [Link(given, {"stackgate.link": "untrusted traceparent"})]
        method = scope["method"]
        known = method if method in _METHODS else "_OTHER"
        attributes: dict[str, Any] = {
            "http.request.method": known,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        if known != method:
            attributes["http.request.method_original"] = method
        if client:
            attributes["client.address"] = client[0]
            attributes["client.port"] = client[1]
        if user_agent is not None:
            attributes["user_agent.original"] = user_agent
        span = tracing.tracer.start_span(known, context=parent, kind=SpanKind.SERVER, attributes=attributes, links=links)
        token = otel_context.attach(trace.set_span_in_context(span))
        status = 0

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            if span.is_recording():
                self._finish(span, scope, known, status)
            span.end()
            otel_context.detach(token)

    def _finish(self, span: Any, scope: Scope, method: str, status: int) -> None:
        ctx = scope.get(SCOPE_KEY)
        route = ctx.route if ctx is not None else None
        if route is not None:
            label, template = route.config.label, route.config.prefix
        else:
            user_route = scope.get("route")
            label = template = getattr(user_route, "path", None)
        if label:
            span.update_name(f"{method} {label}")
            span.set_attribute("http.route", template)
            span.set_attribute("stackgate.route", label)
        if ctx is not None:
            span.set_attribute("stackgate.request_id", ctx.request_id)
            if ctx.host is not None:
                span.set_attribute("server.address", ctx.host.name)
                if ctx.host.port:
                    span.set_attribute("server.port", ctx.host.port)
            backend = ctx.backend or (route.config.backend if route is not None else None)
            if backend:
                span.set_attribute("stackgate.backend", backend)
        if status:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(StatusCode.ERROR)


class PolicySpan:
    """A policy's span: starts here, ends when the policy calls its inner app (``PolicyEnd``) or answers."""

    def __init__(self, app: ASGIApp, name: str, tracer: Any) -> None:
        self.app = app
        self.name = name
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        holder = [self.tracer.start_span(self.name)]
        reset = _open_policy.set(holder)
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            if holder:
                _failed(holder[0], exc)
            raise
        finally:
            if holder:
                holder.pop().end()
            _open_policy.reset(reset)


class PolicyEnd:
    """What a traced policy calls next: its span ends here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _end_open_policy()
        await self.app(scope, receive, send)


class TracedBackend:
    """Mixin before a backend class: each call is a ``backend NAME`` span; ASGI and HTTP
    backends get its ``traceparent`` in their headers."""

    _tracing: TracingLike
    name: str
    kind: str

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _end_open_policy(self.name)  # split calls its backend itself: its span ends here
        tracing = self._tracing
        span = tracing.tracer.start_span(
            f"backend {self.name}", attributes={"stackgate.backend": self.name, "stackgate.backend.kind": self.kind}
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            if self.kind != "wsgi":
                headers = [h for h in scope["headers"] if h[0] not in _TRACE_HEADERS]
                scope = dict(scope, headers=headers + tracing.traceparent_headers())
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            span.end()
            otel_context.detach(token)


class _StampingPool:
    """A WSGI backend's pool that notes, in the call's environ, the backend span and when the call was queued."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def submit(self, fn: Any, args: tuple, done: Any) -> Any:
        args[0][ENVIRON_KEY] = (otel_context.get_current(), time.time_ns())
        return self._pool.submit(fn, args, done)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class TracedWSGI(TracedBackend):
    """And for a WSGI backend: ``queue`` (waiting for a thread) and ``run`` (the app's call) spans,
    ``run`` current in the thread and in the environ's ``HTTP_TRACEPARENT``."""

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)  # type: ignore[call-arg]
        self.pool = _StampingPool(self.pool)  # type: ignore[has-type]
        self._tracing.instrument_app(self.app)  # type: ignore[attr-defined]

    def _run(self, environ: dict, exchange: Any) -> None:
        stamp = environ.pop(ENVIRON_KEY, None)
        if stamp is None:
            return super()._run(environ, exchange)  # type: ignore[misc]
        parent, queued = stamp
        tracing = self._tracing
        started = time.time_ns()
        tracing.tracer.start_span("queue", context=parent, start_time=queued).end(end_time=started)
        span = tracing.tracer.start_span("run", context=parent, start_time=started)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        carrier: dict[str, str] = {}
        tracing.propagator.inject(carrier)
        environ["HTTP_TRACEPARENT"] = carrier[TRACEPARENT]
        if TRACESTATE in carrier:
            environ["HTTP_TRACESTATE"] = carrier[TRACESTATE]
        else:
            environ.pop("HTTP_TRACESTATE", None)
        try:
            super()._run(environ, exchange)  # type: ignore[misc]
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            span.end()
            otel_context.detach(token)
