"""Compare two backends' answers to one request: status, and the body as data.

Bodies are compared when both are JSON of one media type (``mirror_ignore``
keys left out at any depth) or both empty; any other pair is
``not_comparable`` and keeps no body. A mismatch carries a unified diff, cut
at ``DIFF_MAX_LINES`` or ``DIFF_MAX_BYTES`` and then flagged ``truncated``.
Used by the mirror in the gateway's process and inside the shadow process.
"""

from __future__ import annotations

import difflib
import json
from itertools import chain
from typing import Any, Iterable, NamedTuple, Optional

#: A stored diff keeps at most this many lines ...
DIFF_MAX_LINES = 200
#: ... and this many bytes (UTF-8): a few screens of the dashboard, 50 of them per route in memory at most.
DIFF_MAX_BYTES = 16 * 1024
#: The last line of a diff that was cut.
CUT_MARKER = "… diff cut here (more than {lines} lines or {kib} KiB)".format(lines=DIFF_MAX_LINES, kib=DIFF_MAX_BYTES // 1024)


class Answer(NamedTuple):
    status: int
    content_type: bytes
    body: bytes


class Mismatch(NamedTuple):
    status: list[int]
    diff: str
    truncated: bool = False


def media_type(content_type: bytes) -> str:
    """``b"application/json; charset=utf-8"`` -> ``"application/json"``."""
    return content_type.split(b";", 1)[0].strip().lower().decode("latin-1")


def is_json(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def comparable(served: Answer, other: Answer) -> bool:
    """Whether the two bodies can be compared: both JSON of one media type, or both empty."""
    if not served.body and not other.body:
        return True
    a, b = media_type(served.content_type), media_type(other.content_type)
    return a == b and is_json(a)


def _strip(value: Any, ignore: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v, ignore) for k, v in value.items() if k not in ignore}
    if isinstance(value, list):
        return [_strip(v, ignore) for v in value]
    return value


def _normalise(answer: Answer, ignore: frozenset[str]) -> Any:
    if answer.body:
        try:
            return _strip(json.loads(answer.body), ignore)
        except ValueError:
            pass
    return answer.body.decode("utf-8", "replace")


def _render(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.splitlines()
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def capped(lines: Iterable[str]) -> tuple[str, bool]:
    """Join ``lines``; when that passes ``DIFF_MAX_LINES`` or ``DIFF_MAX_BYTES``, cut it to end with
    ``CUT_MARKER`` within both caps (the start of a long line kept) and say so: ``(text, truncated)``."""
    out: list[str] = []
    size = 0  # bytes of "\n".join(out), plus one
    limit_lines = DIFF_MAX_LINES - 1
    limit_bytes = DIFF_MAX_BYTES - len(CUT_MARKER.encode("utf-8"))
    for line in lines:
        cost = len(line.encode("utf-8")) + 1
        if len(out) < DIFF_MAX_LINES and size + cost <= DIFF_MAX_BYTES + 1:
            out.append(line)
            size += cost
            continue
        popped = False
        while out and (len(out) > limit_lines or size > limit_bytes):
            size -= len(out.pop().encode("utf-8")) + 1
            popped = True
        room = limit_bytes - size - 1
        if not popped and len(out) < limit_lines and room > 0:
            out.append(line.encode("utf-8")[:room].decode("utf-8", "ignore"))
        out.append(CUT_MARKER)
        return "\n".join(out), True
    return "\n".join(out), False


def compare(served: Answer, other: Answer, ignore: frozenset[str], served_name: str, other_name: str) -> Optional[Mismatch]:
    """``None`` when the answers agree, else the two statuses and a readable diff.

    For comparable answers only (``comparable``); a status difference between
    others is ``status_mismatch``.
    """
    if served == other and not ignore:  # the common case: the same bytes, nothing parsed
        return None
    a, b = _normalise(served, ignore), _normalise(other, ignore)
    if served.status == other.status and a == b:
        return None
    diff = difflib.unified_diff(
        [f"status: {served.status}", *_render(a)],
        [f"status: {other.status}", *_render(b)],
        fromfile=served_name,
        tofile=other_name,
        lineterm="",
        n=2,
    )
    text, truncated = capped(diff)
    return Mismatch([served.status, other.status], text, truncated)


def status_mismatch(served: Answer, other: Answer, served_name: str, other_name: str) -> Mismatch:
    """Two answers whose bodies cannot be compared, but whose statuses differ: the heads only."""
    def head(answer: Answer) -> list[str]:
        return [f"status: {answer.status}", f"content-type: {media_type(answer.content_type) or '-'}"]

    diff = difflib.unified_diff(head(served), head(other), fromfile=served_name, tofile=other_name, lineterm="", n=2)
    text, truncated = capped(chain(diff, ["(bodies not compared: not JSON of one media type)"]))
    return Mismatch([served.status, other.status], text, truncated)


def outcome(served: Answer, other: Optional[Answer], ignore: frozenset[str], served_name: str, other_name: str) -> tuple:
    """A copy's result: ``("skipped",)`` (``other`` is None: its body was over the limit),
    ``("not_comparable",)``, ``("match",)`` or ``("mismatch", Mismatch)``."""
    if other is None:
        return ("skipped",)
    if not comparable(served, other):
        if served.status != other.status:
            return ("mismatch", status_mismatch(served, other, served_name, other_name))
        return ("not_comparable",)
    mismatch = compare(served, other, ignore, served_name, other_name)
    return ("match",) if mismatch is None else ("mismatch", mismatch)


def content_type(headers: Any) -> bytes:
    for name, value in headers:
        if name == b"content-type":
            return value
    return b""
