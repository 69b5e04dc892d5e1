"""Two hosts, really: two network namespaces, each running ``stackgate run --workers 2``, one Redis, one PostgreSQL.

Each "host" is a network namespace this test creates, joined to this one by a
veth pair: 10.200.N.1 on this side, 10.200.N.2 inside (a private range on the
veth only). Redis and a PostgreSQL of the test's own listen on the two
this-side addresses; each gateway binds its namespace's address. Traffic goes
only to those addresses. The namespaces and links are removed in teardown.
Needs root (``ip netns``); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import glob
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from tests.services import ROOT, base_env
from tests.users import USERS, consumers_toml

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("runuser") is None,
    reason="network namespaces need root and iproute2 (ip netns); PostgreSQL runs as its own user (runuser)",
)

JWT_SECRET = secrets.token_urlsafe(32)
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
CONFIG = """
[gateway]
allowed_hosts = ["{host1}", "{host2}"]

[auth.jwt.test]
issuer = "hosts-test"
algorithms = ["HS256"]
secret = "${{HOSTS_JWT_SECRET}}"

[throttle]
storage = "${{REDIS_URL}}"
key_prefix = "{prefix}"

[throttle.policies.exact]
rates = ["60/minute"]

[backends.django]
kind = "wsgi"
app = "backends.django_site.wsgi:application"

[backends.flask]
kind = "wsgi"
app = "backends.flask_site.wsgi:app"

[backends.a]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_a"

[backends.b]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_b"

[[routes]]
prefix = "/v1"
backend = "flask"
auth = "required"

[[routes]]
prefix = "/v2"
backend = "django"
auth = "required"

[[routes]]
prefix = "/ab"
split = {{ a = 50, b = 50 }}
auth = "required"

