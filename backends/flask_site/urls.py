"""Absolute URLs built from the request exactly as Django and DRF build them.

Both stacks must print byte-identical links, so the host comes from the raw
``Host`` header (Django's ``get_host``), paths are escaped with Django's safe
characters, and query strings are rewritten like DRF's
``replace_query_param``/``remove_query_param``.
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

from flask import request


def _origin() -> str:
    environ = request.environ
    scheme = environ["wsgi.url_scheme"]
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ["SERVER_NAME"]
        port = str(environ.get("SERVER_PORT", ""))
        if port != ("443" if scheme == "https" else "80"):
            host = f"{host}:{port}"
    return f"{scheme}://{host}"


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
