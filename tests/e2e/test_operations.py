"""Operating a running gateway: hot reload under load, metrics across workers, logs."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time

import httpx
import pytest

from gateway.backends.wsgi import WSGIBackendConfig
from tests.services import GatewayProcess, base_env
from tests.users import USERS, consumers_toml

BASE = """
[throttle.policies.standard]
rates = ["{rate}"]

[backends.a]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_a"

[backends.b]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_b"

[[routes]]
name = "ab"
prefix = "/ab"
split = {{ a = {wa}, b = {wb} }}
auth = "none"
throttle = "standard"
""" + consumers_toml()


def render(wa=99, wb=1, rate="100000/minute", extra=""):
    return BASE.format(wa=wa, wb=wb, rate=rate) + extra


@pytest.fixture
def running(tmp_path):
    servers = []

    def start(text, workers=1):
        config = tmp_path / "config.toml"
        config.write_text(text)
        server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=workers).start()
        servers.append(server)
        return server, config

    yield start
    for server in servers:
        server.stop()
        print(f"--- gateway on {server.url} ---\n{server.log()[-20000:]}")  # shown when the test fails


class Load:
    """Requests in a loop from a thread, recording every answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[float, int, str]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    r = client.get(self.url, headers={"Cookie": ""})
                    client.cookies.clear()
                    self.results.append((time.monotonic(), r.status_code, r.headers.get("x-served-by", "")))
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


def status(server) -> dict:
    return httpx.get(server.url + "/_stackgate/status", headers=USERS["admin"].headers()).json()


def test_weight_edit_is_live_within_two_seconds_without_failures(running):
    server, config = running(render(99, 1))
    with Load(server.url + "/ab/x") as load:
        time.sleep(1.0)
        edited_at = time.monotonic()
        config.write_text(render(1, 99))
        time.sleep(3.0)
    assert not load.errors
    assert {code for _, code, _ in load.results} == {200}, "no request may fail during a reload"
    after = [served for at, _, served in load.results if at > edited_at + 2.0]
    assert len(after) > 20 and after.count("b") / len(after) > 0.9, "the new weights were not live 2 s after the edit"
    before = [served for at, _, served in load.results if at < edited_at]
    assert before.count("a") / len(before) > 0.9
    assert status(server)["last_reload"]["ok"] is True


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda text: text.replace("[[routes]]", "[[routes]"), "invalid TOML"),
        (lambda text: text.replace("split = { a = 99, b = 1 }", "split = { a = 99, zzz = 1 }"), 'routes[0].split: unknown backend "zzz"'),
        (lambda text: text.replace("100000/minute", "lots/minute"), "throttle.policies.standard.rates"),
    ],
    ids=["toml-syntax", "unknown-backend", "bad-rate"],
)
def test_invalid_edit_changes_nothing(running, edit, problem):
    text = render(99, 1)
    server, config = running(text)
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    with Load(server.url + "/ab/x") as load:
        time.sleep(0.5)
        config.write_text(edit(text))
        time.sleep(1.5)
    assert not load.errors and {code for _, code, _ in load.results} == {200}
    assert [s for _, _, s in load.results].count("a") / len(load.results) > 0.9
    current = status(server)
    assert current["version"] == version
    assert current["last_reload"]["ok"] is False
    assert any(problem in p and str(config) in p for p in current["last_reload"]["problems"]), current


def test_backend_change_is_reported_as_needing_a_restart(running):
    text = render(99, 1)
    server, config = running(text)
    config.write_text(text.replace("tests.fixtures.wsgi_apps:variant_b", "tests.fixtures.wsgi_apps:recorder"))
    deadline = time.monotonic() + 3
    while status(server)["last_reload"]["ok"] and time.monotonic() < deadline:
        time.sleep(0.1)
    last = status(server)["last_reload"]
    assert last["ok"] is False and "restart" in last["message"]
    assert any("backends.b: app changed; a restart is needed" in p for p in last["problems"])


def test_every_worker_ends_on_the_same_version(running):
    server, config = running(render(99, 1), workers=2)
    new_text = render(50, 50)
    config.write_text(new_text)
    want = hashlib.sha256(new_text.encode()).hexdigest()[:12]
    deadline = time.monotonic() + 10  # a worker still starting reads the file within a poll (2 s) of its start
    while True:
        seen = {}
        for _ in range(40):
            health = httpx.get(server.url + "/_stackgate/health").json()  # a new connection each: either worker
            seen.setdefault(health["worker"], set()).add(health["config_version"])
        if len(seen) == 2 and all(versions == {want} for versions in seen.values()):
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)


def access_lines(server, **match):
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "stackgate.access" and all(line.get(k) == v for k, v in match.items())]


