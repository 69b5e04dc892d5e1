"""uvicorn's httptools protocol with Stackgate's answers for what never reaches the app.

Requests the HTTP parser refuses get the gateway's JSON error shape instead
of uvicorn's plain text; a header block over ``MAX_HEADER_BYTES`` is a 431; a
request target not in origin form (``GET http://host/path``) is flagged so the
gateway refuses it like any other unsafe path.
"""

from __future__ import annotations

import os
import uuid

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import error_body

MAX_HEADER_BYTES = int(os.environ.get("STACKGATE_MAX_HEADER_BYTES", 32 * 1024))
_REASONS = {400: b"Bad Request", 431: b"Request Header Fields Too Large"}


class _HeadersTooLarge(Exception):
    pass


class HttpProtocol(HttpToolsProtocol):
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._refusal = (400, "bad_request", "The request is not valid HTTP/1.1.")

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._header_bytes += len(url)
        self._check_size()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        self._check_size()
        super().on_header(name, value)

    def _check_size(self) -> None:
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refusal = (431, "headers_too_large", f"The request line and headers exceed {MAX_HEADER_BYTES} bytes.")
            raise _HeadersTooLarge()

    def on_headers_complete(self) -> None:
        if not self.url.startswith(b"/"):
            self.scope["stackgate.non_origin_form"] = True
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        status, code, message = getattr(self, "_refusal", (400, "bad_request", "The request is not valid HTTP/1.1."))
        body = error_body(status, code, message, uuid.uuid4().hex)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()
