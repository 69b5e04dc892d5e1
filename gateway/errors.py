"""The one JSON error shape for everything Stackgate answers itself.

Every error body, from the gateway and from both stacks, is::

    {"error": {"status": 404, "code": "route_not_found",
               "message": "No route for GET /nope.", "request_id": "…"}}

See ``docs/errors.md`` for the list of codes.
"""

from __future__ import annotations

import json
from typing import Iterable

from starlette.responses import Response

from gateway.types import Send

JSON_CONTENT_TYPE = (b"content-type", b"application/json")


class GatewayError(Exception):
    """Raised anywhere in the gateway to end a request with an error answer."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers)
        self.extra = extra


def error_body(status: int, code: str, message: str, request_id: str | None, **extra: object) -> bytes:
    error: dict[str, object] = {"status": status, "code": code, "message": message, "request_id": request_id}
    error.update(extra)
    return json.dumps({"error": error}, separators=(",", ":")).encode()


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    request_id: str | None,
    headers: Iterable[tuple[bytes, bytes]] = (),
    **extra: object,
) -> None:
    body = error_body(status, code, message, request_id, **extra)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [JSON_CONTENT_TYPE, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_gateway_error(send: Send, exc: GatewayError, request_id: str | None) -> None:
    await send_error(send, exc.status, exc.code, exc.message, request_id, exc.headers, **exc.extra)


class ErrorResponse(Response):
    """The JSON error shape as a Starlette ``Response`` (what the gateway's exception handlers return)."""

    def __init__(self, exc: GatewayError, request_id: str | None) -> None:
        self.status_code = exc.status
        self.body = error_body(exc.status, exc.code, exc.message, request_id, **exc.extra)
        self.background = None
        self.raw_headers = [JSON_CONTENT_TYPE, (b"content-length", str(len(self.body)).encode()), *exc.headers]


def error_response(exc: GatewayError, request_id: str | None) -> Response:
    return ErrorResponse(exc, request_id)
