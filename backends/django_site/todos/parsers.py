"""DRF's ``JSONParser`` with the body read by ``backends.json_body``, as the Flask stack reads it.

Nested deeper than ``json_body.MAX_DEPTH`` or with a key twice in one object
is a ``ParseError`` (400 ``parse_error``), never a ``RecursionError`` (500)
nor a silent "last wins".
"""

from __future__ import annotations

import codecs

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding

from backends import json_body


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})
        try:
            return json_body.loads(codecs.getreader(encoding)(stream).read())
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
