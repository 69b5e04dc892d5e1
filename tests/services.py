"""Real servers for the tests: Redis on its own port, a fresh PostgreSQL database,
and the gateway itself as ``stackgate run`` subprocesses on loopback.

Each fixture skips with the reason when its server truly cannot be had.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class RedisServer:
    """A private redis-server on a free port; stop() and start() simulate an outage."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.workdir = workdir
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.binary
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def postgres_admin_url() -> str:
    return os.environ.get("STACKGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _can_connect(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


def ensure_postgres() -> Optional[str]:
    """Find PostgreSQL, starting the machine's cluster if it is installed but stopped; None if impossible."""
    url = postgres_admin_url()
    if _can_connect(url):
        return url
    if shutil.which("pg_ctlcluster") and Path("/etc/postgresql").is_dir():
        for version in os.listdir("/etc/postgresql"):
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], capture_output=True)
        for _ in range(40):
            if _can_connect(url):
                return url
            time.sleep(0.25)
    return None


def create_database(admin_url: str) -> str:
    import psycopg

    name = f"stackgate_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(env: dict) -> None:
    subprocess.run([sys.executable, "-m", "gateway", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)


@dataclass
class GatewayProcess:
    """``stackgate run`` on a free loopback port."""

    config_path: Path
    env: dict
    workers: int = 1
    port: int = field(default_factory=free_port)
    proc: Optional[subprocess.Popen] = None
    log_path: Optional[Path] = None
    log_dir: Optional[Path] = None  # default: beside the config
    args: list = field(default_factory=list)  # more options for stackgate run

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "GatewayProcess":
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/_stackgate/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"gateway did not become healthy:\n{self.log()}")

    def launch(self) -> "GatewayProcess":
        """Start the process and return at once (``start`` also waits until it serves)."""
        self.log_path = (self.log_dir or self.config_path.parent) / f"{self.config_path.stem}.{self.port}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path), "--port", str(self.port), "--workers", str(self.workers), *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def exit_code(self, timeout: float = 120.0) -> int:
        """Wait for a process that must end by itself (a refused start); stopped, and an error, if it does not."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"still running after {timeout} s\n{self.log()}") from None

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)


def base_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SCRIPT_NAME", "STACKGATE_CONFIG")}
    env.update(extra)
    return env


@dataclass
class ProcessInfo:
    pid: int
    ppid: int
    state: str  # "Z": exited, not collected by its parent (<defunct>)
    cmdline: str


def session_processes(session: int) -> list[ProcessInfo]:
    """The processes of ``session`` (a ``GatewayProcess`` leads its own), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == session:
            found.append(ProcessInfo(int(entry.name), int(fields[1]), fields[0], cmdline))
    return found
