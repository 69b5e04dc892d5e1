"""``stackgate run --workers N`` with mirroring on: shadow processes start and stop cleanly.

The default config.toml plus a mirrored split route, so that each worker runs
its shadow process (``gateway/shadow/process.py``). Every line the
server writes must parse as JSON, no process of its tree may be left
``<defunct>`` while it serves, and after SIGTERM nothing of it may be left.
"""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from gateway.policies.auth import apikey
from tests.services import ROOT, GatewayProcess, base_env, session_processes

KEY = apikey.new_key()
MIRRORED = f"""

[[routes]]
name = "mirrored"
prefix = "/mirrored"
split = {{ flask = 50, django = 50 }}
mirror = true
auth = "required"
roles = ["user"]

[consumers.shadowtester]
roles = ["user"]
{apikey.config_line(KEY)}
"""


def mirror_results(url: str) -> dict[str, float]:
    results: dict[str, float] = {}
    for line in httpx.get(url + "/_stackgate/metrics", timeout=10).text.splitlines():
        if line.startswith("stackgate_mirror_results_total{") and 'route="mirrored"' in line:
            result = line.split('result="', 1)[1].split('"', 1)[0]
            results[result] = results.get(result, 0) + float(line.split()[-1])
    return results


def non_json_lines(log: str) -> list[str]:
    bad = []
    for line in log.splitlines():
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    return bad


def shadow_processes(session: int) -> list:
    return [p for p in session_processes(session) if "gateway.shadow.process" in p.cmdline]


@pytest.mark.parametrize("workers", [2, 1], ids=["2-workers", "1-worker"])
def test_shadow_processes_start_and_stop_cleanly(tmp_path, workers):
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.toml").read_text() + MIRRORED)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=workers)
    try:
        server.start(timeout=90)
        session = server.proc.pid
        # Enough GETs that every worker has compared some (connections close, so they spread).
        compared = 0.0
        deadline = time.monotonic() + 60
        while compared < 6:
            for _ in range(4):
                r = httpx.get(server.url + "/mirrored/todos", headers={"X-API-Key": KEY, "Connection": "close"}, timeout=30)
                assert r.status_code < 500, r.text
            time.sleep(0.2)
            results = mirror_results(server.url)
            assert not results.get("error"), f"copies failed: {results}\n{server.log()}"
            compared = results.get("match", 0) + results.get("mismatch", 0)
            assert time.monotonic() < deadline, f"copies not compared: {results}\n{server.log()}"

        # One shadow process per worker, none defunct, nothing else left over.
        worker_pids = {p.pid for p in session_processes(session) if p.ppid == session and "gateway.shadow.process" not in p.cmdline}
        if workers == 1:
            worker_pids = {session}
        deadline = time.monotonic() + 30
        while True:
            tree = session_processes(session)
            shadows = shadow_processes(session)
            zombies = [p for p in tree if p.state == "Z"]
            if not zombies and sorted(p.ppid for p in shadows) == sorted(worker_pids):
                break
            assert time.monotonic() < deadline, f"zombies {zombies}, shadows {shadows}, workers {worker_pids}\n{server.log()}"
            time.sleep(0.2)
        assert len(worker_pids) == workers

        os.kill(session, signal.SIGTERM)  # the supervisor alone, as an operator (or systemd) would
        # One worker re-raises the signal once it has stopped (uvicorn's way): it ends "killed" by it.
        assert server.proc.wait(60) == (0 if workers > 1 else -signal.SIGTERM), server.log()
        deadline = time.monotonic() + 30
        while left := session_processes(session):
            assert time.monotonic() < deadline, f"left after stop: {left}\n{server.log()}"
            time.sleep(0.2)
    finally:
        server.stop()
    log = server.log()
    assert not non_json_lines(log), "\n".join(non_json_lines(log))
    assert "Traceback" not in log, log
