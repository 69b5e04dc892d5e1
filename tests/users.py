"""Test consumers with credentials made at import time (never the demo ones)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field


@dataclass(frozen=True)
class User:
    name: str
    roles: tuple[str, ...]
    api_key: str = field(default_factory=lambda: "sgk_" + secrets.token_urlsafe(32))

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    @property
    def key_hash(self) -> str:
        return "sha256:" + hashlib.sha256(self.api_key.encode()).hexdigest()


USERS = {
    "alice": User("alice", ("user",)),
    "bob": User("bob", ("user",)),
    "tester": User("tester", ("user", "tester")),
    "admin": User("admin", ("admin", "user")),
}


def consumers_toml(users=USERS.values()) -> str:
    """``[consumers.NAME]`` tables for config files written by tests."""
    out = []
    for user in users:
        roles = ", ".join(f'"{r}"' for r in user.roles)
        out.append(f'\n[consumers.{user.name}]\nroles = [{roles}]\napi_keys = ["{user.key_hash}"]\n')
    return "".join(out)
