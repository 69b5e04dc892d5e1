"""The ``Allow`` header, which DRF sends on every answer of a view, not only on 405s."""

from __future__ import annotations

from collections.abc import Iterable

from flask import Response, request

# DRF lists a view's methods in the order of ``View.http_method_names``.
METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")


def allow(methods: Iterable[str]) -> str:
    methods = set(methods)
    return ", ".join(method for method in METHOD_ORDER if method in methods)


def add_allow_header(response: Response) -> Response:
    """``after_request`` hook: the matched route's methods, as DRF's ``default_response_headers``."""
    rule = request.url_rule
    if rule is not None and rule.methods and "Allow" not in response.headers:
        response.headers["Allow"] = allow(rule.methods)
    return response
