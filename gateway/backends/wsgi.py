"""``kind = "wsgi"``: a WSGI application in this process, behind its own thread pool.

The bridge is our own (PEP 3333: ``make_environ``, ``_StreamingInput``). A body
is read on the event loop before a thread is taken: whole up to
``buffer_size`` (and every chunked body), streamed with back-pressure beyond.
A response under ``buffer_size`` comes back in one crossing, a larger one
streams through a bounded queue. The pool (``gateway.backends.pool``) is a
bulkhead: ``threads`` plus ``queue`` waiting, 503 beyond, 504 after ``timeout``.
"""
# Why our own bridge, not a2wsgi's: docs/performance.md#the-executor

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from gateway import metrics
from gateway.context import DEFAULT_MAX_BODY_SIZE, SCOPE_KEY
from gateway.backends.base import AppImportConfig, Backend, load_app
from gateway.backends.pool import PROCESS_GATE, HotPool
from gateway.errors import GatewayError
from gateway.schema import ByteSize
from gateway.edge import settings as server_settings
from gateway.types import Receive, Scope, Send

logger = logging.getLogger("stackgate.backends.wsgi")

_STREAM_QUEUE = 8
_POLL = 0.25
SECOND_START_RESPONSE = "the WSGI app called start_response() a second time without exc_info"


class WSGIBackendConfig(AppImportConfig):
    kind: Literal["wsgi"]
    threads: int = Field(4, ge=1, le=1024)
    """Worker threads of this backend's own pool. Few is fast: the GIL runs one at a time, and
    16 measured 12-20 % slower with p99 up to 1.6x (docs/performance.md); raise it for views
    that spend most of their time waiting on I/O, since each waiting call holds a thread."""
    queue: int = Field(256, ge=0)
    """Requests that may wait for a thread; beyond it the gateway answers 503."""
    timeout: float = Field(30.0, gt=0)
    """Seconds until the response must start; then the gateway answers 504."""
    overlap_after: float = Field(0.02, ge=0)
    """Seconds a call may run before the next request starts beside it on another thread. Calls
    shorter than this run one after another (fastest under the GIL, docs/performance.md); a call
    that waits on I/O or runs long lets the next one start. 0: up to ``threads`` at once."""
    buffer_size: ByteSize = Field(1 << 20, ge=0)
    """Request and response bodies up to this size are passed in one hand-off."""
    openapi: Optional[str] = None
    """This stack's own OpenAPI document: a JSON/YAML file (relative to the config file) or an
    ``http(s)://`` URL; ``"none"`` leaves it out of ``/_stackgate/openapi.json``. Default: generated
    from the app (drf-spectacular for Django, an introspection for Flask-RESTful; docs/openapi.md)."""

    @field_validator("openapi")
    @classmethod
    def _openapi(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.strip():
            raise ValueError('must be a file path, an http(s):// URL, or "none"')
        return value

    django_settings: Optional[str] = None
    """A Django app's settings module, e.g. ``"mysite.settings"``: set as ``DJANGO_SETTINGS_MODULE``
    before ``app`` is imported, unless the environment sets it. One process runs one Django
    settings module, so at most one backend of a config names one."""
    migrate: bool = False
    """Apply this Django app's migrations before serving (``stackgate run``, ``gateway.asgi``);
    needs ``django_settings``. Off: the schema is the operator's (``stackgate migrate``)."""

    @field_validator("django_settings")
    @classmethod
    def _django_settings(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not all(part.isidentifier() for part in value.split(".")):
            raise ValueError('must be a dotted module name such as "mysite.settings"')
        return value

    @model_validator(mode="after")
    def _migrate_needs_settings(self) -> "WSGIBackendConfig":
        if self.migrate and not self.django_settings:
            raise ValueError('migrate = true needs django_settings, e.g. django_settings = "mysite.settings"')
        return self

    def use_django_settings(self) -> None:
        """Point Django at ``django_settings`` (before the app is imported), unless the environment does."""
        if self.django_settings:
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", self.django_settings)


class ClientDisconnected(OSError):
    """The client went away while the app was still reading its body."""


class _StreamingInput:
    """``wsgi.input`` for a body over ``buffer_size``: read from the client only as the app reads.

    Every method gives what ``io.BytesIO`` over the whole body would (the buffered
    path's ``wsgi.input``), whatever the client's message boundaries: PEP 3333 asks
    for ``read``/``readline``/``readlines``/``__iter__``, and apps call them with and
    without sizes. At most one client message is held beyond what the app asked for,
    so the client is held back by the app's pace. A disconnect mid-body is an error,
    not an early end.
    """

    __slots__ = ("loop", "receive", "buffer", "more")

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive) -> None:
        self.loop = loop
        self.receive = receive
        self.buffer = bytearray()  # received, not yet read (deleting from its front is cheap)
        self.more = True  # the client has more messages

    @property
    def has_more(self) -> bool:
        return self.more or bool(self.buffer)

    def _fill(self) -> bool:
        """Add the client's next message to the buffer; False once the body has ended."""
        if not self.more:
            return False
        message = asyncio.run_coroutine_threadsafe(self.receive(), self.loop).result()
        if message["type"] == "http.disconnect":
            self.more = False
            raise ClientDisconnected("client disconnected during the request body")
        self.more = message.get("more_body", False)
        self.buffer += message.get("body", b"")
        return True

    def _take(self, n: int) -> bytes:
        buffer = self.buffer
        if n >= len(buffer):
            data = bytes(buffer)
            buffer.clear()
            return data
        with memoryview(buffer) as view:  # one copy, not a slice and then a copy
            data = bytes(view[:n])
        del buffer[:n]
        return data

    def read(self, size: Optional[int] = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self.buffer))
        while len(self.buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: Optional[int] = -1) -> bytes:
        if size is None:
            size = -1
        buffer = self.buffer
        scanned = 0
        while True:
            end = len(buffer) if size < 0 else min(size, len(buffer))
            newline = buffer.find(b"\n", scanned, end)
            if newline >= 0:
                return self._take(newline + 1)
            if end == size:
                return self._take(size)
            scanned = end
            if not self._fill():
                return self._take(len(buffer))

    def readlines(self, hint: Optional[int] = -1) -> list[bytes]:
        if hint is None or hint <= 0:
            return io.BytesIO(self.read()).readlines()
        lines = []
        total = 0
        while total < hint:
            line = self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
        return lines

    def __iter__(self) -> "_StreamingInput":
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class _Cancelled(Exception):
    pass


