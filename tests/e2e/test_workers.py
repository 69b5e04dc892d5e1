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
