"""Stacks for the tracing tests: each answers with the ``traceparent`` it was given, and logs a line."""

from __future__ import annotations

import json
import logging

logger = logging.getLogger("stackgate.tests.telemetry")


def echo(environ, start_response):
    """WSGI: the environ's ``HTTP_TRACEPARENT``; logs one line from inside the stack's thread."""
    logger.warning("inside the stack")
    body = json.dumps({"traceparent": environ.get("HTTP_TRACEPARENT"), "tracestate": environ.get("HTTP_TRACESTATE")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_echo(scope, receive, send):
    """ASGI: its ``traceparent`` header."""
    headers = dict(scope["headers"])
    body = json.dumps({"traceparent": (headers.get(b"traceparent") or b"").decode() or None}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
