"""Rolling restart of ``stackgate run --workers N`` (SIGUSR2, ``stackgate restart``; gateway/edge/supervisor.py).

A change a reload cannot apply (a backend's ``threads``) is applied by
replacing the workers one at a time, under load: no request fails, every
worker process is new, the supervisor is the same, and ``/_stackgate/status``
shows it.

The load: httpx clients sending back to back, and ``http.client`` clients
that pause between requests and reuse their connection until an answer says
``Connection: close``, with no check that it is still open before they send
(as a request already on its way when the server closes would). No retries:
a request that fails for any reason (a refused or reset connection, a
connection closed before the answer, a status other than 200) counts.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time

import httpx
import pytest

from gateway.policies.auth import apikey
from tests.services import ROOT, GatewayProcess, base_env

ADMIN_KEY = apikey.new_key()
CONFIG = f"""
[backends.a]
kind = "wsgi"
app = "%s"
threads = %d

[[routes]]
prefix = "/a"
backend = "a"
auth = "none"

[consumers.ops]
roles = ["admin"]
{apikey.config_line(ADMIN_KEY)}
"""
APP = "tests.fixtures.wsgi_apps:variant_a"


def write_config(path, threads: int, app: str = APP) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_text(CONFIG % (app, threads))
    tmp.replace(path)  # one change, as an editor or a ConfigMap makes it


def status(server: GatewayProcess) -> dict:
    r = httpx.get(server.url + "/_stackgate/status", headers={"X-API-Key": ADMIN_KEY}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def restart(pid_file) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "restart", "--pid-file", str(pid_file)], cwd=ROOT, capture_output=True, text=True, timeout=60)


def threads_in_effect(server: GatewayProcess) -> float:
    """``threads`` summed over the live workers (the gauge is kept per worker process)."""
    metrics = httpx.get(server.url + "/_stackgate/metrics", timeout=30).text
    return float(next(line.split()[1] for line in metrics.splitlines() if line.startswith('stackgate_backend_threads{backend="a"}')))


def wait_for(condition, what: str, server: GatewayProcess, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s\n{server.log()[-20000:]}"
        time.sleep(0.05)
    return result


class Load:
    """Clients sending requests back to back on keep-alive connections until stopped (bounded)."""

    def __init__(self, url: str, clients: int = 4, paced: int = 6, limit: float = 300.0) -> None:
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done = 0
        self.failures: list[str] = []
        self.workers: dict[int, int] = {}  # worker pid -> health answers
        self.deadline = time.monotonic() + limit
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]
        self.threads += [threading.Thread(target=self.paced_client, args=(i,), daemon=True) for i in range(paced)]

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def client(self, i: int) -> None:
        body = json.dumps({"client": i, "pad": "x" * 2000})
        with httpx.Client(base_url=self.url, timeout=30) as client:
            n = 0
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                n += 1
                kind = n % 3
                try:
                    if kind == 0:
                        r = client.get("/_stackgate/health")
                    elif kind == 1:
                        r = client.get(f"/a/item/{i}/{n}")
                    else:  # a request with a body: never sent twice, and never cut off
                        r = client.post("/a/echo", content=body, headers={"Content-Type": "application/json"})
                    failure = None if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                self.count(f"client {i} request {n}", failure, r.json()["worker"] if kind == 0 and not failure else None)

    def paced_client(self, i: int) -> None:
        """A request every 0.1 s on one connection, a new one only after ``Connection: close``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        n = 0
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            n += 1
            worker = None
            try:
                conn.request("GET", "/_stackgate/health")
                r = conn.getresponse()
                data = r.read()
                failure = None if r.status == 200 else f"{r.status} {data[:200]!r}"
                worker = None if failure else json.loads(data)["worker"]
            except (OSError, http.client.HTTPException) as exc:
                failure = f"{type(exc).__name__}: {exc}"
                conn.close()
            self.count(f"paced client {i} request {n}", failure, worker)
            time.sleep(0.1)
        conn.close()

    def count(self, request: str, failure, worker) -> None:
        with self.lock:
            self.done += 1
            if failure:
                self.failures.append(f"{request}: {failure}")
            elif worker is not None:
                self.workers[worker] = self.workers.get(worker, 0) + 1

    def served(self) -> int:
        with self.lock:
            return self.done

    def since(self, count: int) -> int:
        return self.served() - count


@pytest.fixture
def gateway(tmp_path):
    config = tmp_path / "config.toml"
    write_config(config, threads=2)
    pid_file = tmp_path / "stackgate.pid"
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2, args=["--pid-file", str(pid_file)])
    server.start(timeout=60)
    server.pid_file = pid_file
    yield server
    server.stop()
    print(f"--- gateway log ---\n{server.log()[-30000:]}")  # shown when the test fails


