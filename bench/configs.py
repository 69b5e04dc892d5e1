"""The configurations under test, one builder each; ``CONFIGS`` is the one list of their names.

A builder turns (context, stack, run folder) into a ``Target``: the
processes to start, on fresh loopback ports, and the clients wrk plays.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench import stackgate
from bench.model import (
    ANONYMOUS,
    CEILING_PREFIX,
    SPLIT,
    SPLIT_PREFIX,
    STACKS,
    Client,
    Consumer,
    ProcSpec,
    Ready,
    Stack,
    Target,
)

WORKERS = 2
HEALTH = "/_stackgate/health"
API_KEY_HEADER = "X-API-Key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Context:
    python: str
    env: dict[str, str]
    """Environment of every server: the seeded STACKGATE_DATA_DIR, no DATABASE_URL/SCRIPT_NAME."""
    owners: dict[str, list[int]]
    """Seeded todo ids by owner."""
    consumers: list[Consumer]
    bare_explicit_auth: bool = True
    """Whether the bare route says ``auth = "none"`` (False while the gateway does not know the key)."""

    def anonymous(self) -> list[Client]:
        return [Client(ANONYMOUS, self.owners[ANONYMOUS][0])]

    def keyed(self) -> list[Client]:
        return [Client(c.name, self.owners[c.name][0], ((API_KEY_HEADER, c.key),)) for c in self.consumers]


Builder = Callable[[Context, str, Path], Target]


@dataclass(frozen=True)
class ConfigSpec:
    id: str
    title: str
    scope: str
    """``stack``: one target per stack; ``split``: one target with both stacks; ``none``: no stack (the ceiling)."""
    build: Builder
    stackgate: bool = False


# --- the processes ----------------------------------------------------------------


def _gunicorn(ctx: Context, stack: Stack, port: int) -> ProcSpec:
    probe = f"{stack.prefix}/todos/{ctx.owners[ANONYMOUS][0]}"
    return ProcSpec(
        "gunicorn",
        [ctx.python, "-m", "gunicorn", "--workers", str(WORKERS), "--worker-class", "sync",
         "--bind", f"127.0.0.1:{port}", "--log-level", "warning", stack.app],
        # gunicorn moves the prefix from PATH_INFO to SCRIPT_NAME. The bench migrated the database before
        # anything starts (bench.seed.prepare): a stack's deployment of its own runs no migrations on import
        # (the demo's Flask stack would otherwise load Django to apply the embedded schema).
        {**ctx.env, "SCRIPT_NAME": stack.prefix, "STACKGATE_MIGRATE": "0"},
        Ready(port, probe),
    )


def nginx_config(folder: Path, port: int, upstream_port: int, workers: int = WORKERS) -> str:
    """nginx as a reverse proxy is usually deployed: N workers, keep-alive to the upstream, access log on."""
    return f"""\