_END = object()


class _Exchange:
    """State shared by one request's worker thread and its event-loop side."""

    __slots__ = (
        "loop", "buffer_size", "status", "headers", "chunks", "size", "streaming", "cancelled", "head", "queue",
        "misuse",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer_size: int) -> None:
        self.loop = loop
        self.buffer_size = buffer_size
        self.status: Optional[str] = None
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.streaming = False
        self.cancelled = False
        self.head: asyncio.Future = loop.create_future()
        self.queue: Optional[asyncio.Queue] = None
        self.misuse: Optional[RuntimeError] = None  # start_response() called twice without exc_info

    # worker-thread side
    def emit(self, chunk: bytes) -> None:
        if self.status is None:
            raise RuntimeError("the WSGI app sent body bytes before calling start_response()")
        if self.streaming:
            self._push(chunk)
            return
        self.chunks.append(chunk)
        self.size += len(chunk)
        if self.size > self.buffer_size:
            self.streaming = True
            self.queue = asyncio.Queue(_STREAM_QUEUE)  # binds to the loop on first use there
            self.loop.call_soon_threadsafe(self.settle, "stream", None)

    def _push(self, item: Any) -> None:
        assert self.queue is not None
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            try:
                future.result(_POLL)
                return
            except FutureTimeout:
                if self.cancelled:
                    future.cancel()
                    raise _Cancelled() from None

    # event-loop side
    def settle(self, kind: str, value: Any) -> None:
        if not self.head.done():
            self.head.set_result((kind, value))


def _response_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.strip().lower().encode("latin1"), value.strip().encode("latin1")) for name, value in headers]


