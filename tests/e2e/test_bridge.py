"""The WSGI bridge through a real uvicorn process: streaming both ways, disconnects,
failures mid-response, and bulkheads between stacks."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import httpx
import pytest

from tests.services import GatewayProcess, base_env

CONFIG = """
[gateway]
max_body_size = "64MiB"

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[backends.stream]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:stream"

[backends.endless]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:endless"

[backends.upload]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:upload"
buffer_size = "1MiB"

[backends.django]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:blocking_django"
threads = 4
timeout = 60

[backends.flask]
kind = "wsgi"
app = "backends.flask_site.wsgi:app"

[[routes]]
prefix = "/rec"
backend = "rec"
auth = "none"

[[routes]]
prefix = "/stream"
backend = "stream"
auth = "none"

[[routes]]
prefix = "/endless"
backend = "endless"
auth = "none"

[[routes]]
prefix = "/upload"
backend = "upload"
auth = "none"

[[routes]]
prefix = "/v2"
backend = "django"
auth = "none"

[[routes]]
prefix = "/v1"
backend = "flask"
auth = "none"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bridge")
    config = tmp / "config.toml"
    config.write_text(CONFIG)
    proc = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp))).start()
    yield proc
    proc.stop()


def test_large_download_streams(server):
    total = 0
    with httpx.stream("GET", server.url + "/stream/x?n=800&size=65536", timeout=30) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        for chunk in response.iter_raw():
            total += len(chunk)
    assert total == 800 * 65536


def test_small_response_gets_a_content_length(server):
    response = httpx.get(server.url + "/stream/x?n=2&size=100")
    assert response.headers["content-length"] == "200"


def test_large_upload_streams_to_the_app(server):
    size = 40 * 1024 * 1024
    response = httpx.post(server.url + "/upload/x", content=b"u" * size, timeout=60)
    assert response.json() == {"received": size, "content_length": str(size)}


def test_chunked_upload_arrives_whole(server):
    def chunks():
        for _ in range(64):
            yield b"c" * 10000

    response = httpx.post(server.url + "/upload/x", content=chunks(), timeout=30)
    assert response.json() == {"received": 640000, "content_length": "640000"}


def test_disconnect_stops_an_endless_response(server, tmp_path):
    marker = tmp_path / "closed"
    with httpx.stream("GET", f"{server.url}/endless/x?marker={marker}", timeout=10) as response:
        for i, _ in enumerate(response.iter_raw()):
            if i > 20:
                break
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the app's close() was not called after the client left"


def test_failure_mid_stream_truncates_visibly(server):
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("GET", server.url + "/stream/x?n=100&size=65536&fail=50", timeout=10) as response:
            for _ in response.iter_raw():
                pass


def test_a_failure_mid_stream_is_logged_once_and_every_log_line_is_json(server):
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("GET", server.url + "/stream/x?n=100&size=65536&fail=50", timeout=10) as response:
            request_id = response.headers["x-request-id"]
            for _ in response.iter_raw():
                pass
    deadline = time.monotonic() + 5
    while request_id not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]  # uvicorn's own lines too
    assert {"Started server process", "Application startup complete."} <= {line["message"].split(" [")[0] for line in lines}
    failed = [line for line in lines if request_id in line["message"]]
    assert len(failed) == 1 and "failed mid-stream" in failed[0]["traceback"], failed
    assert not [line for line in lines if line["message"].startswith("Exception in ASGI application")], "logged twice"


def test_failure_before_first_byte_is_a_502(server):
    response = httpx.get(server.url + "/stream/x?n=10&size=10&fail=0")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "backend_error"


def test_django_blocked_for_ten_seconds_does_not_slow_flask(server):
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        stuck = [pool.submit(httpx.get, server.url + "/v2/todos?block=10", timeout=30) for _ in range(8)]
        time.sleep(0.5)
        timings = []
        for _ in range(20):
            started = time.monotonic()
            assert httpx.get(server.url + "/v1/todos").status_code == 200
            timings.append(time.monotonic() - started)
        assert max(timings) < 1.0, f"Flask answered in up to {max(timings):.2f} s while Django was blocked"
        assert all(not f.done() for f in stuck), "Django's requests should still be blocked"
        results = [f.result() for f in stuck]
        assert all(r.status_code == 200 for r in results), "the blocked Django requests finish normally"


def raw_request(server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
        return b"".join(chunks)


@pytest.mark.parametrize(
    "request_line",
    [
        b"get /rec/x HTTP/1.1",
        b"GET /rec/%2e%2e/v1 HTTP/1.1",
        b"GET /rec/a%2fb HTTP/1.1",
        b"GET /rec//x HTTP/1.1",
        b"GET http://x/rec/x HTTP/1.1",
        b"GET /rec/a\x01b HTTP/1.1",
    ],
    ids=["lowercase-method", "encoded-dots", "encoded-slash", "double-slash", "absolute-form", "control-char"],
)
def test_raw_requests_refused(server, request_line):
    answer = raw_request(server, request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"status":400' in answer


def test_oversized_headers_are_a_431(server):
    answer = raw_request(server, b"GET /rec/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"code":"headers_too_large"' in answer