worker_processes {workers};
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
{"user root;" if os.geteuid() == 0 else ""}
events {{
    worker_connections 4096;
}}
http {{
    access_log {folder}/nginx-access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _stackgate(ctx: Context, config_text: str, folder: Path, port: int) -> tuple[ProcSpec, Path]:
    path = folder / "stackgate.toml"
    path.write_text(config_text)
    spec = ProcSpec(
        "stackgate",
        [ctx.python, "-m", "gateway", "run", "--config", str(path), "--port", str(port), "--workers", str(WORKERS)],
        dict(ctx.env),
        Ready(port, HEALTH),
    )
    return spec, path


def _redis(folder: Path, port: int) -> ProcSpec:
    return ProcSpec(
        "redis",
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(folder)],
        {},
        Ready(port),
    )


def _uvicorn(ctx: Context, module: str, port: int, workers: int, env: dict[str, str], probe: str) -> ProcSpec:
    return ProcSpec(
        "uvicorn",
        [ctx.python, "-m", "uvicorn", module, "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--no-access-log", "--log-level", "warning"],
        {**ctx.env, **env},
        Ready(port, probe),
    )


# --- the configurations -----------------------------------------------------------


def build_a(ctx: Context, stack: str, folder: Path) -> Target:
    s = STACKS[stack]
    upstream, port = free_port(), free_port()
    conf = folder / "nginx.conf"
    conf.write_text(nginx_config(folder, port, upstream))
    nginx = ProcSpec(
        "nginx",
        [nginx_binary(), "-p", str(folder), "-c", str(conf), "-e", str(folder / "nginx-error.log"), "-g", "daemon off;"],
        {},
        Ready(port, f"{s.prefix}/todos/{ctx.owners[ANONYMOUS][0]}"),
    )
    return Target("a", stack, [_gunicorn(ctx, s, upstream), nginx], port, s.prefix, ctx.anonymous(), {"nginx": conf})


def build_b(ctx: Context, stack: str, folder: Path) -> Target:
    s = STACKS[stack]
    port = free_port()
    return Target("b", stack, [_gunicorn(ctx, s, port)], port, s.prefix, ctx.anonymous())


def _build_c(workers: int) -> Builder:
    def build(ctx: Context, stack: str, folder: Path) -> Target:
        s = STACKS[stack]
        port = free_port()
        env = {"BENCH_WSGI_APP": s.app, "BENCH_PREFIX": s.prefix}
        probe = f"{s.prefix}/todos/{ctx.owners[ANONYMOUS][0]}"
        proc = _uvicorn(ctx, "bench.apps.a2wsgi_mount:app", port, workers, env, probe)
        return Target("c" if workers == WORKERS else f"c{workers}", stack, [proc], port, s.prefix, ctx.anonymous())

    return build


def build_d0(ctx: Context, stack: str, folder: Path) -> Target:
    s = STACKS[stack]
    port = free_port()
    proc, path = _stackgate(ctx, stackgate.bare_config(s, ctx.bare_explicit_auth), folder, port)
    return Target("d0", stack, [proc], port, s.prefix, ctx.anonymous(), {"stackgate": path})


def _build_chain(config_id: str, redis: bool, split: bool) -> Builder:
    def build(ctx: Context, stack: str, folder: Path) -> Target:
        procs = []
        storage = "memory://"
        if redis:
            redis_port = free_port()
            procs.append(_redis(folder, redis_port))
            storage = f"redis://127.0.0.1:{redis_port}/0"
        if split:
            stacks = [STACKS[name] for name in SPLIT]
            prefix = SPLIT_PREFIX
            text = stackgate.chain_config(stacks, prefix, ctx.consumers, storage, split=dict(SPLIT))
        else:
            stacks = [STACKS[stack]]
            prefix = stacks[0].prefix
            text = stackgate.chain_config(stacks, prefix, ctx.consumers, storage)
        port = free_port()
        proc, path = _stackgate(ctx, text, folder, port)
        procs.append(proc)
        return Target(config_id, stack, procs, port, prefix, ctx.keyed(), {"stackgate": path})

    return build


def build_f(ctx: Context, stack: str, folder: Path) -> Target:
    port = free_port()
    proc = _uvicorn(ctx, "bench.apps.ceiling:app", port, WORKERS, {}, f"{CEILING_PREFIX}/todos/1")
    return Target("f", "none", [proc], port, CEILING_PREFIX, [Client(ANONYMOUS, 1)])


CONFIGS: dict[str, ConfigSpec] = {
    spec.id: spec
    for spec in (
        ConfigSpec("a", "nginx (2 workers) -> gunicorn -w2 sync", "stack", build_a),
        ConfigSpec("b", "gunicorn -w2 sync, direct", "stack", build_b),
        ConfigSpec("c", "uvicorn -w2 + bare a2wsgi mount", "stack", _build_c(2)),
        ConfigSpec("c1", "uvicorn -w1 + bare a2wsgi mount", "stack", _build_c(1)),
        ConfigSpec("d0", "Stackgate -w2, bare route (no policy)", "stack", build_d0, stackgate=True),
        ConfigSpec("dp", "Stackgate -w2, chain (memory), pinned backend", "stack", _build_chain("dp", False, False), stackgate=True),
        ConfigSpec("d", "Stackgate -w2, chain (memory), split 90/10", "split", _build_chain("d", False, True), stackgate=True),
        ConfigSpec("ep", "Stackgate -w2, chain (Redis), pinned backend", "stack", _build_chain("ep", True, False), stackgate=True),
        ConfigSpec("e", "Stackgate -w2, chain (Redis), split 90/10", "split", _build_chain("e", True, True), stackgate=True),
        ConfigSpec("f", "uvicorn -w2 pure Starlette JSON (ceiling)", "none", build_f),
    )
}
"""In the order they run within a repeat, and are printed."""

BASELINE = "a"
BARE = "d0"
CHAIN_COST_PAIRS = {"dp": BARE, "ep": BARE, "d": BARE, "e": BARE}
"""Chain cost = 1 - x / bare for each of these configurations."""
BARE_MOUNT = "c"
"""The issue's own reference for the chain's cost as well: the stack in a bare a2wsgi mount, same workers."""


def stacks_of(spec: ConfigSpec, stacks: list[str]) -> list[str]:
    """The targets a configuration makes for the chosen stacks."""
    if spec.scope == "stack":
        return [s for s in STACKS if s in stacks]
    if spec.scope == "split":
        return ["split"] if all(name in stacks for name in SPLIT) else []
    return ["none"]

