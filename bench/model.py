"""The nouns of a benchmark: stacks, workloads, clients, processes and targets."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Stack:
    name: str
    app: str
    """WSGI import string, as in config.toml."""
    prefix: str
    """Public prefix the stack is served under in every configuration."""


STACKS: dict[str, Stack] = {
    "flask": Stack("flask", "backends.flask_site.wsgi:app", "/v1"),
    "django": Stack("django", "backends.django_site.wsgi:application", "/v2"),
}

SPLIT = {"django": 90, "flask": 10}
"""The A/B weights of the split configurations."""
SPLIT_PREFIX = "/api"
CEILING_PREFIX = "/ceiling"
PAGE_SIZE = 20
NOISY_PCT = 10.0
"""Other processes using more than this share of the machine during a run make it noisy."""


@dataclass(frozen=True)
class Workload:
    name: str
    title: str

    def path(self, prefix: str, todo_id: int) -> str:
        if self.name == "item":
            return f"{prefix}/todos/{todo_id}"
        return f"{prefix}/todos?page_size={PAGE_SIZE}"


WORKLOADS: dict[str, Workload] = {
    "item": Workload("item", "GET {prefix}/todos/<id>: one todo (small JSON)"),
    "list": Workload("list", f"GET {{prefix}}/todos?page_size={PAGE_SIZE}: a {PAGE_SIZE}-item page"),
}


@dataclass(frozen=True)
class Consumer:
    """A Stackgate consumer with one API key; it is also the owner of its todos."""

    name: str
    key: str

    @property
    def key_hash(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()

    @classmethod
    def many(cls, count: int) -> list["Consumer"]:
        return [cls(f"bench-{i:03d}", f"sgb_{secrets.token_urlsafe(24)}") for i in range(count)]


ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Client:
    """What one simulated client sends: its headers, and the id of a todo it owns."""

    owner: str
    todo_id: int
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Ready:
    """How to tell a started process is serving: an HTTP 200 on ``path``, or a TCP accept."""

    port: int
    path: Optional[str] = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class ProcSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Ready


@dataclass
class Target:
    """One configuration serving one stack (or the split, or the ceiling): what to start and how to drive it."""

    config: str
    stack: str
    """``flask``, ``django``, ``split`` (both stacks, 90/10) or ``none`` (the ceiling)."""
    procs: list[ProcSpec]
    port: int
    prefix: str
    clients: list[Client]
    files: dict[str, Path] = field(default_factory=dict)
    """Generated config files, by role (``stackgate``, ``nginx``)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, workload: Workload) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
        return [(workload.path(self.prefix, c.todo_id), c.headers) for c in self.clients]
