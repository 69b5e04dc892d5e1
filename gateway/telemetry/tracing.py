"""This process's tracer: OpenTelemetry's SDK set up from ``[telemetry]``, and the stacks' instrumentation.

Imported only when ``[telemetry] enabled = true`` (``gateway.telemetry.install``),
before the stacks are imported (their instrumentation must be in place first);
the export thread starts later, in each worker after the fork (``Tracing.start``).
The spans themselves: ``gateway.telemetry.spans``; their export: ``gateway.telemetry.export``.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Optional

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import logs
from gateway.telemetry import TelemetrySettings
from gateway.telemetry.export import BoundedQueue, CountingExporter
from gateway.telemetry.spans import PolicyEnd, PolicySpan, ServerSpans, TracedBackend, TracedWSGI, Trust, in_span, log_fields
from gateway.types import ASGIApp


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
        inner = PolicyEnd(app)
        built = build(inner, route, config, services)
        if built is inner:  # the route does not use this policy
            return app
        return PolicySpan(built, name, self.tracer)

    def backend_class(self, cls: type) -> type:
        traced = self._backend_classes.get(cls)
        if traced is None:
            from gateway.backends.wsgi import WSGIBackend

            mixin = TracedWSGI if issubclass(cls, WSGIBackend) else TracedBackend
            traced = type(f"Traced{cls.__name__}", (mixin, cls), {"_tracing": self})
            self._backend_classes[cls] = traced
        return traced

    def mirror_copy(self, coro: Any, route: str, backend: Any) -> Any:
        name = backend.decode() if isinstance(backend, bytes) else str(backend)
        return in_span(self.tracer, coro, f"mirror {name}", {"stackgate.route": route, "stackgate.backend": name})

    def traceparent_headers(self) -> list[tuple[bytes, bytes]]:
        """``traceparent`` (and ``tracestate``) of the current span, as ASGI headers."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier)
        return [(k.encode(), v.encode("latin-1")) for k, v in carrier.items()]
