"""One canonical reading of a request path, shared by routing, policies and backends.

The gateway decides on exactly the path the backend will see: percent-escapes
are decoded once here, and anything that two parsers could read two ways is
refused instead of normalised (see docs/security.md):

- encoded ``/``, ``\\``, ``;``, ``#``, ``?``, ``%`` never reach a backend
  decoded, so they are refused;
- dot segments (``.``, ``..``, raw or encoded) and empty segments (``//``)
  are refused, never resolved;
- control characters, NUL, raw ``\\`` and ``;``, malformed escapes and
  invalid or overlong UTF-8 are refused.

Letter case is kept: routes match case-sensitively, as Django and Flask do.
"""

from __future__ import annotations

import re
from urllib.parse import quote

_HEX = b"0123456789abcdefABCDEF"
# Bytes that may stand raw in a path segment (RFC 3986 pchar without ';').
_RAW_OK = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,=:@/%")
# Decoded from an escape, these would change how the path splits or parses.
_DECODED_FORBIDDEN = frozenset(b"/\\;#?%") | frozenset(range(0x20)) | {0x7F}
_SAFE = "/!$&'()*+,=:@-._~"

_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Z]+")


class BadPath(ValueError):
    """The request path cannot be read one way only."""


# A path of raw ASCII pchars without escapes: nothing to decode (the common case, one regex).
_PLAIN = re.compile(rb"/[A-Za-z0-9\-._~!$&'()*+,=:@/]*")
_PLAIN_STR = re.compile(_PLAIN.pattern.decode("ascii"))


def canonical_path(raw: bytes) -> str:
    """Decode ``raw`` (the request target's path, still escaped) or raise BadPath."""
    if _PLAIN.fullmatch(raw):
        return _check_segments(raw.decode("ascii"))
    return _decode(raw)


def _decode(raw: bytes) -> str:
    """The general case: every byte looked at, every escape decoded and checked."""
    if not raw.startswith(b"/"):
        raise BadPath("The request target must be a path starting with '/' (origin form).")
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x25:  # '%'
            if i + 2 >= n or raw[i + 1] not in _HEX or raw[i + 2] not in _HEX:
                raise BadPath("Malformed percent-escape in the path: '%' must be followed by two hex digits.")
            decoded = int(raw[i + 1 : i + 3], 16)
            if decoded in _DECODED_FORBIDDEN:
                raise BadPath(f"The path must not contain an encoded {_describe(decoded)}.")
            out.append(decoded)
            i += 3
            continue
        if byte >= 0x80:
            out.append(byte)  # raw UTF-8, checked below like decoded bytes
        elif byte not in _RAW_OK:
            raise BadPath(f"The path must not contain {_describe(byte)}.")
        else:
            out.append(byte)
        i += 1
    try:
        path = out.decode("utf-8")  # strict: refuses overlong forms and surrogates
    except UnicodeDecodeError:
        raise BadPath("The path is not valid UTF-8.") from None
    if any(ch in path for ch in "\u0085\u2028\u2029") or any(0x80 <= ord(ch) < 0xA0 for ch in path):
        raise BadPath("The path must not contain control characters.")
    return _check_segments(path)


def _check_segments(path: str) -> str:
    if "/." not in path and "//" not in path:
        return path  # no dot segment and no empty one can be in it
    segments = path.split("/")
    for index, segment in enumerate(segments[1:], start=1):
        if segment in (".", ".."):
            raise BadPath("The path must not contain dot segments ('.' or '..').")
        if segment == "" and index != len(segments) - 1:
            raise BadPath("The path must not contain empty segments ('//').")
    return path


def encode_path(path: str) -> bytes:
    """The canonical escaped form of a canonical path (for ``raw_path``)."""
    if _PLAIN_STR.fullmatch(path):
        return path.encode("ascii")  # every character is one quote() keeps
    return quote(path, safe=_SAFE).encode("ascii")


def valid_method(method: str) -> bool:
    """An HTTP method must be an upper-case token (RFC 9110 token, no lower case)."""
    return _METHOD.fullmatch(method) is not None


def _describe(byte: int) -> str:
    names = {0x2F: "'/'", 0x5C: "'\\'", 0x3B: "';'", 0x23: "'#'", 0x3F: "'?'", 0x25: "'%'", 0x00: "NUL"}
    if byte in names:
        return names[byte]
    if byte < 0x20 or byte == 0x7F:
        return f"control character 0x{byte:02X}"
    return f"character {chr(byte)!r}"
