"""Helpers of the rollout tests: a config with two stacks and a plan, steady traffic, the admin view."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Callable, Optional

import httpx

from tests.services import ROOT
from tests.users import USERS, consumers_toml

ADMIN = USERS["admin"].headers()


def config_text(target_app: str, *, steps: str = "[10, 50, 100]", min_time: float = 1, min_requests: int = 30,
                gates: str = "", mirror: bool = False, storage: str = "memory://", extra_plan: str = "",
                source_app: str = "tests.rollout.apps:clean") -> str:
    return f"""
[backends.old]
kind = "wsgi"
app = "{source_app}"
threads = 4

[backends.new]
kind = "wsgi"
app = "{target_app}"
threads = 4

[throttle]
storage = "{storage}"

[[routes]]
name = "api"
prefix = "/api"
auth = "none"
split = {{ old = 100, new = 0 }}
mirror = {"true" if mirror else "false"}

[routes.rollout]
target = "new"
steps = {steps}
min_time = {min_time}
min_requests = {min_requests}
{extra_plan}

[routes.rollout.gates]
{gates}
""" + consumers_toml()


class Traffic:
    """GETs from a thread, to one or more gateways, until stopped: anonymous without cookies (each one a
    new consumer), or with ``headers`` (one consumer's credentials)."""

    def __init__(self, *urls: str, headers: Optional[dict] = None) -> None:
        self.urls = urls
        self.headers = headers or {}
        self.stopped = threading.Event()
        self.sent = 0
        self.served: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        """Requests that got no answer at all (connection errors, timeouts)."""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        clients = [httpx.Client(base_url=url, timeout=30) for url in self.urls]
        try:
            while not self.stopped.is_set():
                client = clients[self.sent % len(clients)]
                client.cookies.clear()  # a new anonymous consumer each time (the split is sticky per cookie)
                try:
                    response = client.get(f"/api/todos/{self.sent % 7}", headers=self.headers)
                    by = response.headers.get("x-served-by", "-")
                    self.served[by] = self.served.get(by, 0) + 1
                    self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                self.sent += 1
        finally:
            for client in clients:
                client.close()

    def __enter__(self) -> "Traffic":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(30)


def rollout(url: str) -> dict:
    response = httpx.get(url + "/_stackgate/rollouts/api", headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(what: Callable[[], Optional[object]], timeout: float = 90, message: Callable[[], str] = lambda: "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s: {message()}")
        time.sleep(0.2)


def wait_status(server, statuses: tuple[str, ...], timeout: float = 90) -> dict:
    last: dict = {}

    def check() -> Optional[dict]:
        nonlocal last
        last = rollout(server.url)
        return last if last["status"] in statuses else None

    return wait_for(check, timeout, lambda: f"{last}\n--- log ---\n{server.log()[-6000:]}")  # type: ignore[return-value]


def stackgate(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
