"""The ``[server]`` table on the wire: a real ``stackgate run``, raw sockets.

The file sets small limits; ``STACKGATE_BODY_TIMEOUT`` overrides the file's
body timeout (the environment wins). The messages carry the configured values,
so each answer says which setting the server applied.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.test_adversarial_wire import assert_refused, closed_by_server, connect, exchange, parse, read
from tests.services import GatewayProcess, base_env
from tests.users import USERS, consumers_toml

OVERRIDES = ("STACKGATE_MAX_HEADER_BYTES", "STACKGATE_HEADER_TIMEOUT", "STACKGATE_BODY_TIMEOUT")

CONFIG = """
[server]
max_header_bytes = "2KiB"
header_timeout = 1.5
body_timeout = 60  # STACKGATE_BODY_TIMEOUT=1.5 wins
keep_alive_timeout = 1.5

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[[routes]]
prefix = "/v1"
backend = "rec"
auth = "none"
""" + consumers_toml()


def _env(tmp, **extra: str) -> dict:
    env = base_env(STACKGATE_DATA_DIR=str(tmp), DATABASE_URL=f"sqlite:///{tmp}/unused.sqlite3", **extra)
    for name in OVERRIDES:
        if name not in extra:
            env.pop(name, None)
    return env


def _start(tmp, workers: int = 1) -> GatewayProcess:
    config = tmp / "config.toml"
    config.write_text(CONFIG)
    return GatewayProcess(config, _env(tmp, STACKGATE_BODY_TIMEOUT="1.5"), workers=workers).start(timeout=90)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = _start(tmp_path_factory.mktemp("server-settings"))
    yield proc
    proc.stop()
    print(f"--- gateway on {proc.url} ---\n{proc.log()[-20000:]}")  # shown when a test fails


def _request(pad: int) -> bytes:
    return b"GET /v1/x HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * pad + b"\r\n\r\n"


def test_a_head_over_max_header_bytes_is_a_431(server):
    (served,) = parse(exchange(server, _request(1500), responses=1))
    assert served.status == 200  # under the 2 KiB of the file
    (response,) = parse(exchange(server, _request(3000)))  # under the default 32 KiB
    error = assert_refused(response, 431, "headers_too_large")
    assert error["message"] == "The request line and headers exceed 2048 bytes."


def test_a_slow_head_is_a_408_after_header_timeout(server):
    with connect(server, timeout=30) as sock:
        sock.sendall(b"GET /v1/x HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        started = time.monotonic()
        answer = read(sock)
        elapsed = time.monotonic() - started
        closed = closed_by_server(sock)
    (response,) = parse(answer)
    error = assert_refused(response, 408, "request_timeout")
    assert error["message"] == "The request headers did not arrive within 1.5 seconds."
    assert closed and elapsed < 8, elapsed  # the default is 10 seconds


def test_the_environment_overrides_the_body_timeout(server):
    with connect(server, timeout=30) as sock:
        sock.sendall(b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        answer = read(sock)
    (response,) = parse(answer)
    error = assert_refused(response, 408, "request_timeout")
    assert error["message"] == "No request body bytes arrived for 1.5 seconds."  # not the file's 60


def test_an_idle_connection_is_closed_after_keep_alive_timeout(server):
    with connect(server, timeout=30) as sock:
        sock.sendall(b"GET /v1/x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert parse(read(sock, responses=1))[0].status == 200
        started = time.monotonic()
        assert closed_by_server(sock)
        assert time.monotonic() - started < 4.5  # uvicorn's default is 5 seconds


def test_status_shows_the_applied_values(server):
    answer = httpx.get(server.url + "/_stackgate/status", headers=USERS["admin"].headers(), timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["server"] == {
        "max_header_bytes": 2048,
        "header_timeout": 1.5,
        "body_timeout": 1.5,
        "keep_alive_timeout": 1.5,
        "graceful_timeout": 30.0,
    }


def test_workers_apply_the_table_too(tmp_path):
    """With ``--workers``, each worker process reads its own config: the limits reach them."""
    proc = _start(tmp_path, workers=2)
    try:
        for _ in range(4):  # whichever worker takes the connection
            (response,) = parse(exchange(proc, _request(3000)))
            assert_refused(response, 431, "headers_too_large")
    finally:
        proc.stop()
        print(f"--- gateway on {proc.url} ---\n{proc.log()[-20000:]}")
