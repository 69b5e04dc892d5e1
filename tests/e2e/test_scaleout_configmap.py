"""config.toml delivered as a Kubernetes ConfigMap: the kubelet's symlink swap, under load, on every worker.

The file the gateway was given never changes: the ``..data`` link it goes
through does, and what it pointed to at start is deleted (tests/kubelet.py).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import threading
import time

import httpx

from tests.e2e.test_operations import render, status
from tests.kubelet import KubeletVolume
from tests.services import GatewayProcess, base_env


class Load:
    """Two client loops, each opening a new connection every few requests (so both workers serve)."""

    def __init__(self, url: str, threads: int = 2) -> None:
        self.url = url
        self.codes: list[int] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        while not self.stop.is_set():
            with httpx.Client(timeout=20) as client:
                for _ in range(5):
                    try:
                        self.codes.append(client.get(self.url).status_code)
                    except httpx.HTTPError as exc:
                        self.errors.append(repr(exc))
                    time.sleep(0.01)  # bounded: about 100 requests a second per loop at most

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def wait_until_every_worker_serves(server: GatewayProcess, version: str, workers: int = 2, timeout: float = 30.0) -> None:
    """Until new connections, landing on either worker, have found every worker on ``version``."""
    deadline = time.monotonic() + timeout
    seen: dict[int, str] = {}
    while True:
        for _ in range(20):
            health = httpx.get(server.url + "/_stackgate/health", timeout=20).json()
            seen[health["worker"]] = health["config_version"]
        if len(seen) == workers and set(seen.values()) == {version}:
            return
        assert time.monotonic() < deadline, f"workers on {seen}, want {version}:\n{not_access(server)}"
        time.sleep(0.1)


def not_access(server: GatewayProcess) -> str:
    """The server's log without its access lines (what a failure needs)."""
    return "\n".join(line for line in server.log().splitlines()[-2000:] if '"stackgate.access"' not in line)


def reload_lines(server: GatewayProcess) -> list[dict]:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "stackgate.reload"]


def test_configmap_swaps_apply_on_every_worker_under_load(tmp_path):
    volume = KubeletVolume(tmp_path / "config")
    versions = [render(99, 1), render(1, 99), render(50, 50), render(98, 2), render(3, 97)]
    volume.write({"config.toml": versions[0]})
    server = GatewayProcess(volume.root / "config.toml", base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2,
                            log_dir=tmp_path)
    try:
        server.start(timeout=60)
        wait_until_every_worker_serves(server, digest(versions[0]))
        written_at: dict[str, float] = {}
        with Load(server.url + "/ab/x") as load:
            for text in versions[1:]:
                written_at[digest(text)] = time.time()
                volume.write({"config.toml": text})
                wait_until_every_worker_serves(server, digest(text))

            # An invalid version: refused by every worker, reported like a plain file's, the last one serving on.
            broken = versions[-1].replace("[[routes]]", "[[routes]")
            volume.write({"config.toml": broken})
            deadline = time.monotonic() + 30
            while True:
                refused = {line["pid"] for line in reload_lines(server)
                           if line["level"] == "error" and line.get("config_version") == digest(versions[-1])
                           and any("invalid TOML" in p for p in line.get("problems", []))}
                if len(refused) == 2:
                    break
                assert time.monotonic() < deadline, f"refused by {refused}:\n{not_access(server)}"
                time.sleep(0.1)
            last = status(server)["last_reload"]
            assert last["ok"] is False and last["version"] == digest(versions[-1])
            path = str(volume.root / "config.toml")
            assert all(p.startswith(f"{path}: ") for p in last["problems"]), last
            wait_until_every_worker_serves(server, digest(versions[-1]))

            # Fixed again, by one more swap.
            fixed = render(60, 40)
            written_at[digest(fixed)] = time.time()
            volume.write({"config.toml": fixed})
            wait_until_every_worker_serves(server, digest(fixed))
        assert not load.errors, load.errors[:5]
        assert len(load.codes) > 50 and set(load.codes) == {200}, "no request may fail while the ConfigMap changes"
        lags = [
            calendar.timegm(time.strptime(line["time"][:19], "%Y-%m-%dT%H:%M:%S")) + float(line["time"][19:-1] or 0)
            - written_at[line["config_version"]]
            for line in reload_lines(server) if line["message"] == "config reload: applied" and line["config_version"] in written_at
        ]
        print(f"{len(load.codes)} requests, {volume.updates} swaps; applied by each worker {min(lags):.2f}-{max(lags):.2f} s after the swap")
    finally:
        server.stop()
        print(f"--- gateway (access lines left out) ---\n{not_access(server)}")
