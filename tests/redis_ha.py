"""Redis as production runs it, on loopback ports: a Sentinel-managed primary and replica, a 3-primary Cluster.

Each server is a private ``redis-server`` (the machine's), killed with SIGKILL to
make a failover happen; ``stop()`` ends whatever is left.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
import redis

from tests.services import free_port, wait_for_port

SERVICE = "mymaster"


def wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        time.sleep(0.1)


class Servers:
    """redis-server processes on free loopback ports, each in its own folder."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("redis-server")
        self.workdir = workdir
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, *args: str, port: int | None = None, config: str | None = None) -> int:
        port = port or free_port()
        folder = self.workdir / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        command = [self.binary]
        if config is not None:
            (folder / "redis.conf").write_text(config)
            command.append(str(folder / "redis.conf"))
        command += ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder), *args]
        log = open(folder / "log", "wb")
        self.procs[port] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(port, proc=self.procs[port])
        return port

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def freeze(self, port: int) -> None:
        """Stop the server (SIGSTOP) without closing its connections: a replica that falls behind."""
        self.procs[port].send_signal(signal.SIGSTOP)

    def thaw(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(f"--- {p.parent.name} ---\n{p.read_text(errors='replace')[-3000:]}" for p in self.workdir.glob("*/log"))


class SentinelSet(Servers):
    """A primary, one replica and one sentinel (quorum 1) watching them as ``mymaster``."""

    def up(self) -> "SentinelSet":
        self.primary = self.start()
        self.replica = self.start("--replicaof", "127.0.0.1", str(self.primary))
        replica = redis.Redis(port=self.replica)
        wait(lambda: replica.info("replication")["master_link_status"] == "up", "replica in sync")
        self.sentinel = self.start("--sentinel", config=(
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        ))
        sentinel = redis.Redis(port=self.sentinel)
        wait(lambda: sentinel.sentinel_master(SERVICE)["num-slaves"] == 1, "the sentinel sees the replica")
        return self

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel}/{SERVICE}"

    def primary_port(self) -> int:
        return int(redis.Redis(port=self.sentinel).sentinel_get_master_addr_by_name(SERVICE)[1])


class ClusterSet(Servers):
    """Three primaries, each with one replica, made a cluster by ``redis-cli --cluster create``."""

    def up(self) -> "ClusterSet":
        # The bus on a free port of its own (port + 10000, the default, may be taken or past 65535).
        ports = [self.start("--cluster-enabled", "yes", "--cluster-node-timeout", "1000", "--cluster-port", str(free_port()),
                            "--cluster-config-file", "nodes.conf") for _ in range(6)]
        subprocess.run(
            [shutil.which("redis-cli"), "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        for port in ports:
            node = redis.Redis(port=port)
            wait(lambda: node.cluster("info")["cluster_state"] == "ok", f"cluster state ok on {port}")
            # A replica that never synced refuses to take over from a dead primary.
            wait(lambda: node.info("replication")["role"] == "master" or node.info("replication")["master_link_status"] == "up",
                 f"replica {port} in sync")
        self.ports = ports
        return self

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def primary_of(self, key: str) -> int:
        """The port of the primary that holds ``key``'s slot."""
        client = redis.RedisCluster(host="127.0.0.1", port=self.ports[0])
        try:
            return client.get_node_from_key(key).port
        finally:
            client.close()

    def all_slots_served(self) -> bool:
        alive = [p for p in self.ports if p in self.procs]
        return all(redis.Redis(port=p).cluster("info")["cluster_state"] == "ok" for p in alive)


@pytest.fixture
def sentinel_set(tmp_path):
    """A running ``SentinelSet``; its servers' logs are printed at the end (shown when the test fails)."""
    servers = SentinelSet(tmp_path / "sentinel")
    try:
        yield servers.up()
    finally:
        servers.stop()
        print(servers.logs())


@pytest.fixture
def cluster_set(tmp_path):
    """A running ``ClusterSet``; its servers' logs are printed at the end (shown when the test fails)."""
    servers = ClusterSet(tmp_path / "cluster")
    try:
        yield servers.up()
    finally:
        servers.stop()
        print(servers.logs())
