"""What a successful check yields, and how a failed one is reported."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: A role name: safe in a comma-separated header, the same rule for config and tokens.
ROLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
#: An identity from a token: printable ASCII (it becomes a header and REMOTE_USER).
TOKEN_IDENTITY = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?$")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request: ``name`` is the consumer (or token subject), ``scheme`` how it proved it."""

    name: str
    roles: frozenset[str]
    scheme: str  # "api-key" | "jwt" | "basic"

    def has_any(self, roles: frozenset[str]) -> bool:
        return not roles or not roles.isdisjoint(self.roles)


class BadCredentials(Exception):
    """Credentials were sent but prove nothing; ``message`` is safe to show the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
