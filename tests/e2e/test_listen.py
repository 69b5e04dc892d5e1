"""``stackgate run --workers N`` on a port that is taken: one JSON error line, exit 3, and never a second
server sharing the port through ``SO_REUSEPORT`` (gateway/edge/supervisor.py ``listening_sockets``)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.e2e.test_workers_memory import CONFIG as WORKERS_CONFIG
from tests.services import GatewayProcess, base_env, session_processes

CONFIG = WORKERS_CONFIG.replace("wsgi_apps:variant_a", "wsgi_apps:collector")  # answers with its pid


def refused(server: GatewayProcess) -> str:
    code = server.exit_code()
    log = server.log()
    assert code == 3, f"exit {code}\n{log}"
    assert "Traceback" not in log, log
    errors = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"error"' in line]
    assert any(f"Cannot listen on 127.0.0.1:{server.port}: Address already in use" in e["message"] for e in errors), log
    return log


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_another_program_listens_on_is_an_error(tmp_path, workers):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=workers,
                                port=other.getsockname()[1]).launch()
        if workers == 1:  # uvicorn's own bind: its JSON line, then the gateway's exit code
            code = server.exit_code()
            assert code == 3 and "Address already in use" in server.log() and "Traceback" not in server.log(), server.log()
        else:
            refused(server)


def test_a_second_gateway_on_the_port_of_a_running_one_is_refused(tmp_path):
    """Both would bind with SO_REUSEPORT, and the kernel would split the first one's clients between them."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    first = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2).start(timeout=90)
    try:
        second = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path / "second")), workers=2, port=first.port)
        (tmp_path / "second").mkdir()
        second.log_dir = tmp_path / "second"
        second.launch()
        refused(second)
        mine = {p.pid for p in session_processes(first.proc.pid)}
        for _ in range(20):  # every new connection still reaches the first gateway's workers
            r = httpx.get(first.url + "/a/x", headers={"Connection": "close"}, timeout=10)
            assert r.status_code == 200 and r.json()["pid"] in mine, (r.text, mine, first.log())
    finally:
        first.stop()
