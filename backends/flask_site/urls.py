"""Absolute URLs built from the request exactly as Django and DRF build them.

Both stacks must print byte-identical links, so the host is read and checked
as Django's ``get_host()`` does it (``request_host``), paths are escaped with
Django's safe characters, and query strings are rewritten like DRF's
``replace_query_param``/``remove_query_param``.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

from flask import current_app, request

from .errors import InvalidHost

# Django's ``host_validation_re``: a name or IPv4 address, or an IPv6 address in brackets, then ":digits".
_HOST = re.compile(r"([a-z0-9.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])(?::([0-9]+))?")


def _raw_host() -> str:
    environ = request.environ
    host = environ.get("HTTP_HOST")
    if not host:
        scheme = environ["wsgi.url_scheme"]
        host = environ["SERVER_NAME"]
        port = str(environ.get("SERVER_PORT", ""))
        if port != ("443" if scheme == "https" else "80"):
            host = f"{host}:{port}"
    return host


def _trusted(domain: str, patterns) -> bool:
    """Django's ``validate_host``: ``.example.com`` is it and its subdomains, ``*`` any; None (the default) trusts any host."""
    if patterns is None:
        return True
    return any(
        pattern == "*" or pattern == domain or (pattern.startswith(".") and (domain.endswith(pattern) or domain == pattern[1:]))
        for pattern in (p.lower() for p in patterns)
    )


def request_host() -> str:
    """The ``Host`` as Django's ``get_host()`` returns it, or ``InvalidHost`` (400) where Django raises
    ``DisallowedHost``: not a valid host, or not in the app's ``ALLOWED_HOSTS`` when set (Django's
    setting and syntax; ``FLASK_ALLOWED_HOSTS='["api.example.com"]'``). Not Flask's ``TRUSTED_HOSTS``:
    Flask-RESTful's error router would raise its ``SecurityError`` again while rendering the error.

    Behind the gateway every host is already valid and allowed (``[gateway] allowed_hosts``); this
    keeps the stack as strict as Django's when it runs on its own."""
    host = _raw_host()
    match = _HOST.fullmatch(host.lower())
    if match is None or not _trusted(match.group(1).removesuffix("."), current_app.config.get("ALLOWED_HOSTS")):
        raise InvalidHost()
    return host


def check_host() -> None:
    """``before_request``: refuse a bad host on every request, as Django's ``CommonMiddleware`` does."""
    request_host()


def _origin() -> str:
    return f"{request.environ['wsgi.url_scheme']}://{request_host()}"


def _escape_path(path: str) -> str:
    return quote(path, safe="/:@&+$,-_.!~*'()")


def absolute_url(path: str) -> str:
    """``path`` (relative to the mount point) as an absolute URL under ``SCRIPT_NAME``."""
    return _origin() + _escape_path(request.script_root + path)


def request_url() -> str:
    """The URL of the current request, as Django's ``build_absolute_uri()`` gives it."""
    url = _origin() + _escape_path(request.script_root + request.path)
    query = request.environ.get("QUERY_STRING", "")
    if query:
        url += "?" + quote(query, safe="/#%[]=:;$&()+,!?*@'~")
    return url


def _with_query(url: str, update) -> str:
    scheme, netloc, path, query, fragment = urlsplit(url)
    params = parse_qs(query, keep_blank_values=True)
    update(params)
    return urlunsplit((scheme, netloc, path, urlencode(sorted(params.items()), doseq=True), fragment))


def replace_query_param(url: str, key: str, value: object) -> str:
    return _with_query(url, lambda params: params.__setitem__(key, [str(value)]))


def remove_query_param(url: str, key: str) -> str:
    return _with_query(url, lambda params: params.pop(key, None))
