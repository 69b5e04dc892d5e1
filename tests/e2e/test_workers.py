"""``stackgate run --workers N``: connections spread evenly over the workers (gateway/supervisor.py, listener.py)."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter

from tests.services import GatewayProcess, base_env

CONFIG = """
[backends.a]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_a"

[[routes]]
prefix = "/a"
backend = "a"
auth = "none"
"""

THROTTLED = CONFIG + """throttle = "p"

[throttle.policies.p]
rates = ["100/minute"]
"""


def worker_of(sock: socket.socket) -> int:
    sock.sendall(b"GET /_stackgate/health HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"}" not in data:
        data += sock.recv(4096)
    return json.loads(data.split(b"\r\n\r\n", 1)[1])["worker"]


def test_a_burst_of_connections_is_spread_over_the_workers(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2).launch()
    try:
        # A client pool opening at once, as soon as the port answers (before the workers have loaded):
        # with uvicorn's shared socket the first worker ready took every connection and the other
        # core idled; with a socket per worker the kernel's hash split them unevenly.
        deadline = time.monotonic() + 30
        while True:
            try:
                first = socket.create_connection(("127.0.0.1", server.port))
                break
            except OSError:
                assert time.monotonic() < deadline and server.proc.poll() is None, server.log()
                time.sleep(0.02)
        sockets = [first] + [socket.create_connection(("127.0.0.1", server.port)) for _ in range(31)]
        try:
            served = Counter(worker_of(sock) for sock in sockets)
        finally:
            for sock in sockets:
                sock.close()
        assert len(served) == 2 and min(served.values()) >= 15, served
    finally:
        server.stop()


def test_a_small_keep_alive_pool_is_split_evenly(tmp_path):
    """4 connections (a proxy's upstream pool): 2 per worker, every time. The kernel's hash put
    all 4 on one worker in one run of three here, which served at half the req/s."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2).start()
    try:
        for _ in range(5):
            sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
            try:
                served = Counter(worker_of(sock) for sock in sockets)
            finally:
                for sock in sockets:
                    sock.close()
            assert sorted(served.values()) == [2, 2], served
            time.sleep(0.3)  # the closes reach the workers
    finally:
        server.stop()


def test_memory_throttling_with_several_workers_is_warned_about(tmp_path):
    """Each worker would count alone: the operator hears it at start, and how to share the counters."""
    config = tmp_path / "config.toml"
    config.write_text(THROTTLED)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2).start()
    try:
        log = server.log()
    finally:
        server.stop()
    assert f'warning: {config}: throttle.storage: "memory://" with --workers 2: each worker counts on its own' in log
    assert '"redis://127.0.0.1:6379/0"' in log
