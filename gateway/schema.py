"""Shared pieces for the config schemas that live beside each policy and backend."""

from __future__ import annotations

import re
from typing import Annotated, Any, Iterable

from pydantic import BaseModel, BeforeValidator, ConfigDict

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


class Schema(BaseModel):
    """Base of every config table: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_size(value: object) -> int:
    """``1048576``, ``"1MiB"``, ``"512KiB"``, ``"10MB"`` -> a number of bytes."""
    if isinstance(value, bool):
        raise ValueError('must be a size such as 1048576, "512KiB" or "10MiB"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    raise ValueError('must be a size such as 1048576, "512KiB" or "10MiB"')


ByteSize = Annotated[int, BeforeValidator(parse_size)]


def format_loc(loc: Iterable[Any]) -> str:
    """``("routes", 2, "auth")`` -> ``routes[2].auth``: how config problems name a key."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
