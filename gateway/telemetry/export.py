"""The export side: the OTLP exporter and the batch processor's queue, counting every span they drop.

A request never waits here: ending a span appends it to the batch span
processor's queue, and a thread of the worker exports it. What does not fit
the queue, or what the collector does not take, is dropped and counted in
``stackgate_trace_spans_dropped`` (docs/observability.md#export-workers-and-a-collector-that-is-down).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from gateway import metrics

logger = logging.getLogger("stackgate.telemetry")

_WARN_EVERY = 60.0


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