class WSGIBackend(Backend):
    kind = "wsgi"

    def __init__(self, name: str, config: WSGIBackendConfig) -> None:
        super().__init__(name, config)
        config.use_django_settings()
        self.app = load_app(config.app)
        self.pool = HotPool(name, config.threads, config.overlap_after, gate=PROCESS_GATE)
        self.capacity = config.threads + config.queue
        self.busy = 0
        self.rejected = 0
        self.timeouts = 0
        self._busy_gauge = metrics.BACKEND_BUSY.labels(name)
        metrics.BACKEND_THREADS.labels(name).set(config.threads)

    def restart_key(self) -> Any:
        return self.config

    def stats(self) -> dict[str, Any]:
        return {
            "threads": self.config.threads,
            "busy": self.busy,
            "capacity": self.capacity,
            "saturated": self.busy >= self.config.threads,
            "rejected": self.rejected,
            "timeouts": self.timeouts,
        }

    @property
    def saturated(self) -> bool:
        return self.busy >= self.config.threads

    async def shutdown(self) -> None:
        self.pool.shutdown()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        ctx = scope.get(SCOPE_KEY)
        limit: int = ctx.max_body_size if ctx is not None else DEFAULT_MAX_BODY_SIZE
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            raise _too_large(limit)

        if declared is not None and declared > self.config.buffer_size:
            body_file: Any = _StreamingInput(loop, receive)
            body_len: int = declared
        else:
            body = await _read_body(receive, limit)
            body_file = io.BytesIO(body)
            body_len = len(body)

        if self.busy >= self.capacity:
            self.rejected += 1
            metrics.BACKEND_REJECTED.labels(self.name, "busy").inc()
            raise GatewayError(
                503,
                "backend_busy",
                f'Backend "{self.name}" is at capacity; retry shortly.',
                [(b"retry-after", b"1")],
            )

        environ = make_environ(scope, body_file, body_len)

        exchange = _Exchange(loop, self.config.buffer_size)
        self.busy += 1
        self._busy_gauge.inc()

        def finished(error: Optional[BaseException]) -> None:
            self.busy -= 1
            self._busy_gauge.dec()
            exchange.settle("error" if error is not None else "done", error)

        try:
            ticket = self.pool.submit(self._run, (environ, exchange), finished)
        except RuntimeError:
            self.busy -= 1
            self._busy_gauge.dec()
            raise
        timer = loop.call_later(self.config.timeout, exchange.settle, "timeout", None)
        try:
            kind, error = await exchange.head
        finally:
            timer.cancel()
            if self.pool.cancel(ticket):  # timed out, or the client went away, before a thread took it
                self.busy -= 1
                self._busy_gauge.dec()

        if kind == "timeout":
            exchange.cancelled = True
            self.timeouts += 1
            metrics.BACKEND_REJECTED.labels(self.name, "timeout").inc()
            raise GatewayError(
                504,
                "backend_timeout",
                f'Backend "{self.name}" did not answer within {self.config.timeout:g} seconds.',
            )
        if kind == "error":
            raise error
        status = int(exchange.status.split(" ", 1)[0])  # type: ignore[union-attr]
        headers = _response_headers(exchange.headers)
        if kind == "done":
            body = b"".join(exchange.chunks)
            if scope["method"] != "HEAD" and not any(name == b"content-length" for name, _ in headers):
                headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        # While the app may still read a streamed request body, receive() is its alone.
        watch = not isinstance(body_file, _StreamingInput) or not body_file.has_more
        await self._stream(exchange, status, headers, receive if watch else None, send)

    async def _stream(
        self, exchange: _Exchange, status: int, headers: list, receive: Optional[Receive], send: Send
    ) -> None:
        queue = exchange.queue
        assert queue is not None

        async def watch_disconnect() -> None:
            assert receive is not None
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    exchange.cancelled = True
                    try:
                        queue.put_nowait(_END)
                    except asyncio.QueueFull:
                        pass
                    return

        watcher = asyncio.ensure_future(watch_disconnect()) if receive is not None else None
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            for chunk in exchange.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            exchange.chunks = []
            while True:
                item = await queue.get()
                if exchange.cancelled:
                    return
                if item is _END:
                    await send({"type": "http.response.body", "body": b""})
                    return
                if isinstance(item, BaseException):
                    raise item
                await send({"type": "http.response.body", "body": item, "more_body": True})
        finally:
            exchange.cancelled = True  # nobody reads the queue any more: stop the app
            if watcher is not None:
                watcher.cancel()

    def _run(self, environ: dict, exchange: _Exchange) -> None:
        """Call the app in a worker thread; errors before the head travel as exceptions."""

        def start_response(status: str, headers: list, exc_info: Any = None) -> Any:
            # PEP 3333: the head counts as sent once the app produced a body byte (held
            # by the bridge or not); exc_info is then re-raised. Without exc_info, a
            # second call is an error (a 502 if nothing went out).
            if exc_info is not None:
                if exchange.chunks or exchange.streaming:
                    raise exc_info[1].with_traceback(exc_info[2])
            elif exchange.status is not None:
                exchange.misuse = RuntimeError(SECOND_START_RESPONSE)
                raise exchange.misuse
            exchange.status = status
            exchange.headers = headers
            return exchange.emit

        if exchange.cancelled:
            return
        try:
            iterable = self.app(environ, start_response)
            try:
                for chunk in iterable:
                    if chunk:
                        exchange.emit(chunk)
                    if exchange.cancelled:
                        raise _Cancelled()
            finally:
                close = getattr(iterable, "close", None)
                if close is not None:
                    close()
            if exchange.status is None:
                raise RuntimeError("the WSGI app returned without calling start_response()")
            if exchange.misuse is not None:  # the app caught it and went on: still an error
                raise exchange.misuse
        except _Cancelled:
            return
        except BaseException as exc:
            if not exchange.streaming:
                raise
            try:
                exchange._push(exc)
            except _Cancelled:
                pass
            return
        if exchange.streaming:
            try:
                exchange._push(_END)
            except _Cancelled:
                pass


