"""Every error as the contract's JSON body, whichever layer raised it.

Werkzeug's and Flask-RESTful's own error pages (HTML, ``{"message": ...}``)
must never reach a client, so routing errors, errors raised by resources and
unhandled exceptions all end in :func:`error_response`.
"""

from __future__ import annotations

from flask import Flask, current_app, request
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError

from .methods import allow
from .rendering import render_json


class ValidationFailed(BadRequest):
    """A body or query parameter failed validation; ``fields`` maps names to messages."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__()
        self.fields = fields


class MalformedJSON(BadRequest):
    """The body is not valid JSON."""


class InvalidHost(BadRequest):
    """The ``Host`` is not a valid host, or not a trusted one (Django's ``DisallowedHost``)."""


def _describe(exc: HTTPException) -> tuple[str, str, dict]:
    if isinstance(exc, ValidationFailed):
        return "invalid", "Invalid input.", {"fields": exc.fields}
    if isinstance(exc, MalformedJSON):
        return "parse_error", "Malformed JSON request body.", {}
    if isinstance(exc, InvalidHost):
        return "bad_host", "Invalid Host header.", {}
    if exc.code == 400:
        return "bad_request", "Bad request.", {}  # as Django's handler400 says it
    if exc.code == 404:
        return "not_found", "Not found.", {}
    if exc.code == 405:
        return "method_not_allowed", f'Method "{request.method}" not allowed.', {}
    if exc.code == 415:
        media_type = request.environ.get("CONTENT_TYPE", "")
        return "unsupported_media_type", f'Unsupported media type "{media_type}" in request.', {}
    if exc.code == 500:
        return "server_error", "Internal server error.", {}
    return exc.name.lower().replace(" ", "_").replace("'", ""), f"{exc.name}.", {}


def _allow_header(exc: HTTPException) -> dict[str, str]:
    valid = getattr(exc, "valid_methods", None)
    return {"Allow": allow(valid)} if valid else {}


def error_response(exc: Exception):
    """The contract's error body for ``exc``; anything unexpected is logged and becomes a 500."""
    if not isinstance(exc, HTTPException):
        current_app.logger.error("Unhandled exception on %s %s", request.method, request.path, exc_info=exc)
        exc = InternalServerError(original_exception=exc)
    code, message, extra = _describe(exc)
    body = {
        "error": {
            "status": exc.code,
            "code": code,
            "message": message,
            "request_id": request.headers.get("X-Request-ID"),
            **extra,
        }
    }
    return render_json(body, exc.code, _allow_header(exc))


def register_error_handlers(app: Flask) -> None:
    """Cover what never reaches Flask-RESTful: unknown paths, wrong methods, unhandled errors."""
    app.register_error_handler(HTTPException, error_response)
    app.register_error_handler(Exception, error_response)
