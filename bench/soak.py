"""The soak: a bounded mixed load that must lose nothing.

``bench/soak`` (or ``python -m bench.soak``) starts a private Redis, a
database (PostgreSQL when reachable, else SQLite), and ``stackgate run
--workers 2`` with Redis throttling, then for ``--duration`` seconds (600 by
default) sends reads, writes, throttled and refused requests from concurrent
clients; a third of the way in it edits ``config.toml`` (a hot reload), at
half-time it restarts Redis. It then checks and reports:

- no 5xx answers (none are injected: the throttle is ``on_store_error = "allow"``),
  no unexpected status and no client-side error (connection reset, timeout);
- every acknowledged write (201) present exactly once in the database, and no
  row that nobody asked for;
- the reload applied: every worker ends on the edited config's version;
- throttling back after the Redis restart (429s again for the tight consumer);
- memory of the gateway's process tree flat over the second half of the run:
  a least-squares line through the samples of the second half may rise by
  less than ``--max-growth`` over that half (runs too short for the fit say
  ``n/a``);
- the shared share of that tree (the part of its PSS in pages its processes
  share: what forking the workers from the loaded supervisor saves) kept over
  the second half: its fitted line may fall by less than ``--max-shared-drop``
  (relative) over that half. Copy-on-write erodes it as the workers write to
  shared pages; it must settle, not keep falling.

Exit status 0 only when every check holds. The report goes to stdout, to
``bench/results/soak-<time>.json`` and, with ``--report FILE``, to a Markdown file.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Optional

import httpx

from bench.procs import memory, tree

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

CONFIG = """
[throttle]
storage = "{redis}"
on_store_error = "allow"

[throttle.policies.standard]
rates = ["{rate}"]

[throttle.policies.tight]
rates = ["5/second"]

[backends.flask]
kind = "wsgi"
app = "backends.flask_site.wsgi:app"

[backends.django]
kind = "wsgi"
app = "backends.django_site.wsgi:application"

[[routes]]
prefix = "/v1"
backend = "flask"
roles = ["user"]
throttle = "standard"

[[routes]]
prefix = "/v2"
backend = "django"
roles = ["user"]
throttle = "standard"

