"""Reading the JSON request body the way DRF's ``JSONParser`` does.

An empty body is ``{}`` whatever its content type (DRF never looks at it),
a body of another media type is a 415, and bytes that ``backends.json_body``
refuses (not strict JSON, nested too deep, a duplicate key) are a parse error.
"""

from __future__ import annotations

import codecs

from flask import request
from werkzeug.exceptions import UnsupportedMediaType
from werkzeug.http import parse_options_header

from backends import json_body

from .errors import MalformedJSON

MAX_MEDIA_TYPE_LENGTH = 256


def _content_length() -> int:
    environ = request.environ
    try:
        return int(environ.get("CONTENT_LENGTH", environ.get("HTTP_CONTENT_LENGTH", 0)))
    except (TypeError, ValueError):
        return 0


def _accepts_json(content_type: str) -> bool:
    """DRF's ``media_type_matches("application/json", content_type)``, wildcards included."""
    if len(content_type) > MAX_MEDIA_TYPE_LENGTH:
        return False
    main, _, sub = parse_options_header(content_type)[0].lower().partition("/")
    return main in ("application", "*") and sub in ("json", "*")


def _encoding(content_type: str) -> str:
    charset = parse_options_header(content_type)[1].get("charset")
    if charset:
        try:
            codecs.lookup(charset)
            return charset
        except LookupError:
            pass
    return "utf-8"


def read_json():
    """The decoded JSON body: any JSON value, or ``{}`` when there is no body."""
    if _content_length() <= 0:
        return {}
    content_type = request.environ.get("CONTENT_TYPE", "")
    if not _accepts_json(content_type):
        raise UnsupportedMediaType()
    try:
        text = request.get_data(cache=False).decode(_encoding(content_type))
        return json_body.loads(text)
    except (LookupError, ValueError) as exc:
        raise MalformedJSON() from exc
