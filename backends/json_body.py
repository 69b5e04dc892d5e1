"""How both stacks decode a JSON request body: one function, so they never disagree.

Strict JSON (no ``NaN``/``Infinity``), at most ``MAX_DEPTH`` nested arrays
and objects, and no object with the same key twice: each of these is a
``ValueError``, which both stacks answer with 400 ``parse_error``
(docs/contract.md, "Request bodies"). The depth is checked before decoding,
so a body nested 100,000 deep is refused, not a ``RecursionError``; a
duplicate key is refused because "last wins" is only one reading, and a
proxy or a logger in front may read the first.
"""

from __future__ import annotations

import json
import re

MAX_DEPTH = 64

# A JSON string (escapes included), or one bracket.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


class DuplicateKey(ValueError):
    pass


class TooDeep(ValueError):
    pass


def _reject_constant(name: str):
    raise ValueError(f"Out of range float values are not JSON compliant: {name!r}")


def _object(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise DuplicateKey(f"Duplicate key in a JSON object: {key!r}")
    return obj


def depth_exceeds(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` (brackets inside strings do not count)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > limit:
                return True
        elif token == "]" or token == "}":
            depth -= 1
    return False


def loads(text: str):
    """The JSON value in ``text``; ``ValueError`` for anything the contract calls malformed."""
    if depth_exceeds(text):
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object)