def test_metrics_count_every_request_across_two_workers(running):
    server, _ = running(render(50, 50), workers=2)
    sent = 300
    for _ in range(sent // 10):
        with httpx.Client() as client:  # a new connection every 10 requests, so both workers serve
            for _ in range(10):
                assert client.get(server.url + "/ab/x").status_code == 200
    text = httpx.get(server.url + "/_stackgate/metrics").text
    counted = 0.0
    for line in text.splitlines():
        if line.startswith("stackgate_requests_total{") and 'route="ab"' in line:
            counted += float(line.rsplit(" ", 1)[1])
    assert counted == sent
    assert 'stackgate_request_duration_seconds_bucket{' in text
    deadline = time.monotonic() + 3  # the access log is written in batches
    while len(served := access_lines(server, route="ab")) < sent and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(served) == sent and len({line["pid"] for line in served}) == 2, "both workers served and were counted"


def test_sighup_reloads_every_worker_in_place(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(render(99, 1, rate="3/minute"))
    env = base_env(STACKGATE_DATA_DIR=str(tmp_path), STACKGATE_WATCH="1")
    server = GatewayProcess(config, env, workers=2).start()
    try:
        new_text = render(50, 50, rate="3/minute").replace('name = "ab"', 'name = "ab2"')
        config.write_text(new_text)
        want = hashlib.sha256(new_text.encode()).hexdigest()[:12]
        os.kill(server.proc.pid, signal.SIGHUP)  # to the supervisor, as an operator would
        deadline = time.monotonic() + 5
        while True:
            seen = {}
            for _ in range(30):
                with httpx.Client() as client:
                    health = client.get(server.url + "/_stackgate/health").json()
                seen[health["worker"]] = health["config_version"]
            if len(seen) == 2 and set(seen.values()) == {want}:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)
        workers = set(seen)
        time.sleep(0.7)
        assert {line["pid"] for line in access_lines(server)} <= workers | {None}
        assert "restarting processes" not in server.log(), "the workers were reloaded, not replaced"
    finally:
        server.stop()
        print(f"--- gateway on {server.url} ---\n{server.log()[-20000:]}")  # shown when the test fails


def test_one_json_log_line_per_request(running):
    server, _ = running(render(50, 50))
    response = httpx.get(server.url + "/ab/x", headers={"X-Request-ID": "log-check-42"})
    assert response.headers["x-request-id"] == "log-check-42"
    deadline = time.monotonic() + 3  # the access log is written in batches, at least every 0.5 s
    while not (mine := access_lines(server, request_id="log-check-42")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(mine) == 1
    entry = mine[0]
    assert entry["logger"] == "stackgate.access" and entry["route"] == "ab"
    assert entry["backend"] in ("a", "b") and entry["status"] == 200 and entry["duration_ms"] > 0
    assert entry["method"] == "GET" and entry["path"] == "/ab/x"


def _gauge(text: str, name: str, backend: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(f'{name}{{backend="{backend}"'))


def test_a_killed_worker_leaves_no_stale_gauges(running):
    server, _ = running(render(50, 50), workers=2)

    def workers() -> set[int]:
        # A connection that lands on the killed worker's socket waits there for its replacement
        # (start-up takes seconds on a loaded machine): wait with it rather than time out.
        return {httpx.get(server.url + "/_stackgate/health", timeout=20).json()["worker"] for _ in range(30)}

    before = workers()
    assert len(before) == 2
    metrics = httpx.get(server.url + "/_stackgate/metrics").text
    threads = WSGIBackendConfig.model_fields["threads"].default
    assert _gauge(metrics, "stackgate_backend_threads", "a") == 2 * threads  # the default pool in each of 2 workers
    os.kill(min(before), signal.SIGKILL)
    deadline = time.monotonic() + 40
    while (now := workers()) == before or len(now) < 2:
        assert time.monotonic() < deadline, now
        time.sleep(0.3)
    metrics = httpx.get(server.url + "/_stackgate/metrics").text
    assert _gauge(metrics, "stackgate_backend_threads", "a") == 2 * threads


def test_sighup_while_the_workers_start_kills_none(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(render(99, 1))
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2).launch()
    try:
        deadline = time.monotonic() + 30
        while "Started parent process" not in server.log():  # the supervisor forwards SIGHUP from here on
            assert time.monotonic() < deadline and server.proc.poll() is None, server.log()
            time.sleep(0.01)
        healthy = False
        while not healthy and time.monotonic() < deadline:
            os.kill(server.proc.pid, signal.SIGHUP)  # an operator's reload, again and again, while workers start
            try:
                healthy = httpx.get(server.url + "/_stackgate/health", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.05)
        assert healthy, server.log()
        time.sleep(1)
        workers = {httpx.get(server.url + "/_stackgate/health", timeout=5).json()["worker"] for _ in range(30)}
        assert len(workers) == 2
        assert "died" not in server.log() and "Terminated child" not in server.log(), server.log()
    finally:
        server.stop()


def test_sighup_without_watching_is_ignored_not_fatal(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(render(99, 1))
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path), STACKGATE_WATCH="0")).start()
    try:
        os.kill(server.proc.pid, signal.SIGHUP)
        time.sleep(0.5)
        assert server.proc.poll() is None, server.log()
        assert httpx.get(server.url + "/ab/x").status_code == 200
        assert "SIGHUP ignored: the config is not watched" in server.log()
    finally:
        server.stop()
