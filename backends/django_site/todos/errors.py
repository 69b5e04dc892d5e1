"""The contract's one error shape, for DRF's errors and for Django's own 400, 404 and 500.

Messages are fixed per kind of error (not DRF's ``detail``, which varies,
e.g. "No Todo matches the given query.") so both stacks say the same thing.
"""

from __future__ import annotations

from django.core.exceptions import DisallowedHost, PermissionDenied
from django.http import Http404, HttpResponse
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

FIXED_MESSAGES = {
    exceptions.ValidationError: "Invalid input.",
    exceptions.ParseError: "Malformed JSON request body.",
    exceptions.NotFound: "Not found.",
}


def request_id(request) -> str | None:
    return request.META.get("HTTP_X_REQUEST_ID")


def error_body(status: int, code: str, message: str, request_id: str | None, fields=None) -> dict:
    error = {"status": status, "code": code, "message": message, "request_id": request_id}
    if fields is not None:
        error["fields"] = fields
    return {"error": error}


def validation_fields(detail) -> dict:
    if isinstance(detail, dict):
        return detail
    return {api_settings.NON_FIELD_ERRORS_KEY: detail}


def exception_handler(exc, context):
    """DRF's ``EXCEPTION_HANDLER``: every API error in the contract's shape."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None

    message = FIXED_MESSAGES.get(type(exc))
    if message is None:
        message = str(exc.detail) if isinstance(exc.detail, str) else str(exc.default_detail)
    fields = validation_fields(exc.detail) if isinstance(exc, exceptions.ValidationError) else None
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = "%d" % exc.wait

    set_rollback()
    body = error_body(exc.status_code, exc.default_code, message, request_id(context["request"]), fields)
    return Response(body, status=exc.status_code, headers=headers)


def json_error(request, status: int, code: str, message: str) -> HttpResponse:
    """An error outside DRF, rendered byte for byte as DRF's ``JSONRenderer`` would."""
    body = JSONRenderer().render(error_body(status, code, message, request_id(request)))
    return HttpResponse(body, status=status, content_type="application/json")


def bad_request(request, exception=None) -> HttpResponse:
    """Django's ``handler400``: ``SuspiciousOperation`` (``DisallowedHost`` among them) and ``BadRequest``."""
    if isinstance(exception, DisallowedHost):
        return json_error(request, 400, "bad_host", "Invalid Host header.")
    return json_error(request, 400, "bad_request", "Bad request.")


def not_found(request, exception=None) -> HttpResponse:
    return json_error(request, 404, "not_found", "Not found.")


def server_error(request) -> HttpResponse:
    return json_error(request, 500, "server_error", "Internal server error.")
