"""Processes for the bootstrap and first-contact tests: any command, any address, its log kept.

``tests.services.GatewayProcess`` runs ``stackgate run`` on loopback; these
tests also need ``0.0.0.0``, plain ``uvicorn`` and the Docker image's CMD.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import httpx

from tests.services import ROOT, base_env, free_port

START_TIMEOUT = 90.0
EXIT_TIMEOUT = 90.0

# Variables that would change what the checks see, whatever the caller's shell holds.
_CLEARED = ("STACKGATE_ALLOW_INSECURE", "STACKGATE_JWT_SECRET", "STACKGATE_HOST", "STACKGATE_PORT", "STACKGATE_MIGRATE",
            "DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DJANGO_ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE")

# What the shipped config.toml and the demo Django settings carry (docs/demo-credentials.md).
DEMO_KEYS = [
    "auth.jwt.demo.secret",
    *(f"consumers.{name}.{what}" for name in ("alice", "bob", "tester", "admin") for what in ("api_keys[0]", "password")),
]
DJANGO_KEYS = ["SECRET_KEY"]  # ALLOWED_HOSTS = "*" is fine behind the shipped [gateway] allowed_hosts


def clean_env(**extra: str) -> dict:
    env = base_env()
    for name in _CLEARED:
        env.pop(name, None)
    env.update(extra)
    return env


@dataclass
class Proc:
    """A command started in its own session, stdout and stderr in one log file."""

    cmd: list[str]
    env: dict
    log_path: Path
    cwd: Path = ROOT
    port: int = field(default_factory=free_port)
    proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> "Proc":
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"still running after {timeout} s:\n{self.log()}") from None

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> "Proc":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode} instead of serving:\n{self.log()}")
            try:
                if httpx.get(self.url + "/_stackgate/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"not healthy after {timeout} s:\n{self.log()}")

    def wait_log(self, text: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never logged in {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def json_lines(self, strict: bool = True) -> list[dict]:
        """Every line of the log as JSON (``strict``: a line that is not JSON fails the test)."""
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                assert not strict, f"not a JSON line: {line!r}\n{self.log()}"
        return out

    def bootstrap_lines(self) -> list[dict]:
        return [line for line in self.json_lines(strict=False) if line.get("logger") == "stackgate.bootstrap"]


def insecure(lines: list[dict], level: str) -> list[str]:
    """The messages of the ``insecure setting`` lines at ``level``."""
    return [line["message"] for line in lines if line["level"] == level and line["message"].startswith("insecure setting: ")]


def assert_names_each_key(messages: list[str], keys: list[str], log: str) -> None:
    for key in keys:
        assert any(f" {key}: " in message or f": {key}: " in message for message in messages), f"no line names {key}:\n{log}"
    for message in messages:
        assert "; fix: " in message, message
