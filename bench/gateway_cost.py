"""The gateway's own work per request, without a server or a stack: ``python -m bench.gateway_cost``.

Builds the bench's bare route (d0) and full chain (dp: API key, role, memory
throttle; d: the same with a 90/10 split) in front of a trivial ASGI app and
calls ``Gateway.__call__`` directly, one request after another on one core.
What it prints is the time the gateway's Python takes per request, which the
wrk runs cannot separate from the stacks' and the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import sys
import time
from typing import Any

BODY = b'{"id": 1, "title": "x", "done": false}'
KEYS = [f"bench-cost-key-{i:03d}" for i in range(100)]


async def tiny(scope: dict, receive: Any, send: Any) -> None:
    """The backend: answers at once, so that only the gateway is measured."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def config(route: str) -> str:
    backends = "".join(f'[backends.{n}]\nkind = "asgi"\napp = "bench.gateway_cost:tiny"\n\n' for n in ("a", "b"))
    if route == "bare":
        return backends + '[[routes]]\nprefix = "/v1"\nbackend = "a"\nauth = "none"\n'
    consumers = "".join(
        f'[consumers.c{i}]\nroles = ["user"]\napi_keys = ["sha256:{hashlib.sha256(k.encode()).hexdigest()}"]\n\n'
        for i, k in enumerate(KEYS)
    )
    target = 'split = { a = 90, b = 10 }\n' if route == "split" else 'backend = "a"\n'
    return (
        backends
        + consumers
        + '[throttle]\nstorage = "memory://"\n\n[throttle.policies.bench]\nrates = ["100000000/minute"]\n\n'
        + '[[routes]]\nprefix = "/v1"\nauth = "required"\nroles = ["user"]\nthrottle = "bench"\n'
        + target
    )


async def measure(route: str, requests: int, warmup: int, rounds: int = 1, fastest: bool = False) -> float:
    """Microseconds per request: the mean, or with ``fastest`` the fastest of ``rounds`` equal rounds
    (on a shared, noisy machine the fastest round is the figure least disturbed by other work)."""
    from gateway.app import create_app
    from gateway.config import parse_config

    app = create_app(parse_config(config(route).encode(), "bench-gateway-cost.toml"))
    keys = [k.encode() for k in KEYS]
    message = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict:
        return message

    async def one(i: int) -> None:
        path = f"/v1/todos/{i}"
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"x-api-key", keys[i % len(keys)])],
            "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8000),
        }
        status = []

        async def send(m: dict) -> None:
            if m["type"] == "http.response.start":
                status.append(m["status"])

        await app(scope, receive, send)
        if status != [200]:
            raise SystemExit(f"{route}: request {i} answered {status}, not 200")

    for i in range(warmup):
        await one(i)
    rounds = max(1, min(rounds, requests))
    size = requests // rounds
    times = []
    for r in range(rounds):
        started = time.perf_counter()
        for i in range(r * size, (r + 1) * size):
            await one(i)
        times.append((time.perf_counter() - started) / size * 1e6)
    return min(times) if fastest else sum(times) / len(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1, help="split the requests into this many rounds")
    parser.add_argument("--fastest", action="store_true", help="report the fastest round, not the mean")
    parser.add_argument("--log", action="store_true", help="with the JSON access log on (written to a buffer)")
    args = parser.parse_args(argv)
    if args.log:
        from gateway import logs

        sink, sys.stderr = sys.stderr, io.StringIO()
        try:
            logs.setup("info")
        finally:
            sys.stderr = sink
    results = {
        route: asyncio.run(measure(route, args.requests, args.warmup, args.rounds, args.fastest))
        for route in ("bare", "pinned", "split")
    }
    for route, micros in results.items():
        print(f"{route:7} {micros:6.1f} us/request")
    print(json.dumps({"access_log": args.log, "fastest_of_rounds": args.rounds if args.fastest else None,
                      "us_per_request": {k: round(v, 2) for k, v in results.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