def test_a_rolling_restart_under_load_fails_no_request(gateway):
    config = gateway.config_path
    assert gateway.pid_file.read_text().strip() == str(gateway.proc.pid)
    before = status(gateway)["workers"]
    assert before["supervisor"] == gateway.proc.pid and before["generation"] == 1 and before["restarting"] is False
    assert before["restart_signal"] == "SIGUSR2" and len(before["pids"]) == 2
    assert threads_in_effect(gateway) == 2 * 2

    with Load(gateway.url) as load:
        wait_for(lambda: load.served() > 300 and len(load.workers) == 2, "load on both workers", gateway)
        write_config(config, threads=3)
        # A reload cannot apply it: it says so, and says what to do.
        wait_for(lambda: status(gateway)["last_reload"]["message"] == "not applied: these changes need a restart", "restart_required", gateway)

        result = restart(gateway.pid_file)
        assert result.returncode == 0, result.stderr
        seen_restarting = False

        def restarted() -> bool:
            nonlocal seen_restarting
            workers = status(gateway)["workers"]
            seen_restarting |= workers["restarting"]
            return workers["generation"] == 2 and not workers["restarting"]

        wait_for(restarted, "the rolling restart", gateway)
        new_pids = set(status(gateway)["workers"]["pids"])
        served = load.served()
        wait_for(lambda: load.since(served) > 300 and new_pids <= set(load.workers), "both new workers serving the load", gateway)

    print(f"{load.done} requests; health answers by worker: {load.workers}")
    assert load.failures == [], f"{len(load.failures)} of {load.done} requests failed:\n" + "\n".join(load.failures[:20])
    after = status(gateway)["workers"]
    assert seen_restarting, "status showed the restart in progress"
    assert after["supervisor"] == gateway.proc.pid and gateway.proc.poll() is None, "the supervisor never restarts"
    assert len(after["pids"]) == 2 and not set(after["pids"]) & set(before["pids"]), (before, after)
    assert after["last_restart"]["ok"] is True and after["last_restart"]["message"] == "replaced 2 workers"
    assert threads_in_effect(gateway) == 2 * 3, "the new threads value is in effect in every worker"
    stats = httpx.get(gateway.url + "/_stackgate/stats", headers={"X-API-Key": ADMIN_KEY}, timeout=30).json()
    assert stats["backends"]["a"]["threads"] == 3
    assert status(gateway)["last_reload"]["ok"] is True  # the new workers loaded the file as it is
    log = gateway.log()
    drained = [json.loads(line)["message"] for line in log.splitlines() if '"Draining ' in line]
    assert len(drained) == 2 and any(not m.startswith("Draining 0 ") for m in drained), drained  # they held connections
    for line in log.splitlines():
        json.loads(line)


def test_a_restart_that_cannot_be_done_leaves_the_workers_serving(gateway):
    config = gateway.config_path
    before = status(gateway)["workers"]

    config.write_text("[backends.a]\nkind = 42\n")  # invalid: checked before any worker is replaced
    assert restart(gateway.pid_file).returncode == 0
    workers = wait_for(lambda: (w := status(gateway)["workers"])["last_restart"] and w, "the refusal", gateway)
    assert workers["last_restart"]["ok"] is False
    assert workers["last_restart"]["message"].startswith("not restarted: the config file has problems")
    assert any("backends.a.kind" in p for p in workers["last_restart"]["problems"]), workers
    assert workers["pids"] == before["pids"] and workers["generation"] == 1

    write_config(config, threads=3, app="tests.fixtures.no_such_module:app")  # valid, but no worker can start
    assert restart(gateway.pid_file).returncode == 0
    workers = wait_for(lambda: (w := status(gateway)["workers"])["last_restart"]["problems"] == [] and w, "the abort", gateway)
    assert workers["last_restart"]["ok"] is False
    assert workers["last_restart"]["message"].startswith("stopped after 0 of 2 workers: the new worker"), workers
    assert workers["pids"] == before["pids"] and workers["generation"] == 1
    assert httpx.get(gateway.url + "/a/still", timeout=30).status_code == 200
    assert gateway.proc.poll() is None


def test_restart_refuses_a_gateway_with_one_worker(tmp_path):
    config = tmp_path / "config.toml"
    write_config(config, threads=2)
    pid_file = tmp_path / "stackgate.pid"
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), args=["--pid-file", str(pid_file)]).start(timeout=60)
    try:
        result = restart(pid_file)
        assert result.returncode == 1
        assert "does not take SIGUSR2 (it runs one worker)" in result.stderr
        assert status(server)["workers"]["restart_signal"] is None
        server.proc.send_signal(__import__("signal").SIGUSR2)  # sent anyway (kill -USR2): ignored, not fatal
        time.sleep(0.5)
        assert server.proc.poll() is None and httpx.get(server.url + "/a/x", timeout=30).status_code == 200
    finally:
        server.stop()
    assert not pid_file.exists()
