"""uvicorn's httptools protocol with Stackgate's answers for what never reaches the app.

What the parser refuses, a head over ``[server] max_header_bytes`` (431, also
counted on the raw bytes), a target not in origin form, a second ``Host``,
``CONNECT``, a head or a body slower than the ``[server]`` timeouts (408):
each gets the gateway's JSON error shape and an ``X-Request-ID``, written
after any response still in flight on the connection (pipelining). The limits
are read per connection from ``gateway.edge.settings``; with ``--workers N``
the connection count goes to ``gateway.edge.balance``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Optional

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.context import NON_ORIGIN_FORM
from gateway.edge import balance, settings
from gateway.errors import error_body


# A body the app reads on the event loop is answered there, with its request id;
# this protocol's own check comes a little later and covers the other readers.
_BODY_GRACE = 1.0

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}

BAD_REQUEST = (400, "bad_request", "The request is not valid HTTP/1.1.")
BAD_METHOD = (400, "bad_method", "The request method must be an upper-case HTTP method such as GET.")
BAD_TARGET = (400, "bad_path", "The request target is not a valid path.")
NOT_ASCII = (400, "bad_path", "The request target must be ASCII: percent-encode other bytes.")
NOT_ORIGIN_FORM = (400, "bad_path", "The request target must be a path starting with '/' (origin form).")
TWO_HOSTS = (400, "bad_request", "The request must carry one Host header, not several.")
CONNECT = (400, "bad_request", "CONNECT is not supported: the gateway is not a proxy.")
UPGRADE_WITH_BODY = (400, "bad_request", "A request asking for a protocol upgrade must not carry a body.")


def _head_timed_out(limits: settings.ServerSettings) -> tuple[int, str, str]:
    return (408, "request_timeout", f"The request headers did not arrive within {limits.header_timeout:g} seconds.")


def _body_timed_out(limits: settings.ServerSettings) -> tuple[int, str, str]:
    return (408, "request_timeout", settings.body_stalled(limits.body_timeout))


def _head_too_large(limits: settings.ServerSettings) -> tuple[int, str, str]:
    return (431, "headers_too_large", f"The request line and headers exceed {limits.max_header_bytes} bytes.")


class _Refusal(Exception):
    """Raised in a parser callback: the request is answered with ``args`` (status, code, message)."""


def _refusal_for(exc: httptools.HttpParserError) -> tuple[int, str, str]:
    cause = exc.__context__
    if isinstance(cause, _Refusal):
        return cause.args
    if isinstance(exc, httptools.HttpParserInvalidMethodError):
        return BAD_METHOD
    if isinstance(exc, httptools.HttpParserInvalidURLError) or isinstance(cause, httptools.HttpParserInvalidURLError):
        return BAD_TARGET
    return BAD_REQUEST


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"transfer-encoding" or (name == b"content-length" and value != b"0") for name, value in headers)


class HttpProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        # The [server] table of the config this process's app was built from (gateway.edge.settings).
        limits = self._limits = settings.current()
        self._max_header_bytes = limits.max_header_bytes
        self._header_timeout = limits.header_timeout
        self._body_timeout = limits.body_timeout
        self.timeout_keep_alive = limits.keep_alive_timeout
        self._awaiting_head = True  # between messages, or inside a request head
        self._head_bytes = 0  # raw bytes of an unfinished head
        self._header_bytes = 0  # request line and header fields, as parsed
        self._messages = 0
        self._last_data = 0.0
        self._head_timer: Optional[asyncio.TimerHandle] = None
        self._body_timer: Optional[asyncio.TimerHandle] = None
        self._stopped = False  # refused, or past an upgrade: nothing more is read
        self._pending: Optional[bytes] = None  # an error waiting for the response before it
        self._balance = balance.CURRENT
        self._shed_cycle = None  # this connection's request answered with Connection: close

    # connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._balance is not None:
            self._balance.opened()
        # uvicorn arms its keep-alive timeout only after a response: a connection that never sends would stay open.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._cancel_timers()
        if self._balance is not None:
            self._balance.closed(self)
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        if self._balance is not None:  # the connection goes to another protocol: no longer this one's to count
            self._balance.closed(self)
            self._balance = None
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        self._unset_keepalive_if_required()
        self._last_data = self.loop.time()
        whole_chunk_in_head = self._awaiting_head
        if whole_chunk_in_head and self._head_timer is None:
            self._head_timer = self.loop.call_later(self._header_timeout, self._head_timed_out)
        messages = self._messages
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._stopped = True  # the parser has stopped; the response closes the connection
            return
        except httptools.HttpParserError as exc:
            self.logger.warning("Invalid HTTP request received.")
            self._refuse(*_refusal_for(exc))
            return
        if self._awaiting_head:
            if whole_chunk_in_head and messages == self._messages:
                self._head_bytes += len(data)
                if self._head_bytes > self._max_header_bytes:
                    self._refuse(*_head_too_large(self._limits))
        elif self._body_timer is None and self.cycle is not None and self.cycle.more_body:
            self._body_timer = self.loop.call_later(self._body_timeout + _BODY_GRACE, self._body_stalled)

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._head_timer is None:  # began in the chunk that ended the message before it
            self._head_timer = self.loop.call_later(self._header_timeout, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        if self._awaiting_head:  # otherwise a trailer: counted, never added to the headers
            super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self._max_header_bytes:
            raise _Refusal(*_head_too_large(self._limits))

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        url = self.url
        if not url.isascii():
            raise _Refusal(*NOT_ASCII)
        if sum(1 for name, _ in self.headers if name == b"host") > 1:
            raise _Refusal(*TWO_HOSTS)
        origin_form = url.startswith(b"/") and b"#" not in url
        refused_upgrade = self.parser.should_upgrade() and not self._should_upgrade()
        if refused_upgrade:
            if self.parser.get_method() == b"CONNECT":
                raise _Refusal(*(CONNECT if origin_form else NOT_ORIGIN_FORM))
            if _has_body(self.headers):
                raise _Refusal(*UPGRADE_WITH_BODY)
        if not origin_form:
            self.scope[NON_ORIGIN_FORM] = True
        super().on_headers_complete()
        self._messages += 1
        self._awaiting_head = False
        self._head_bytes = 0
        if refused_upgrade:
            self.cycle.keep_alive = False
        elif self._balance is not None:
            self._balance_connection()

    def _balance_connection(self) -> None:
        """Answer this request with ``Connection: close`` if this worker holds more than its share
        (``gateway.edge.balance``): not a request with a body (nothing unread is cut off), and not one
        that another request waits behind on this connection (pipelined)."""
        shed = self._shed_cycle
        if shed is not None and self.pipeline and not shed.response_started:
            shed.keep_alive = True  # a request came in behind it: it would go unanswered
            self._shed_cycle = None
            self._balance.unshed(self)
        elif not self.pipeline and self.cycle.keep_alive and self._balance.over() and not _has_body(self.headers):
            self._balance.shed(self)
            self._shed_cycle = self.cycle
            self.cycle.keep_alive = False  # the client reconnects, to another worker half of the time

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True

    # answers

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._pending is not None and not self.pipeline and self.cycle.response_complete and not self.transport.is_closing():
            self.transport.write(self._pending)
            self._pending = None
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._refuse(*BAD_REQUEST)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer an error the app never saw, then close; never in the middle of another response."""
        if self._stopped:
            return
        self._stopped = True
        self._cancel_timers()
        answer = self._error_response(status, code, message)
        cycle = self.cycle
        if not self._awaiting_head and cycle is not None:  # inside the body of the request being served
            if cycle.response_started:
                self.transport.close()  # it has its answer, or part of one; the rest cannot be read
                return
            cycle.disconnected = True  # the app gets http.disconnect, and whatever it sends is dropped
            cycle.message_event.set()
        elif (cycle is not None and not cycle.response_complete) or self.pipeline:
            self._pending = answer
            return
        self.transport.write(answer)
        self.transport.close()

    def _error_response(self, status: int, code: str, message: str) -> bytes:
        request_id = uuid.uuid4().hex
        body = error_body(status, code, message, request_id)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nx-request-id: %s\r\nconnection: close\r\n\r\n"
            % (len(body), request_id.encode())
        )
        return b"".join(head) + body

    # slow clients

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.flow.read_paused:  # the gateway stopped reading (back-pressure): not the client's delay
            self._head_timer = self.loop.call_later(self._header_timeout, self._head_timed_out)
            return
        self._refuse(*_head_timed_out(self._limits))

    def _body_stalled(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self._awaiting_head or cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        limit = self._body_timeout + _BODY_GRACE
        idle = self.loop.time() - self._last_data
        waiting_on_gateway = (
            self.flow.read_paused  # back-pressure: the app has not taken what it was sent
            or cycle.waiting_for_100_continue  # the client waits for the app to ask for the body
            or (cycle.response_started and not cycle.response_complete)
        )
        if idle < limit or waiting_on_gateway:
            self._body_timer = self.loop.call_later(max(limit - idle, 0.05) if idle < limit else limit, self._body_stalled)
            return
        self._refuse(*_body_timed_out(self._limits))

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
