"""Tracing with OpenTelemetry's SDK: the request's spans, their export, the stacks' instrumentation.

Imported only when ``[telemetry] enabled = true`` (``gateway.telemetry.install``).
A request's trace (docs/observability.md)::

    SERVER "GET todos-v2"             ServerSpans, outside the edge
      auth | throttle | split | ...   wrap_policy: from the policy's start to its inner app
      backend NAME                    backend_class: the backend's call
        queue                         WSGI: submitted -> a thread takes it
        run                           WSGI: the app's call; HTTP_TRACEPARENT points here,
          (Django/Flask spans)          so the stacks' instrumentation nests here
      mirror NAME                     mirror_copy, after the response
        backend NAME ...

The SDK's batch span processor exports from a thread of its own, started in
each worker by ``Tracing.start`` (never in the supervisor that forks them); a
request only appends to its queue. Spans that do not fit the queue, and
batches the collector did not take, are dropped and counted
(``stackgate_trace_spans_dropped``).
"""

from __future__ import annotations

import contextvars
import functools
import ipaddress
import logging
import os
import threading
import time
from typing import Any, Optional, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import logs, metrics
from gateway.context import SCOPE_KEY
from gateway.errors import GatewayError
from gateway.routing import ADMIN_PREFIX
from gateway.telemetry import TelemetrySettings
from gateway.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("stackgate.telemetry")

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACE_HEADERS = (TRACEPARENT.encode(), TRACESTATE.encode())
ENVIRON_KEY = "stackgate.trace"
"""WSGI environ key (taken out before the app runs): the backend span's context and when the call was queued."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"})
_WARN_EVERY = 60.0
_ADMIN = ADMIN_PREFIX + "/"

_open_policy: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("stackgate_open_policy_span", default=None)
"""The policy span that waits for its inner app (a one-item list, emptied when the span ends)."""


class RatioSampler(Sampler):
    """``ParentBased(TraceIdRatioBased(ratio))`` whose ratio a reload may change."""

    def __init__(self, ratio: float) -> None:
        self.ratio = -1.0
        self.set_ratio(ratio)

    def set_ratio(self, ratio: float) -> None:
        if ratio != self.ratio:
            self._delegate = ParentBased(TraceIdRatioBased(ratio))
            self.ratio = ratio

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return self._delegate.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"StackgateRatio{{{self.ratio}}}"


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


class CountingExporter(SpanExporter):
    """The OTLP exporter, counting what it sent and what it dropped; a warning a minute at most while it fails."""

    def __init__(self, inner: SpanExporter, queue: "BoundedQueue", endpoint: str) -> None:
        self.inner = inner
        self.queue = queue
        self.endpoint = endpoint
        self._warned = 0.0
        self._failed_since_warning = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.queue.taken(len(spans))
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # the processor would log it; count it instead
            result = SpanExportResult.FAILURE
            logger.debug("span export failed: %r", exc)
        if result is SpanExportResult.SUCCESS:
            metrics.TRACE_SPANS_EXPORTED.inc(len(spans))
        else:
            metrics.TRACE_SPANS_DROPPED.labels("export_failed").inc(len(spans))
            self._failed_since_warning += len(spans)
            now = time.monotonic()
            if now - self._warned >= _WARN_EVERY:
                logger.warning(
                    "%d spans dropped: the OTLP endpoint %s did not take them (stackgate_trace_spans_dropped counts them)",
                    self._failed_since_warning, self.endpoint,
                )
                self._warned = now
                self._failed_since_warning = 0
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class BoundedQueue(SpanProcessor):
    """In front of the batch processor: drops (and counts) a span that would not fit its queue.

    The SDK's queue drops its oldest span silently when full; this keeps its own
    count of the spans waiting, so that the drop is counted and the newest one goes.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.waiting = 0
        self.lock = threading.Lock()
        self.processor: Optional[BatchSpanProcessor] = None

    def taken(self, count: int) -> None:
        with self.lock:
            self.waiting = max(0, self.waiting - count)

    def on_start(self, span: Any, parent_context: Optional[Context] = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        processor = self.processor
        if processor is None or not span.context.trace_flags.sampled:
            return
        with self.lock:
            full = self.waiting >= self.max_size
            if not full:
                self.waiting += 1
        if full:
            metrics.TRACE_SPANS_DROPPED.labels("queue_full").inc()
            return
        processor.on_end(span)

    def shutdown(self) -> None:
        if self.processor is not None:
            self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.processor.force_flush(timeout_millis) if self.processor is not None else True


class Tracing:
    """This process's tracer: built before the stacks are imported, exporting once ``start`` ran."""

    def __init__(self, settings: TelemetrySettings) -> None:
        self.settings = settings
        attributes: dict[str, Any] = {"service.name": settings.service_name}
        attributes.update(settings.resource)
        self.sampler = RatioSampler(settings.sample_ratio)
        self.provider = TracerProvider(sampler=self.sampler, resource=Resource.create(attributes))
        self.queue = BoundedQueue(settings.max_queue_size)
        self.provider.add_span_processor(self.queue)
        trace.set_tracer_provider(self.provider)  # the stacks' instrumentation finds it there
        self.tracer = self.provider.get_tracer("stackgate")
        self.propagator = TraceContextTextMapPropagator()
        self.trust = Trust(settings.trust_incoming)
        self._backend_classes: dict[type, type] = {}
        self._started_in: Optional[int] = None
        logs.context_fields = log_fields

    # --- the process -------------------------------------------------------------------

    def instrument(self, config: Any) -> None:
        """Turn on the stacks' own instrumentation (``instrument``), before their apps are imported."""
        wanted = self.settings.instrument
        if "django" in wanted:
            for backend in config.backends.values():
                if getattr(backend, "django_settings", None):
                    backend.use_django_settings()
            if os.environ.get("DJANGO_SETTINGS_MODULE"):
                from opentelemetry.instrumentation.django import DjangoInstrumentor

                instrumentor = DjangoInstrumentor()
                if not instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.instrument(tracer_provider=self.provider)
        if "flask" in wanted:
            from opentelemetry.instrumentation.flask import FlaskInstrumentor

            instrumentor = FlaskInstrumentor()
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(tracer_provider=self.provider)

    def instrument_app(self, app: Any) -> None:
        """A Flask app imported before ``instrument`` (preloaded elsewhere) joins too."""
        if "flask" not in self.settings.instrument:
            return
        try:
            from flask import Flask
        except ImportError:  # pragma: no cover - Flask is a dependency
            return
        if isinstance(app, Flask) and not getattr(app, "_is_instrumented_by_opentelemetry", False):
            from opentelemetry.instrumentation.flask import FlaskInstrumentor

            FlaskInstrumentor.instrument_app(app, tracer_provider=self.provider)

    def start(self) -> None:
        """Start exporting, in this process (a worker: after the fork)."""
        pid = os.getpid()
        if self._started_in == pid:
            return
        settings = self.settings
        exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=dict(settings.headers), timeout=settings.export_timeout)
        self.queue.waiting = 0
        self.queue.processor = BatchSpanProcessor(
            CountingExporter(exporter, self.queue, settings.endpoint),
            max_queue_size=settings.max_queue_size,
            schedule_delay_millis=settings.schedule_delay * 1000,
            max_export_batch_size=min(settings.max_export_batch_size, settings.max_queue_size),
        )
        self._started_in = pid

    def shutdown(self) -> None:
        """Export what waits (bounded by ``export_timeout``), then stop the export thread."""
        processor = self.queue.processor
        if processor is None:
            return
        self.queue.processor = None
        # Its shutdown takes no timeout: wait for it a bounded time, and let the process end without it.
        done = threading.Thread(target=processor.shutdown, name="stackgate-trace-shutdown", daemon=True)
        done.start()
        done.join(self.settings.export_timeout + 1.0)

    def update(self, settings: TelemetrySettings) -> None:
        """What a reload changes: the sampling ratio and whose ``traceparent`` is trusted."""
        self.sampler.set_ratio(settings.sample_ratio)
        if settings.trust_incoming != self.trust.setting:
            self.trust = Trust(settings.trust_incoming)
        self.settings = settings

    # --- the request's spans --------------------------------------------------------------

    def server_layer(self, gateway: Any) -> Any:
        return lambda app: ServerSpans(app, self, gateway)

    def wrap_policy(self, name: str, build: Any, app: ASGIApp, route: Any, config: Any, services: Any) -> ASGIApp:
        """``build(app, ...)`` with a span from the policy's start until it calls ``app`` (or answers)."""
        inner = _PolicyEnd(app)
        built = build(inner, route, config, services)
        if built is inner:  # the route does not use this policy
            return app
        return _PolicySpan(built, name, self.tracer)

    def backend_class(self, cls: type) -> type:
        traced = self._backend_classes.get(cls)
        if traced is None:
            from gateway.backends.wsgi import WSGIBackend

            mixin = _TracedWSGI if issubclass(cls, WSGIBackend) else _TracedBackend
            traced = type(f"Traced{cls.__name__}", (mixin, cls), {"_tracing": self})
            self._backend_classes[cls] = traced
        return traced

    def mirror_copy(self, coro: Any, route: str, backend: Any) -> Any:
        name = backend.decode() if isinstance(backend, bytes) else str(backend)
        return _in_span(self.tracer, coro, f"mirror {name}", {"stackgate.route": route, "stackgate.backend": name})

    def traceparent_headers(self) -> list[tuple[bytes, bytes]]:
        """``traceparent`` (and ``tracestate``) of the current span, as ASGI headers."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier)
        return [(k.encode(), v.encode("latin-1")) for k, v in carrier.items()]


def log_fields() -> Optional[dict[str, str]]:
    """``trace_id`` and ``span_id`` of the current span, for the JSON log lines (``gateway.logs``)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}


def _end_open_policy() -> None:
    holder = _open_policy.get()
    if holder:
        holder.pop().end()


async def _in_span(tracer: Any, coro: Any, name: str, attributes: dict) -> Any:
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


class ServerSpans:
    """Outside the edge: one SERVER span per request (not for ``/_stackgate/``), current while it runs."""

    def __init__(self, app: ASGIApp, tracing: Tracing, gateway: Any) -> None:
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


class _PolicySpan:
    """A policy's span: starts here, ends when the policy calls its inner app (``_PolicyEnd``) or answers."""

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


class _PolicyEnd:
    """What a traced policy calls next: its span ends here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _end_open_policy()
        await self.app(scope, receive, send)


class _TracedBackend:
    """Mixin before a backend class: each call is a ``backend NAME`` span; ASGI and HTTP
    backends get its ``traceparent`` in their headers."""

    _tracing: Tracing
    name: str
    kind: str

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _end_open_policy()  # split calls its backend itself: its span ends here
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


class _TracedWSGI(_TracedBackend):
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