[[routes]]
prefix = "/limited"
backend = "a"
auth = "required"
throttle = "exact"
""" + consumers_toml()


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@dataclass
class Host:
    namespace: str
    outer: str  # this side's address (Redis and PostgreSQL listen there)
    inner: str  # the namespace's address (the gateway binds it)
    link: str


@pytest.fixture
def hosts():
    tag = secrets.token_hex(2)
    in_use = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    block = random.choice([b for b in range(16, 240, 2) if f"10.200.{b}." not in in_use and f"10.200.{b + 1}." not in in_use])
    made: list[Host] = []
    try:
        for i in (1, 2):
            host = Host(f"sgso-{tag}-{i}", f"10.200.{block + i - 1}.1", f"10.200.{block + i - 1}.2", f"sgso{tag}h{i}")
            peer = f"sgso{tag}n{i}"
            run("ip", "netns", "add", host.namespace)
            made.append(host)
            run("ip", "link", "add", host.link, "type", "veth", "peer", "name", peer)
            run("ip", "link", "set", peer, "netns", host.namespace)
            run("ip", "addr", "add", f"{host.outer}/24", "dev", host.link)
            run("ip", "link", "set", host.link, "up")
            inside = ("ip", "netns", "exec", host.namespace)
            run(*inside, "ip", "addr", "add", f"{host.inner}/24", "dev", peer)
            run(*inside, "ip", "link", "set", peer, "up")
            run(*inside, "ip", "link", "set", "lo", "up")
        yield made
    finally:
        for host in made:
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
            subprocess.run(["ip", "link", "del", host.link], capture_output=True)  # gone with the namespace, normally


def wait_for(condition, what: str, timeout: float = 60.0, log=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s\n{log()}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def shared(hosts, tmp_path):
    """One Redis and one PostgreSQL of this test's own, listening on both this-side addresses."""
    if not PG_BIN or shutil.which("redis-server") is None:
        pytest.skip("needs the machine's PostgreSQL server binaries and redis-server")
    addresses = [h.outer for h in hosts]
    redis_port, pg_port = random.randrange(20000, 30000), random.randrange(30000, 40000)
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", *addresses, "--protected-mode", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=open(tmp_path / "redis.log", "wb"), stderr=subprocess.STDOUT,
    )
    pgdata = tempfile.mkdtemp(prefix="stackgate-hosts-pg-")  # the postgres user must reach it: not under tmp_path
    shutil.chown(pgdata, "postgres", "postgres")
    as_postgres = ("runuser", "-u", "postgres", "--")
    try:
        subprocess.run([*as_postgres, f"{PG_BIN[-1]}/initdb", "-D", pgdata, "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True, timeout=120)
        with open(f"{pgdata}/pg_hba.conf", "a") as hba:  # the gateways' hosts and this side (the migration)
            hba.writelines(f"host all postgres {address}/32 trust\n" for h in hosts for address in (h.inner, h.outer))
        subprocess.run([*as_postgres, f"{PG_BIN[-1]}/pg_ctl", "-D", pgdata, "-w", "-t", "60", "-l", f"{pgdata}/log", "start",
                        "-o", f"-p {pg_port} -c listen_addresses='{','.join(addresses)}' -c unix_socket_directories='{pgdata}'"],
                       check=True, capture_output=True, timeout=120)
        yield {
            host.namespace: {"REDIS_URL": f"redis://{host.outer}:{redis_port}/0",
                             "DATABASE_URL": f"postgresql://postgres@{host.outer}:{pg_port}/postgres"}
            for host in hosts
        }
    finally:
        subprocess.run([*as_postgres, f"{PG_BIN[-1]}/pg_ctl", "-D", pgdata, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(pgdata, ignore_errors=True)
        redis.kill()
        redis.wait(10)


@pytest.fixture
def gateways(hosts, shared, tmp_path):
    """``stackgate run --workers 2`` inside each namespace, on its own address, after one migration."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(host1=hosts[0].inner, host2=hosts[1].inner, prefix=secrets.token_hex(4)))
    common = dict(STACKGATE_DATA_DIR=str(tmp_path), HOSTS_JWT_SECRET=JWT_SECRET,
                  DJANGO_SECRET_KEY=secrets.token_urlsafe(60), STACKGATE_LOG_LEVEL="warning")
    first = shared[hosts[0].namespace]
    subprocess.run([sys.executable, "-m", "gateway", "migrate", "--verbosity", "0"], cwd=ROOT, check=True,
                   env=base_env(**common, **first), timeout=300)
    procs = []
    try:
        for host in hosts:
            log = tmp_path / f"{host.namespace}.log"
            env = base_env(**common, **shared[host.namespace], STACKGATE_MIGRATE="0")
            procs.append((host, log, subprocess.Popen(
                ["ip", "netns", "exec", host.namespace, sys.executable, "-m", "gateway", "run", "--config", str(config),
                 "--host", host.inner, "--port", "8000", "--workers", "2"],
                cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
            )))
        for host, log, proc in procs:
            wait_for(lambda: answers(f"http://{host.inner}:8000/_stackgate/ready") or proc.poll() is not None,
                     f"{host.namespace} ready", log=lambda: log.read_text(errors="replace"))
            assert proc.poll() is None, log.read_text(errors="replace")
        yield [f"http://{host.inner}:8000" for host in hosts]
    finally:
        for host, log, proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait(10)
            print(f"--- {host.namespace} ({host.inner}) ---\n{log.read_text(errors='replace')[-8000:]}")


def bearer(subject: str) -> dict[str, str]:
    token = jwt.encode({"sub": subject, "iss": "hosts-test", "exp": int(time.time()) + 3600}, JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def test_two_hosts_share_limits_variants_and_data(gateways):
    one, two = gateways
    async with httpx.AsyncClient(timeout=30, trust_env=False, limits=httpx.Limits(max_connections=100)) as client:
        # Throttling exact across both hosts (and their four workers): one consumer, one quota.
        alice = USERS["alice"].headers()
        responses = await asyncio.gather(*(client.get((one, two)[i % 2] + "/limited/x", headers=alice) for i in range(200)))
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 60 and codes.count(429) == 140, codes

        # The same A/B variant for every consumer on both hosts.
        async def variant(url: str, subject: str) -> str:
            r = await client.get(url + "/ab/x", headers=bearer(subject))
            assert r.status_code == 200, r.text
            return r.headers["x-served-by"]

        subjects = [f"user{i}" for i in range(200)]
        on_one = await asyncio.gather(*(variant(one, s) for s in subjects))
        on_two = await asyncio.gather(*(variant(two, s) for s in subjects))
        assert on_one == on_two
        assert {"a", "b"} == set(on_one), "both variants are in use"

        # A write through one host (Django) is read through the other (Flask).
        bob = USERS["bob"].headers()
        title = f"written on {one} {secrets.token_hex(4)}"
        created = await client.post(one + "/v2/todos", json={"title": title}, headers=bob)
        assert created.status_code == 201, created.text
        read = await client.get(f"{two}/v1/todos/{created.json()['id']}", headers=bob)
        assert read.status_code == 200, read.text
        assert read.json()["title"] == title and read.json()["owner"] == "bob"