def make_environ(scope: Scope, body_file: Any, body_len: int) -> dict:
    """The PEP 3333 environ of a request, with the gateway's identity as ``REMOTE_USER``.

    As a2wsgi's ``build_environ`` (``SCRIPT_NAME`` from ``root_path``, ``PATH_INFO``
    the rest of the path, ``HTTP_*`` with ``-`` as ``_``, repeated headers joined
    with ","), except: the query string is a native (latin-1) string whatever its
    bytes (a2wsgi decodes it as ASCII, and fails), repeated ``Cookie`` headers are
    joined with "; " (the one separator cookie parsers know; RFC 9113 §8.2.3),
    the input is terminated with its ``CONTENT_LENGTH``, and ``os.environ``'s
    ``SCRIPT_NAME`` plays no part.
    """
    script_name = scope.get("root_path", "").encode("utf-8").decode("latin1")
    path_info = scope["path"].encode("utf-8").decode("latin1")
    if path_info.startswith(script_name):
        path_info = path_info[len(script_name):]
    server_name, server_port = scope.get("server") or ("localhost", 80)
    environ = {
        "asgi.scope": scope,
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": scope["query_string"].decode("latin1"),
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(server_port or 0),
        "SERVER_PROTOCOL": "HTTP/" + scope["http_version"],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body_file,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    for name, raw in scope["headers"]:
        if name == b"content-length":
            continue  # the body's, below
        key = "CONTENT_TYPE" if name == b"content-type" else "HTTP_" + name.decode("latin1").upper().replace("-", "_")
        value = raw.decode("latin1")
        if key in environ:
            value = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        environ[key] = value
    environ["CONTENT_LENGTH"] = str(body_len)
    ctx = scope.get(SCOPE_KEY)
    identity = ctx.identity if ctx is not None else None
    if identity:
        environ["REMOTE_USER"] = identity
    return environ


def _content_length(scope: Scope) -> Optional[int]:
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():
                raise GatewayError(400, "bad_request", "Content-Length must be a non-negative integer.")
            return int(value)
    return None


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, "body_too_large", f"The request body exceeds the limit of {limit} bytes.")


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    timeout = server_settings.current().body_timeout  # [server] body_timeout
    while True:
        try:
            async with asyncio.timeout(timeout):  # cheaper than wait_for: no task per message
                message = await receive()
        except TimeoutError:
            stalled = server_settings.body_stalled(timeout)
            raise GatewayError(408, "request_timeout", stalled, [(b"connection", b"close")]) from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("client disconnected during the request body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
