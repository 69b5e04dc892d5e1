"""``stackgate run --workers N``: connections spread over the workers (gateway/supervisor.py)."""

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
        # A client pool opening at once, as soon as the port answers: with one shared socket, the
        # first worker ready (or the first to wake) took every connection and the other core idled.
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
        assert len(served) == 2 and min(served.values()) >= 4, served
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
