"""Compare two backends' answers to one request: status, and the body as data.

Bodies are compared when both are JSON of one media type (``mirror_ignore``
keys left out at any depth) or both empty; any other pair is
``not_comparable`` and keeps no body. A mismatch carries a unified diff, cut
at ``DIFF_MAX_LINES`` or ``DIFF_MAX_BYTES`` and then flagged ``truncated``,
and the field paths that differ (``field_differences``), with list indices
folded, for the noise model (``gateway.shadow.noise``).
Used by the mirror in the gateway's process and inside the shadow process.
"""

from __future__ import annotations

import difflib
import json
import re
from itertools import chain
from typing import Any, Iterable, NamedTuple, Optional

#: A stored diff keeps at most this many lines ...
DIFF_MAX_LINES = 200
#: ... and this many bytes (UTF-8): a few screens of the dashboard, 50 of them per route in memory at most.
DIFF_MAX_BYTES = 16 * 1024
#: The most field paths one comparison names; beyond it, the rest count as ``OTHER_FIELDS``.
FIELDS_MAX = 32
#: A value kept as an example of a field's difference is cut at this many characters.
VALUE_MAX = 120
#: Pseudo-fields: the status line, a body that is not JSON, and the paths beyond ``FIELDS_MAX``.
STATUS_FIELD = "(status)"
BODY_FIELD = "(body)"
OTHER_FIELDS = "(other fields)"
#: The value of a field one side of a pair does not have.
MISSING = "(missing)"
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
    fields: dict[str, tuple[str, str]] = {}
    """Field path -> (served value, other value), each cut at ``VALUE_MAX`` characters (``field_differences``)."""


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


def _short(value: Any) -> str:
    text = value if value is MISSING else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= VALUE_MAX else text[: VALUE_MAX - 1] + "…"


_ID_KEY = re.compile(r"^(\d+|[0-9a-fA-F-]{32,36})$")


def _key(key: str) -> str:
    """A JSON object key as a path segment; keys that are ids fold to ``{id}``, as list indices fold to ``[]``."""
    return "{id}" if _ID_KEY.match(key) else key


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def field_differences(a: Any, b: Any) -> dict[str, tuple[str, str]]:
    """Where two JSON values differ, as field paths (``results[].created_at``: list indices folded)
    -> the first pair of differing values seen there; at most ``FIELDS_MAX`` paths, then ``OTHER_FIELDS``.

    A key present on one side only differs at its path (the other value ``MISSING``); lists
    of different lengths differ at the list's own path, and their common items are compared too.
    """
    out: dict[str, tuple[str, str]] = {}

    def note(path: str, x: Any, y: Any) -> None:
        path = path or "(root)"
        if path not in out:
            if len(out) >= FIELDS_MAX:
                path = OTHER_FIELDS
                if path in out:
                    return
            out[path] = (_short(x), _short(y))

    def walk(path: str, x: Any, y: Any) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in x.keys() | y.keys():
                sub = _join(path, _key(str(key)))
                if key not in y:
                    note(sub, x[key], MISSING)
                elif key not in x:
                    note(sub, MISSING, y[key])
                else:
                    walk(sub, x[key], y[key])
        elif isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                note(path, f"{len(x)} items", f"{len(y)} items")
            for xi, yi in zip(x, y):
                walk(path + "[]", xi, yi)
        elif x != y or type(x) is not type(y):
            note(path, x, y)

    walk("", a, b)
    return out


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
    fields = {}
    if served.status != other.status:
        fields[STATUS_FIELD] = (str(served.status), str(other.status))
    if a != b:
        if isinstance(a, str) or isinstance(b, str):  # a body that is not JSON: compared whole
            fields[BODY_FIELD] = (_short(a), _short(b))
        else:
            fields.update(field_differences(a, b))
    return Mismatch([served.status, other.status], text, truncated, fields)


def status_mismatch(served: Answer, other: Answer, served_name: str, other_name: str) -> Mismatch:
    """Two answers whose bodies cannot be compared, but whose statuses differ: the heads only."""
    def head(answer: Answer) -> list[str]:
        return [f"status: {answer.status}", f"content-type: {media_type(answer.content_type) or '-'}"]

    diff = difflib.unified_diff(head(served), head(other), fromfile=served_name, tofile=other_name, lineterm="", n=2)
    text, truncated = capped(chain(diff, ["(bodies not compared: not JSON of one media type)"]))
    return Mismatch([served.status, other.status], text, truncated, {STATUS_FIELD: (str(served.status), str(other.status))})


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


class Check(NamedTuple):
    """Ask for a copy to be checked for noise (``gateway.shadow.noise``): replayed once more on its
    stack (and ``served_app``, when set, on the serving stack) and each second answer compared with the first."""

    settled: Optional[frozenset] = None
    """Check only when the pair differs on a field outside this set; None: whatever the outcome."""
    served_app: Optional[str] = None

    def wanted(self, result: tuple) -> bool:
        if result[0] not in ("match", "mismatch"):  # nothing to learn from a pair that was not compared
            return False
        if self.settled is None:
            return True
        return result[0] == "mismatch" and any(f not in self.settled for f in result[1].fields)


def self_fields(first: Optional[Answer], second: Optional[Answer], ignore: frozenset[str]) -> Optional[dict[str, tuple[str, str]]]:
    """The fields two answers of one stack to one request differ on (``{}``: none); None when they
    cannot be compared (a body over the limit, not JSON of one media type)."""
    if first is None or second is None or not comparable(first, second):
        return None
    result = compare(first, second, ignore, "first", "second")
    return {} if result is None else result.fields


def content_type(headers: Any) -> bytes:
    for name, value in headers:
        if name == b"content-type":
            return value
    return b""
