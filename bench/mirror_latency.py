"""Client latency with shadow comparison on and off, on the real stacks.

``python -m bench.mirror_latency`` starts ``stackgate run`` twice on one
seeded SQLite database — a 50/50 split route with ``mirror = true``, and the
same route without — and drives each with the same GET requests from
``--concurrency`` clients, interleaving the two in ``--rounds`` rounds. It
prints the median, p90 and p99 latency of each and the ratio (target: the
mirror adds no more than 10 %).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
[split]
mirror_duty_cycle = {duty_cycle}

[backends.flask]
kind = "wsgi"
app = "backends.flask_site.wsgi:app"

[backends.django]
kind = "wsgi"
app = "backends.django_site.wsgi:application"

[consumers.{user}]
roles = ["user"]
api_keys = ["sha256:{digest}"]

[[routes]]
prefix = "/v1"
split = {{ flask = 50, django = 50 }}
mirror = {mirror}
mirror_ignore = ["url"]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(folder: Path, mirror: bool, env: dict, key: str, user: str, duty_cycle: float) -> tuple[subprocess.Popen, int]:
    config = folder / f"mirror-{mirror}.toml"
    config.write_text(CONFIG.format(user=user, digest=hashlib.sha256(key.encode()).hexdigest(), mirror=str(mirror).lower(), duty_cycle=duty_cycle))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config), "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_stackgate/health", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("gateway did not start")


async def drive(port: int, key: str, ids: list[int], requests: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=30) as client:
        async def worker(n: int) -> None:
            for i in range(n, requests, concurrency):
                started = time.perf_counter()
                response = await client.get(f"/v1/todos/{ids[i % len(ids)]}")
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mirror_latency")
    parser.add_argument("--requests", type=int, default=1000, help="requests per round and configuration")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duty-cycle", type=float, default=0.2, help="[split].mirror_duty_cycle of the mirrored gateway")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="stackgate-mirror-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SCRIPT_NAME")}
    env.update(STACKGATE_DATA_DIR=str(folder), STACKGATE_LOG_LEVEL="warning")
    subprocess.run([sys.executable, "-m", "gateway", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
    user, key = "bench", "sgk_" + secrets.token_urlsafe(32)
    procs = {mirror: start(folder, mirror, env, key, user, args.duty_cycle) for mirror in (False, True)}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{procs[False][1]}", headers={"X-API-Key": key}) as client:
            ids = [client.post("/v1/todos", json={"title": f"t{i}"}).json()["id"] for i in range(20)]
        results: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for mirror in (False, True):
                results[mirror] += asyncio.run(drive(procs[mirror][1], key, ids, args.requests, args.concurrency))
        with httpx.Client() as client:
            stats = client.get(f"http://127.0.0.1:{procs[True][1]}/_stackgate/metrics").text
        compared = [line for line in stats.splitlines() if line.startswith("stackgate_mirror_results_total")]
    finally:
        for proc, _ in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)

    def summary(values: list[float]) -> tuple[float, float, float, float]:
        ordered = sorted(values)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
        return statistics.fmean(ordered) * 1000, statistics.median(ordered) * 1000, pick(0.90), pick(0.99)

    off, on = summary(results[False]), summary(results[True])
    print(f"concurrency {args.concurrency}, {args.rounds} rounds x {args.requests} requests each, duty cycle {args.duty_cycle:g}")
    print(f"{'':12} {'mean ms':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    print(f"{'mirror off':12} " + " ".join(f"{v:8.2f}" for v in off))
    print(f"{'mirror on':12} " + " ".join(f"{v:8.2f}" for v in on))
    print(f"{'on / off':12} " + " ".join(f"{b / a:8.2f}" for a, b in zip(off, on)))
    print("mirror results:", "; ".join(compared) or "none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
