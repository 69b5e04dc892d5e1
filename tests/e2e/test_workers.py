"""``stackgate run --workers N``: connections spread over the workers (gateway/edge/supervisor.py, balance.py)."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter

import httpx
import pytest

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


def ask(sock: socket.socket) -> tuple[int, bool]:
    """The worker that answered a health check on ``sock``, and whether it asked to close."""
    sock.sendall(b"GET /_stackgate/health HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"}" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return json.loads(body)["worker"], b"\r\nconnection: close" in head.lower()


def worker_of(sock: socket.socket) -> int:
    return ask(sock)[0]


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
    warnings = [line["message"] for line in map(json.loads, log.splitlines()) if line["level"] == "warning"]
    assert any(m.startswith(f'warning: {config}: throttle.storage: "memory://" with --workers 2: each worker counts on its own') for m in warnings), log
    assert any('"redis://127.0.0.1:6379/0"' in m for m in warnings), log


def pool_on_one_worker(port: int, size: int) -> list[socket.socket]:
    """``size`` keep-alive connections that all landed on one worker (the others are closed)."""
    pool: list[socket.socket] = []
    spare: list[socket.socket] = []
    target = None
    try:
        while len(pool) < size:  # keep only connections that landed on one worker (and were not asked to close)
            sock = socket.create_connection(("127.0.0.1", port))
            worker, closing = ask(sock)
            target = target or (None if closing else worker)
            (pool if worker == target and not closing else spare).append(sock)
            assert len(spare) < 200, "the kernel never gave one worker enough connections"
    finally:
        for sock in spare:
            sock.close()
    time.sleep(0.3)  # the closes reach the other worker
    return pool


@pytest.fixture
def two_workers(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2).start()
    yield server
    server.stop()


@pytest.fixture
def one_sided(two_workers):
    """``make(size)``: that many keep-alive connections that all landed on one worker (closed at the end)."""
    pools: list[list[socket.socket]] = []

    def make(size: int) -> list[socket.socket]:
        pools.append(pool_on_one_worker(two_workers.port, size))
        return pools[-1]

    yield make
    for pool in pools:
        for sock in pool:
            sock.close()


def reconnect(pool: list[socket.socket], i: int, port: int) -> None:
    """What a client does after ``Connection: close``: the next request goes on a new connection."""
    pool[i].close()
    pool[i] = socket.create_connection(("127.0.0.1", port))


def test_a_keep_alive_pool_left_on_one_worker_is_evened_out(two_workers, one_sided):
    """8 connections all on one worker (the kernel's hash can do that to a small pool, and they stay
    as long as they live): that worker answers some with ``Connection: close``, the client
    reconnects, and the pool ends 4/4; an even pool is then left alone."""
    pool = one_sided(8)
    moved = 0
    deadline = time.monotonic() + 30
    while True:
        served = Counter()
        for i, sock in enumerate(pool):
            worker, closing = ask(sock)
            served[worker] += 1
            if closing:
                reconnect(pool, i, two_workers.port)
                moved += 1
        if sorted(served.values()) == [4, 4] and not closing:
            break
        assert time.monotonic() < deadline, served
        time.sleep(0.06)
    assert moved >= 4, "at least 4 connections had to move"

    for _ in range(20):
        for sock in pool:
            assert not ask(sock)[1], "an even pool is left alone"
    metrics = httpx.get(f"http://127.0.0.1:{two_workers.port}/_stackgate/metrics").text
    counted = next(line for line in metrics.splitlines() if line.startswith("stackgate_connections_rebalanced_total"))
    assert float(counted.split()[1]) >= moved, counted  # and those told to close while the pool was made


def test_a_worker_over_its_share_never_cuts_off_a_pipelined_request(two_workers, one_sided):
    pool = one_sided(8)
    for _ in range(10):
        for i, sock in enumerate(pool):
            # Two requests in one write: the first must not be answered with Connection: close.
            sock.sendall(b"GET /_stackgate/health HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
            data = b""
            while data.count(b"}") < 2:
                chunk = sock.recv(65536)
                assert chunk, f"the second request went unanswered: {data!r}"
                data += chunk
            assert b"connection: close" not in data.split(b"}")[0].lower()
            if b"connection: close" in data.lower():  # the second one may be
                reconnect(pool, i, two_workers.port)
        time.sleep(0.06)


def test_a_worker_over_its_share_never_closes_after_a_request_with_a_body(one_sided):
    pool = one_sided(8)
    body = b'{"x": 1}'
    for _ in range(10):
        for sock in pool:
            sock.sendall(b"POST /a/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = sock.recv(65536)
                assert chunk, response
                response += chunk
            head, _, rest = response.partition(b"\r\n\r\n")
            assert b"connection: close" not in head.lower(), "a request with a body is never the one shed"
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            while len(rest) < length:
                rest += sock.recv(65536)
        time.sleep(0.06)


def test_a_connection_upgraded_to_a_websocket_no_longer_counts_for_its_worker(two_workers, one_sided):
    """uvicorn hands an upgraded connection to its websocket protocol, which never tells the HTTP
    one it closed: left counted, each upgrade would make its worker look busier for good."""
    pool = one_sided(1)
    busy = worker_of(pool[0])
    upgraded = 0
    while upgraded < 6:
        sock = socket.create_connection(("127.0.0.1", two_workers.port))
        try:
            worker, closing = ask(sock)
            if worker != busy or closing:
                continue
            sock.sendall(b"GET /a/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            assert b" 403 " in sock.recv(65536)
            upgraded += 1
        finally:
            sock.close()
    time.sleep(0.3)
    # One connection on the busy worker, none on the other: never shed (moving it evens nothing).
    for _ in range(20):
        for sock in pool:
            assert not ask(sock)[1], "the upgraded connections still counted for their worker"
        time.sleep(0.06)