[[routes]]
prefix = "/limited"
backend = "flask"
strip_prefix = true
roles = ["user"]
throttle = "tight"
{consumers}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Redis:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (Debian package redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Database:
    """PostgreSQL (a fresh database) when reachable, else an SQLite file."""

    def __init__(self, folder: Path, want: str) -> None:
        self.admin_url = os.environ.get("STACKGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
        self.kind = "sqlite"
        self.url = f"sqlite:///{folder / 'soak.sqlite3'}"
        if want != "sqlite":
            try:
                import psycopg

                name = f"stackgate_soak_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                self.kind, self.url = "postgresql", self.admin_url.rsplit("/", 1)[0] + "/" + name
            except Exception as exc:
                if want == "postgres":
                    raise SystemExit(f"PostgreSQL is not reachable: {exc}")

    def titles(self, prefix: str) -> Counter:
        if self.kind == "sqlite":
            import sqlite3

            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
                rows = conn.execute("SELECT title FROM todos WHERE title LIKE ?", (prefix + "%",)).fetchall()
        else:
            import psycopg

            with psycopg.connect(self.url) as conn:
                rows = conn.execute("SELECT title FROM todos WHERE title LIKE %s", (prefix + "%",)).fetchall()
        return Counter(row[0] for row in rows)

    def drop(self) -> None:
        if self.kind == "postgresql":
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.url.rsplit("/", 1)[1]}" WITH (FORCE)')


def consumers() -> tuple[dict[str, str], str]:
    keys = {name: "sgk_" + secrets.token_urlsafe(32) for name in ("alice", "bob", "carol", "tight")}
    tables = "".join(
        f'\n[consumers.{name}]\nroles = ["user"]\napi_keys = ["sha256:{hashlib.sha256(key.encode()).hexdigest()}"]\n'
        for name, key in keys.items()
    )
    return keys, tables


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.folder = Path(tempfile.mkdtemp(prefix="stackgate-soak-"))
        self.redis = Redis(self.folder)
        self.database = Database(self.folder, args.database)
        self.keys, self.consumer_tables = consumers()
        self.port = free_port()
        self.config = self.folder / "config.toml"
        self.gateway: Optional[subprocess.Popen] = None
        self.statuses: Counter = Counter()
        self.by_kind: dict[str, Counter] = {}
        self.acknowledged: list[str] = []
        self.unknown_writes: list[str] = []
        self.client_errors: Counter = Counter()
        self.unexpected: list[str] = []
        self.rss: list[tuple[float, float]] = []
        self.shared: list[tuple[float, float]] = []
        """(seconds, shared share of the tree's PSS), every 5 s."""
        self.events: list[str] = []
        self.started = 0.0
        self.redis_back_at: Optional[float] = None
        self.throttled_after_restart = 0
        self.prefix = f"soak-{uuid.uuid4().hex[:8]}-"

    def render(self, rate: str) -> str:
        return CONFIG.format(redis=f"redis://127.0.0.1:{self.redis.port}/0", rate=rate, consumers=self.consumer_tables)

    def start(self) -> None:
        self.redis.start()
        env = {k: v for k, v in os.environ.items() if k not in ("SCRIPT_NAME", "STACKGATE_CONFIG")}
        env.update(DATABASE_URL=self.database.url, STACKGATE_DATA_DIR=str(self.folder), DJANGO_DEBUG="0")
        subprocess.run([sys.executable, "-m", "gateway", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
        self.config.write_text(self.render("100000/minute"))
        self.log = open(self.folder / "gateway.log", "wb")
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config), "--port", str(self.port), "--workers", "2"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/_stackgate/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("the gateway did not become ready")

    def stop(self) -> None:
        if self.gateway and self.gateway.poll() is None:
            os.killpg(self.gateway.pid, signal.SIGTERM)
            try:
                self.gateway.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.gateway.pid, signal.SIGKILL)
        self.redis.stop()
        self.database.drop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def record(self, kind: str, status: int, allowed: set[int]) -> None:
        self.statuses[status] += 1
        self.by_kind.setdefault(kind, Counter())[status] += 1
        if status not in allowed:
            self.unexpected.append(f"{kind}: {status}")

    async def client(self, number: int, deadline: float) -> None:
        rng = random.Random(number)
        users = ["alice", "bob", "carol"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=30) as http:
            mine: list[tuple[str, int]] = []
            while time.monotonic() < deadline:
                user = users[number % len(users)]
                key = {"X-API-Key": self.keys[user]}
                prefix = rng.choice(("/v1", "/v2"))
                roll = rng.random()
                try:
                    if roll < 0.45:
                        if mine and rng.random() < 0.5:
                            pfx, todo = rng.choice(mine)
                            r = await http.get(f"{rng.choice(('/v1', '/v2'))}/todos/{todo}", headers=key)
                        else:
                            r = await http.get(f"{prefix}/todos", params={"page_size": 20}, headers=key)
                        self.record("read", r.status_code, {200})
                    elif roll < 0.75:
                        title = f"{self.prefix}{uuid.uuid4().hex}"
                        try:
                            r = await http.post(f"{prefix}/todos", json={"title": title}, headers=key)
                        except httpx.HTTPError:
                            self.unknown_writes.append(title)
                            raise
                        self.record("write", r.status_code, {201})
                        if r.status_code == 201:
                            self.acknowledged.append(title)
                            mine.append((prefix, r.json()["id"]))
                    elif roll < 0.88:
                        r = await http.get("/limited/todos", headers={"X-API-Key": self.keys["tight"]})
                        self.record("throttled", r.status_code, {200, 429})
                        if r.status_code == 429 and self.redis_back_at is not None and time.monotonic() > self.redis_back_at:
                            self.throttled_after_restart += 1
                    else:
                        r = await http.get(f"{prefix}/todos", headers={"X-API-Key": "sgk_wrong-" + str(number)})
                        # 401, then 429 once this address has failed [auth] failure_rates' times (docs/auth.md)
                        refused_as = r.json().get("error", {}).get("code") if r.status_code == 429 else None
                        self.record("refused", r.status_code, {401, 429} if refused_as == "too_many_auth_failures" else {401})
                except httpx.HTTPError as exc:
                    self.client_errors[type(exc).__name__] += 1

    async def chaos(self, started: float, duration: float) -> None:
        await asyncio.sleep(duration / 3)
        self.config.write_text(self.render("90000/minute"))
        self.events.append(f"{time.monotonic() - started:.0f}s: config.toml edited (rate 100000/minute -> 90000/minute)")
        await asyncio.sleep(duration / 6)
        self.redis.stop()
        self.events.append(f"{time.monotonic() - started:.0f}s: Redis stopped")
        await asyncio.sleep(min(3, duration / 10))
        self.redis.start()
        self.redis_back_at = time.monotonic() + 1.5  # the gateway retries the store every second
        self.events.append(f"{time.monotonic() - started:.0f}s: Redis started again")

    async def sample_memory(self, deadline: float, started: float) -> None:
        while time.monotonic() < deadline:
            at = time.monotonic() - started
            self.rss.append((at, tree_rss_mib(self.gateway.pid)))
            measured = memory(tree([self.gateway.pid]))
            if measured["shared"] is not None:
                self.shared.append((at, measured["shared"]))
            await asyncio.sleep(5)

    async def run(self) -> None:
        started = time.monotonic()
        deadline = started + self.args.duration
        tasks = [asyncio.ensure_future(self.client(i, deadline)) for i in range(self.args.clients)]
        extra = [asyncio.ensure_future(self.chaos(started, self.args.duration)), asyncio.ensure_future(self.sample_memory(deadline, started))]
        await asyncio.gather(*tasks)
        for task in extra:
            if not task.done():
                task.cancel()

    def check(self) -> dict:
        time.sleep(1)
        found = self.database.titles(self.prefix)
        acknowledged = Counter(self.acknowledged)
        missing = [t for t in acknowledged if found.get(t, 0) == 0]
        duplicated = [t for t in acknowledged if found.get(t, 0) > 1]
        unexplained = [t for t in found if t not in acknowledged and t not in self.unknown_writes]
        growth = fitted_growth([(at, rss) for at, rss in self.rss if at >= self.args.duration / 2])
        shared_change = fitted_growth([(at, share) for at, share in self.shared if at >= self.args.duration / 2])
        want = hashlib.sha256(self.config.read_bytes()).hexdigest()[:12]
        versions = {}
        for _ in range(20):  # a new connection each time: every worker answers some
            health = httpx.get(f"http://127.0.0.1:{self.port}/_stackgate/health").json()
            versions[health.get("worker")] = health.get("config_version")
        five_xx = sum(n for status, n in self.statuses.items() if status >= 500)
        checks = {
            "no_5xx": five_xx == 0,
            "no_unexpected_status": not self.unexpected,
            "no_client_side_error": not self.client_errors,
            "every_acknowledged_write_once": not missing and not duplicated and not unexplained,
            "reload_applied_on_every_worker": set(versions.values()) == {want},
            "throttling_back_after_redis_restart": self.throttled_after_restart > 0,
            "memory_flat": growth is None or growth < self.args.max_growth,
            "shared_share_kept": shared_change is None or shared_change > -self.args.max_shared_drop,
        }
        return {
            "duration_s": self.args.duration,
            "clients": self.args.clients,
            "database": self.database.kind,
            "requests": sum(self.statuses.values()),
            "statuses": dict(sorted(self.statuses.items())),
            "by_kind": {k: dict(sorted(v.items())) for k, v in self.by_kind.items()},
            "client_errors": dict(self.client_errors),
            "unexpected": self.unexpected[:20],
            "writes": {
                "acknowledged": len(acknowledged),
                "present_once": sum(1 for t in acknowledged if found.get(t) == 1),
                "missing": missing[:20],
                "duplicated": duplicated[:20],
                "unknown_outcome": len(self.unknown_writes),
                "unexplained_rows": unexplained[:20],
            },
            "rss_mib": {"first": self.rss[0][1] if self.rss else None, "last": self.rss[-1][1] if self.rss else None,
                        "max": max((r for _, r in self.rss), default=None),
                        "second_half_growth": None if growth is None else round(growth, 4),
                        "samples": [[round(a, 1), round(r, 1)] for a, r in self.rss]},
            "shared_share": {"first": self.shared[0][1] if self.shared else None, "last": self.shared[-1][1] if self.shared else None,
                             "min": min((v for _, v in self.shared), default=None),
                             "second_half_change": None if shared_change is None else round(shared_change, 4),
                             "samples": [[round(a, 1), round(v, 3)] for a, v in self.shared]},
            "events": self.events,
            "config_version_wanted": want,
            "config_version_per_worker": versions,
            "throttled_after_redis_restart": self.throttled_after_restart,
            "checks": checks,
            "passed": all(checks.values()),
        }


def fitted_growth(samples: list[tuple[float, float]]) -> Optional[float]:
    """Rise of the least-squares line through ``samples`` over their span, relative to its start (None below 6 samples)."""
    if len(samples) < 6:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    slope = sum((t - mean_t) * (m - mean_m) for t, m in samples) / sum((t - mean_t) ** 2 for t, _ in samples)
    span = samples[-1][0] - samples[0][0]
    start = mean_m - slope * (mean_t - samples[0][0])
    return slope * span / start


def markdown(report: dict, command: str) -> str:
    lines = [
        "# Soak report",
        "",
        f"Command: `{command}`  ",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {report['duration_s']} s, {report['clients']} concurrent clients, "
        f"`stackgate run --workers 2`, Redis throttling, {report['database']} database, on a {os.cpu_count()}-core machine.",
        "",
        f"**Result: {'PASSED' if report['passed'] else 'FAILED'}**",
        "",
        "| check | result |",
        "|-------|--------|",
    ]
    lines += [f"| {name.replace('_', ' ')} | {'yes' if ok else '**no**'} |" for name, ok in report["checks"].items()]
    writes = report["writes"]
    memory = report["rss_mib"]
    growth = "n/a (too short for a fit)" if memory["second_half_growth"] is None else f"{memory['second_half_growth'] * 100:.1f} %"
    shared = report.get("shared_share") or {}
    if shared.get("first") is not None:
        change = "n/a (too short for a fit)" if shared["second_half_change"] is None else f"{shared['second_half_change'] * 100:+.1f} %"
        shared_line = (f"Shared share of the tree's PSS (pages its processes share): first {100 * shared['first']:.0f} %, "
                       f"last {100 * shared['last']:.0f} %, min {100 * shared['min']:.0f} %; fitted change over the second half: {change}.  ")
    else:
        shared_line = "Shared share of the tree's PSS: not measured.  "
    lines += [
        "",
        f"Requests: {report['requests']}; by status: {report['statuses']}.  ",
        f"By kind: {report['by_kind']}.  ",
        f"Writes acknowledged (201): {writes['acknowledged']}; present exactly once: {writes['present_once']}; "
        f"missing: {len(writes['missing'])}; duplicated: {len(writes['duplicated'])}; "
        f"outcome unknown (client-side error before an answer): {writes['unknown_outcome']}.  ",
        f"Client-side errors: {report['client_errors'] or 'none'}.  ",
        f"Memory of the gateway's process tree (RSS, MiB, every 5 s): first {memory['first']:.0f}, last {memory['last']:.0f}, "
        f"max {memory['max']:.0f}; fitted growth over the second half: {growth}.  ",
        f"Samples (s, MiB): {', '.join(f'{a:.0f}: {r:.0f}' for a, r in memory['samples'][::6])}.  ",
        shared_line,
        f"Config version at the end, per worker: {report['config_version_per_worker']} (wanted {report['config_version_wanted']}); "
        f"429s for the tight consumer after Redis came back: {report['throttled_after_redis_restart']}.",
        "",
        "Events:",
        "",
        *[f"- {event}" for event in report["events"]],
        "",
    ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=600, help="seconds of load (default 600)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--database", choices=["auto", "postgres", "sqlite"], default="auto")
    parser.add_argument("--max-growth", type=float, default=0.10, help="allowed RSS growth over the second half (0.10 = 10 %%)")
    parser.add_argument("--max-shared-drop", type=float, default=0.10,
                        help="allowed fall of the tree's shared share over the second half, relative (0.10 = 10 %%)")
    parser.add_argument("--report", help="also write the report as Markdown to this file (e.g. docs/soak.md)")
    args = parser.parse_args(argv)
    command = "bench/soak " + " ".join(argv if argv is not None else sys.argv[1:])
    soak = Soak(args)
    try:
        soak.start()
        asyncio.run(soak.run())
        report = soak.check()
    finally:
        soak.stop()
    text = markdown(report, command.strip())
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(report, indent=2))
    if args.report:
        Path(args.report).write_text(text)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
