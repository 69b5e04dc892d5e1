"""Compare two backends' answers to one request: status, and the body as data.

JSON bodies are compared as parsed values with the ``mirror_ignore`` keys left
out at any depth; other bodies as text. A mismatch comes with a unified diff
of both answers (status line first, JSON pretty-printed with sorted keys).

Used by the mirror in the gateway's process and, for WSGI stacks, inside the
shadow process, so that parsing and diffing never cost the event loop.
"""

from __future__ import annotations

import difflib
import json
from typing import Any, NamedTuple, Optional


class Answer(NamedTuple):
    status: int
    content_type: bytes
    body: bytes


class Mismatch(NamedTuple):
    status: list[int]
    diff: str


def _strip(value: Any, ignore: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v, ignore) for k, v in value.items() if k not in ignore}
    if isinstance(value, list):
        return [_strip(v, ignore) for v in value]
    return value


def _normalise(answer: Answer, ignore: frozenset[str]) -> Any:
    if b"json" in answer.content_type:
        try:
            return _strip(json.loads(answer.body), ignore)
        except ValueError:
            pass
    return answer.body.decode("utf-8", "replace")


def _render(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.splitlines()
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def compare(served: Answer, other: Answer, ignore: frozenset[str], served_name: str, other_name: str) -> Optional[Mismatch]:
    """``None`` when the answers agree, else the two statuses and a readable diff."""
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
    return Mismatch([served.status, other.status], "\n".join(diff))


def outcome(served: Answer, other: Optional[Answer], ignore: frozenset[str], served_name: str, other_name: str) -> tuple:
    """A copy's result: ``("skipped",)`` (``other`` is None: its body was over the limit),
    ``("match",)`` or ``("mismatch", Mismatch)``."""
    if other is None:
        return ("skipped",)
    mismatch = compare(served, other, ignore, served_name, other_name)
    return ("match",) if mismatch is None else ("mismatch", mismatch)


def content_type(headers: Any) -> bytes:
    for name, value in headers:
        if name == b"content-type":
            return value
    return b""
