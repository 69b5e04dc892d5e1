"""Adversarial requests on the wire: a real ``stackgate run``, raw sockets.

Here the HTTP parser decides: bytes a request line cannot carry, framing
(request smuggling), header limits, pipelining, upgrades, slow clients and
shutdown. Every refusal must be the gateway's JSON shape — never uvicorn's
plain text, never a traceback — and nothing refused may reach the backend:
the recorder runs inside the gateway process, so ``/dump`` (``recorded``
below) reads it from there.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote_to_bytes

import httpx
import pytest

from tests.adversarial_cases import BYTE_CASE_IDS, BYTE_CASES
from tests.services import ROOT, GatewayProcess, base_env, free_port
from tests.test_adversarial import GATEWAY_ONLY, ambiguous

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
KEEP_ALIVE = 5.0  # uvicorn's default; `stackgate run` does not change it
LIMIT = 64 * 1024

CONFIG = """
[gateway]
max_body_size = "64KiB"

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
threads = 1
buffer_size = "16KiB"

[backends.dump]
kind = "wsgi"
app = "tests.e2e.test_adversarial_wire:recorded"

[backends.slow]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:slow"

[[routes]]
prefix = "/v1"
backend = "rec"
auth = "none"

[[routes]]
prefix = "/dump"
backend = "dump"
auth = "none"

[[routes]]
prefix = "/slow"
backend = "slow"
auth = "none"
"""


def recorded(environ, start_response):
    """WSGI, in the gateway process: what the recorder saw (``?case=ID``: only requests with ``X-Case: ID``)."""
    from tests.fixtures.wsgi_apps import RECORDED

    case = environ.get("QUERY_STRING", "").partition("case=")[2]
    entries = [entry for entry in RECORDED if not case or entry["headers"].get("HTTP_X_CASE") == case]
    body = json.dumps(entries).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _env(tmp, **extra: str) -> dict:
    # No stack here uses the database: a DATABASE_URL spares `stackgate run` its migrations (seconds).
    return base_env(STACKGATE_DATA_DIR=str(tmp), DATABASE_URL=f"sqlite:///{tmp}/unused.sqlite3", **extra)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adversarial")
    config = tmp / "config.toml"
    config.write_text(CONFIG)
    env = _env(tmp, STACKGATE_HEADER_TIMEOUT=str(HEADER_TIMEOUT), STACKGATE_BODY_TIMEOUT=str(BODY_TIMEOUT))
    proc = GatewayProcess(config, env).start()
    proc.http = httpx.Client(base_url=proc.url, timeout=10)
    yield proc
    proc.http.close()
    proc.stop()


# -- raw HTTP ---------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes


def parse(data: bytes) -> list[Response]:
    """The complete responses in ``data`` (every answer here carries a Content-Length)."""
    responses = []
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        length = int(headers.get("content-length", 0))
        if len(rest) < length:
            break
        responses.append(Response(int(lines[0].split()[1]), headers, rest[:length], head + b"\r\n\r\n" + rest[:length]))
        data = rest[length:]
    return responses


def connect(server, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read(sock: socket.socket, responses: Optional[int] = None) -> bytes:
    """Until the server closes, or until ``responses`` complete responses arrived."""
    data = b""
    while responses is None or len(parse(data)) < responses:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def exchange(server, data: bytes, responses: Optional[int] = None) -> bytes:
    with connect(server) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read(sock, responses)


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def count(server, case: Optional[str] = None) -> int:
    return len(server.http.get("/dump", params={"case": case} if case else None).json())


def assert_refused(response: Response, status: int, codes) -> dict:
    codes = {codes} if isinstance(codes, str) else set(codes)
    assert response.status == status, response.raw
    assert response.headers["content-type"] == "application/json", response.raw
    document = json.loads(response.body)
    assert list(document) == ["error"]
    error = document["error"]
    assert {"status", "code", "message", "request_id"} <= set(error)
    assert error["status"] == status and error["code"] in codes, error
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert b"Traceback" not in response.raw and b'File "' not in response.raw
    return error


def request(target: bytes, case: str, method: bytes = b"GET", extra: bytes = b"") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: x\r\nX-Case: %s\r\n%sConnection: close\r\n\r\n" % (method, target, case.encode(), extra)


# -- every byte, raw and percent-encoded, inside a segment ----------------------------------------



@pytest.mark.parametrize("form, byte, target", BYTE_CASES, ids=BYTE_CASE_IDS)
def test_every_byte_in_a_segment(server, form, byte, target):
    case = f"{form}-{byte:02X}"
    before = count(server)
    data = exchange(server, request(target, case))
    responses = parse(data)
    assert len(responses) == 1, data
    response = responses[0]
    if response.status == 200:
        seen = json.loads(response.body)
        expected = unquote_to_bytes(target.split(b"?")[0]).decode("utf-8")  # a raw '?' starts the query
        assert (seen["script_name"] + seen["path_info"]).encode("latin-1").decode("utf-8") == expected
        assert not ambiguous(expected)
        assert count(server, case) == 1
    else:
        assert_refused(response, 400, {"bad_path", "bad_request"})
        assert count(server) == before, "a refused request reached the backend"


# -- what the parser refuses ------------------------------------------------------------------------

SMUGGLED = b"GET /v1/smuggled HTTP/1.1\r\nHost: x\r\nX-Case: smuggled\r\n\r\n"
_H = b"Host: x\r\nX-Case: parser\r\n"


def _post(headers: bytes, body: bytes = b"0\r\n\r\n" + SMUGGLED, version: bytes = b"1.1") -> bytes:
    return b"POST /v1/x HTTP/" + version + b"\r\n" + _H + headers + b"\r\n" + body


PARSER_REFUSED = [
    ("lower-case method", b"get /v1/x HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_method"),
    ("mixed-case method", b"Get /v1/x HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_method"),
    ("non-token method", b"G(T /v1/x HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_method"),
    ("unknown method", b"FOO /v1/x HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_method"),
    ("space in the target", b"GET /v1/a b HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_request"),
    ("tab in the target", b"GET /v1/a\tb HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("CR in the target", b"GET /v1/a\rb HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("LF in the target", b"GET /v1/a\nb HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_request"),
    ("NUL in the target", b"GET /v1/a\x00b HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("raw UTF-8 in the target", "GET /v1/caf\u00e9 HTTP/1.1\r\n".encode() + _H + b"\r\n", 400, "bad_path"),
    ("fragment", b"GET /v1/x#frag HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("absolute form", b"GET http://x/v1/x HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("absolute form https", b"GET https://x/v1/x HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("scheme-relative", b"GET //x/v1/x HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("asterisk form", b"OPTIONS * HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("CONNECT", b"CONNECT x:443 HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("CONNECT to a path", b"CONNECT /v1/x HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_request"),
    ("upper-case V1", b"GET /V1/x HTTP/1.1\r\n" + _H + b"\r\n", 404, "route_not_found"),
    ("dot segment", b"GET /v1/../v1/x HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("encoded dot segment", b"GET /v1/%2e%2e/v1/x HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("overlong dot segment", b"GET /v1/%C0%AE%C0%AE/x HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("double slash", b"GET /v1//x HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("semicolon", b"GET /v1/x;y HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("encoded slash", b"GET /v1/a%2fb HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("encoded backslash", b"GET /v1/a%5Cb HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("raw backslash", b"GET /v1/a\\b HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("encoded hash", b"GET /v1/a%23b HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("encoded question mark", b"GET /v1/a%3Fb HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("trailing encoded newline", b"GET /v1/x%0a HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("encoded NUL", b"GET /v1/x%00 HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("invalid UTF-8", b"GET /v1/%FF HTTP/1.1\r\n" + _H + b"\r\n", 400, "bad_path"),
    ("HTTP/1.2", b"GET /v1/x HTTP/1.2\r\n" + _H + b"\r\n", 400, "bad_request"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_request"),
    ("two Host headers", b"GET /v1/x HTTP/1.1\r\nHost: x\r\nHost: admin\r\nX-Case: parser\r\n\r\n", 400, "bad_request"),
    ("obs-fold", b"GET /v1/x HTTP/1.1\r\n" + _H + b"X-A: one\r\n two\r\n\r\n", 400, "bad_request"),
    ("obs-fold with a tab", b"GET /v1/x HTTP/1.1\r\n" + _H + b"X-A: one\r\n\ttwo\r\n\r\n", 400, "bad_request"),
    ("obs-fold of an identity header", b"GET /v1/x HTTP/1.1\r\n" + _H + b"X-Keep: a\r\n X-Remote-User: mallory\r\n\r\n", 400, "bad_request"),
    ("obs-fold first", b"GET /v1/x HTTP/1.1\r\n X-A: one\r\n" + _H + b"\r\n", 400, "bad_request"),
    ("bare LF line ends", b"GET /v1/x HTTP/1.1\nHost: x\nX-Case: parser\n\n", 400, "bad_request"),
    ("bare CR in a value", b"GET /v1/x HTTP/1.1\r\n" + _H + b"X-A: a\rb\r\n\r\n", 400, "bad_request"),
    ("NUL in a value", b"GET /v1/x HTTP/1.1\r\n" + _H + b"X-A: a\x00b\r\n\r\n", 400, "bad_request"),
    ("space before the colon", b"GET /v1/x HTTP/1.1\r\n" + _H + b"X-Remote-User : mallory\r\n\r\n", 400, "bad_request"),
    ("tab before the colon", b"GET /v1/x HTTP/1.1\r\n" + _H + b"X-Remote-User\t: mallory\r\n\r\n", 400, "bad_request"),
    ("non-ASCII header name", "GET /v1/x HTTP/1.1\r\nX-R\u00e9mote-User: mallory\r\n".encode() + _H + b"\r\n", 400, "bad_request"),
    ("Content-Length not a number", _post(b"Content-Length: abc\r\n", b""), 400, "bad_request"),
    ("Content-Length with a sign", _post(b"Content-Length: +5\r\n", b"12345"), 400, "bad_request"),
    ("negative Content-Length", _post(b"Content-Length: -1\r\n", b""), 400, "bad_request"),
    ("empty Content-Length", _post(b"Content-Length: \r\n", b""), 400, "bad_request"),
    ("Content-Length list", _post(b"Content-Length: 5, 5\r\n", b"12345"), 400, "bad_request"),
    ("Content-Length in hex", _post(b"Content-Length: 0x5\r\n", b"12345"), 400, "bad_request"),
    ("Content-Length with trailing space", _post(b"Content-Length: 5 \r\n", b"12345"), 400, "bad_request"),
    ("two Content-Lengths", _post(b"Content-Length: 5\r\nContent-Length: 45\r\n"), 400, "bad_request"),
    ("two equal Content-Lengths", _post(b"Content-Length: 5\r\nContent-Length: 5\r\n"), 400, "bad_request"),
    ("CL then TE", _post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), 400, "bad_request"),
    ("TE then CL", _post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), 400, "bad_request"),
    ("CL zero and TE", _post(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"), 400, "bad_request"),
    ("CL and TE on HTTP/1.0", _post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", version=b"1.0"), 400, "bad_request"),
    ("two TE chunked", _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), 400, "bad_request"),
    ("TE chunked not last", _post(b"Transfer-Encoding: chunked, gzip\r\n"), 400, "bad_request"),
    ("TE chunked then identity", _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"), 400, "bad_request"),
    ("TE unknown coding", _post(b"Transfer-Encoding: xchunked\r\n"), 400, "bad_request"),
    ("TE with a space before the colon", _post(b"Transfer-Encoding : chunked\r\n"), 400, "bad_request"),
    ("TE with a vertical tab", _post(b"Transfer-Encoding: \x0bchunked\r\n"), 400, "bad_request"),
    ("TE obs-folded", _post(b"Transfer-Encoding:\r\n chunked\r\n"), 400, "bad_request"),
    ("bad chunk size", _post(b"Transfer-Encoding: chunked\r\n", b"5 x\r\nabcde\r\n0\r\n\r\n" + SMUGGLED), 400, "bad_request"),
    ("chunk size overflow", _post(b"Transfer-Encoding: chunked\r\n", b"1" + b"0" * 17 + b"\r\nabcde\r\n0\r\n\r\n"), 400, "bad_request"),
    ("chunk with bare LF", _post(b"Transfer-Encoding: chunked\r\n", b"5\nabcde\n0\n\n" + SMUGGLED), 400, "bad_request"),
    ("upgrade with a body", _post(b"Connection: Upgrade\r\nUpgrade: foo\r\nContent-Length: %d\r\n" % len(SMUGGLED), SMUGGLED), 400, "bad_request"),
    ("upgrade with a chunked body", _post(b"Connection: Upgrade\r\nUpgrade: foo\r\nTransfer-Encoding: chunked\r\n"), 400, "bad_request"),
    ("request line too long", b"GET /v1/" + b"a" * 40000 + b" HTTP/1.1\r\n" + _H + b"\r\n", 431, "headers_too_large"),
    ("one huge header", b"GET /v1/x HTTP/1.1\r\n" + _H + b"X-Big: " + b"a" * 40000 + b"\r\n\r\n", 431, "headers_too_large"),
    ("many headers", b"GET /v1/x HTTP/1.1\r\n" + _H + b"".join(b"X-H%d: v\r\n" % i for i in range(4000)) + b"\r\n", 431, "headers_too_large"),
    ("huge chunked trailer", _post(b"Transfer-Encoding: chunked\r\n", b"0\r\nX-T: " + b"a" * 40000 + b"\r\n\r\n"), 431, "headers_too_large"),
]


#: Pipelined after each case: the connection ends after it, or at once if the case closed it.
SENTINEL = b"GET /dump HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("data, status, code", [c[1:] for c in PARSER_REFUSED], ids=[c[0] for c in PARSER_REFUSED])
def test_refused_on_the_wire(server, data, status, code):
    before = count(server)
    answer = exchange(server, data + SENTINEL)
    responses = parse(answer)
    assert responses, answer
    assert_refused(responses[0], status, code)
    assert [r.status for r in responses[1:]] in ([], [200]), answer  # nothing between the refusal and the sentinel
    assert count(server) == before, "a refused request (or one smuggled in its body) reached the backend"


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(server):
    before = count(server)
    with connect(server) as sock:
        sock.sendall(b"POST /v1/x HTTP/1.1\r\nHost: x\r\nX-Case: declared\r\nContent-Length: 1000000000\r\n\r\n")
        (response,) = parse(read(sock, responses=1))
    assert_refused(response, 413, "body_too_large")
    assert count(server) == before


def test_a_chunked_body_over_the_limit_is_refused_while_it_arrives(server):
    before = count(server)
    sent = 0
    with connect(server) as sock:
        sock.sendall(b"POST /v1/x HTTP/1.1\r\nHost: x\r\nX-Case: chunked\r\nTransfer-Encoding: chunked\r\n\r\n")
        while not select.select([sock], [], [], 0.02)[0]:
            sock.sendall(b"2000\r\n" + b"c" * 0x2000 + b"\r\n")
            sent += 0x2000
            assert sent < 1 << 20, "no answer after 1 MiB of a body limited to 64 KiB"
        (response,) = parse(read(sock, responses=1))
    assert_refused(response, 413, "body_too_large")
    assert count(server) == before


def test_an_unfinished_header_is_not_buffered_past_the_limit(server):
    """One header value that never ends: a 431 once the head passes the limit, not after the client stops."""
    sent = 0
    with connect(server) as sock:
        sock.sendall(b"GET /v1/x HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            while not select.select([sock], [], [], 0.02)[0]:
                sock.sendall(b"a" * 4096)
                sent += 4096
                assert sent < 1 << 20, "1 MiB of one header and no answer: the server is buffering it"
        except (BrokenPipeError, ConnectionResetError):
            pass
        (response,) = parse(read(sock))
    assert_refused(response, 431, "headers_too_large")
    assert sent < 256 * 1024


# -- headers only the gateway sets, as sent on the wire --------------------------------------------

FORGED_NAMES = [
    b"X-Remote-User",
    b"X-REMOTE-USER",
    b"x-remote-user",
    b"x_remote_user",
    b"X_Remote_User",
    b"X-Remote_User",
    b"Remote-User",
    b"REMOTE_USER",
    b"remote_user",
    b"X-CONSUMER-ID",
    b"x-consumer-id",
    b"X_Consumer_Id",
    b"X-Consumer-Roles",
    b"X-AUTH-SCHEME",
    b"X-Forwarded-User",
    b"X-Authenticated-User",
    b"X-Forwarded-Prefix",
    b"X-Api-Version",
    b"X-Stackgate-Backend",
    b"X-HTTP-Method-Override",
    b"x-http-method",
    b"X-Method-Override",
    b"X_HTTP_METHOD_OVERRIDE",
]


def test_forged_identity_and_method_override_headers_are_stripped(server):
    forged = b"".join(name + (b": DELETE\r\n" if b"method" in name.lower() else b": mallory\r\n") for name in FORGED_NAMES)
    (response,) = parse(exchange(server, request(b"/v1/forged", "forged", extra=forged + b"X-Keep: yes\r\n")))
    assert response.status == 200, response.raw
    seen = json.loads(response.body)
    assert seen["method"] == "GET"
    assert seen["remote_user"] is None
    assert not GATEWAY_ONLY & set(seen["headers"]), seen["headers"]
    assert seen["headers"]["HTTP_X_KEEP"] == "yes"
    assert b"mallory" not in response.body and b"DELETE" not in response.body


def test_trailers_never_become_headers(server):
    """Trailers arrive after the gateway decided on the headers (in the same packet, they used to join them)."""
    data = (
        b"POST /v1/trailers HTTP/1.1\r\nHost: x\r\nX-Case: trailers\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Trailer-Only: 1\r\nHost: admin\r\nX-Remote-User: mallory\r\n\r\n"
    )
    (response,) = parse(exchange(server, data))
    seen = json.loads(response.body)
    assert seen["body_len"] == 5
    assert seen["headers"]["HTTP_HOST"] == "x"
    assert "HTTP_X_TRAILER_ONLY" not in seen["headers"] and "HTTP_X_REMOTE_USER" not in seen["headers"]


# -- pipelining and upgrades -------------------------------------------------------------------------


def test_a_refusal_waits_for_the_response_before_it(server):
    """A bad request pipelined behind a slow one: the slow one gets its own 200 first (no response desync)."""
    data = b"GET /slow/x?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\x01 / HTTP/1.1\r\nHost: x\r\n\r\n"
    responses = parse(exchange(server, data))
    assert [r.status for r in responses] == [200, 400]
    assert json.loads(responses[0].body) == {"slept": 0.5}
    assert_refused(responses[1], 400, "bad_method")


def test_a_pipelined_request_with_two_hosts_is_refused_after_the_first_is_served(server):
    data = (
        b"GET /v1/first HTTP/1.1\r\nHost: x\r\nX-Case: pipe-1\r\n\r\n"
        b"GET /v1/second HTTP/1.1\r\nHost: x\r\nHost: y\r\nX-Case: pipe-2\r\n\r\n"
    )
    responses = parse(exchange(server, data))
    assert [r.status for r in responses] == [200, 400]
    assert_refused(responses[1], 400, "bad_request")
    assert (count(server, "pipe-1"), count(server, "pipe-2")) == (1, 0)


def test_an_upgrade_the_gateway_does_not_perform_closes_the_connection(server):
    data = (
        b"GET /v1/h2c HTTP/1.1\r\nHost: x\r\nX-Case: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        b"GET /v1/after HTTP/1.1\r\nHost: x\r\nX-Case: after-upgrade\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(data)
        responses = parse(read(sock))  # read() returns only once the server closed
    assert [r.status for r in responses] == [200]
    assert responses[0].headers["connection"] == "close"
    assert (count(server, "h2c"), count(server, "after-upgrade")) == (1, 0)


def test_a_websocket_upgrade_is_refused_in_the_json_shape(server):
    data = (
        b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    (response,) = parse(exchange(server, data))
    assert response.status == 403
    assert_refused(response, 403, "forbidden")


# -- slow clients -----------------------------------------------------------------------------------


def _trickle(server, head: bytes, result: dict, first: bytes = b"") -> None:
    """Send ``first`` at once, then ``head`` one byte a second; record the answer and when the server closed."""
    with connect(server, timeout=HEADER_TIMEOUT + 5) as sock:
        if first:
            sock.sendall(first)
            result["first"] = parse(read(sock, responses=1))
        started = time.monotonic()
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            if select.select([sock], [], [], 1.0)[0]:
                break
        result["answer"] = read(sock)
        result["elapsed"] = time.monotonic() - started
        result["closed"] = closed_by_server(sock)


def _assert_timed_out_head(result: dict) -> None:
    (response,) = parse(result["answer"])
    error = assert_refused(response, 408, "request_timeout")
    assert "headers" in error["message"]
    assert result["closed"]
    assert result["elapsed"] <= HEADER_TIMEOUT + 1, result["elapsed"]


def test_a_trickled_head_is_a_408_while_others_are_served(server):
    result: dict = {}
    head = b"GET /v1/slowloris HTTP/1.1\r\nHost: x\r\nX-Case: slowloris\r\n\r\n"
    slowloris = threading.Thread(target=_trickle, args=(server, head, result))
    slowloris.start()
    time.sleep(0.3)
    for _ in range(5):  # the only thread of the backend is free the whole time
        started = time.monotonic()
        assert server.http.get("/v1/meanwhile").status_code == 200
        assert time.monotonic() - started < 1.0
        time.sleep(0.2)
    slowloris.join(HEADER_TIMEOUT + 5)
    _assert_timed_out_head(result)
    assert count(server, "slowloris") == 0


def test_a_trickled_head_on_a_kept_alive_connection_is_a_408(server):
    result: dict = {}
    _trickle(server, b"GET /v1/second HTTP/1.1\r\nHost: x\r\n\r\n", result, first=b"GET /v1/first HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [r.status for r in result["first"]] == [200]
    _assert_timed_out_head(result)


def test_idle_connections_are_closed_after_the_keep_alive_timeout(server):
    results: dict = {}

    def wait_for_close(name: str, first: bytes) -> None:
        with connect(server, timeout=KEEP_ALIVE + 3) as sock:
            if first:
                sock.sendall(first)
                assert parse(read(sock, responses=1))[0].status == 200
            started = time.monotonic()
            results[name] = (closed_by_server(sock), time.monotonic() - started)

    threads = [
        threading.Thread(target=wait_for_close, args=("new", b"")),
        threading.Thread(target=wait_for_close, args=("kept alive", b"GET /v1/x HTTP/1.1\r\nHost: x\r\n\r\n")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(KEEP_ALIVE + 5)
    for name, (closed, elapsed) in results.items():
        assert closed and elapsed <= KEEP_ALIVE + 1, (name, closed, elapsed)
    assert len(results) == 2


def test_a_stalled_body_is_a_408_and_holds_no_thread(server):
    with connect(server, timeout=BODY_TIMEOUT + 5) as sock:
        sock.sendall(b"POST /v1/x HTTP/1.1\r\nHost: x\r\nX-Case: stalled\r\nContent-Length: 100\r\n\r\n0123456789")
        started = time.monotonic()
        for _ in range(3):  # the backend has one thread, and the stalled request does not hold it
            t = time.monotonic()
            assert server.http.get("/v1/meanwhile").status_code == 200
            assert time.monotonic() - t < 1.0
        answer = read(sock)
        elapsed = time.monotonic() - started
        closed = closed_by_server(sock)
    (response,) = parse(answer)
    error = assert_refused(response, 408, "request_timeout")
    assert "body" in error["message"]
    assert closed
    assert BODY_TIMEOUT - 0.2 <= elapsed <= BODY_TIMEOUT + 1, elapsed
    assert count(server, "stalled") == 0


def test_a_stalled_streamed_body_frees_the_thread(server):
    """A body over the backend's buffer_size streams to the app in its thread: a stall there is cut too."""
    meanwhile: dict = {}

    def normal_request() -> None:
        response = server.http.get("/v1/meanwhile")
        meanwhile.update(status=response.status_code, at=time.monotonic())

    with connect(server, timeout=BODY_TIMEOUT + 6) as sock:
        sock.sendall(b"POST /v1/x HTTP/1.1\r\nHost: x\r\nX-Case: streamed\r\nContent-Length: 60000\r\n\r\n" + b"s" * 100)
        started = time.monotonic()
        time.sleep(0.3)
        other = threading.Thread(target=normal_request)
        other.start()
        answer = read(sock)
        elapsed = time.monotonic() - started
        closed = closed_by_server(sock)
    other.join(10)
    (response,) = parse(answer)
    assert_refused(response, 408, "request_timeout")
    assert closed
    assert elapsed <= BODY_TIMEOUT + 2, elapsed
    assert meanwhile["status"] == 200 and meanwhile["at"] - started <= BODY_TIMEOUT + 3
    assert count(server, "streamed") == 0


def test_a_slow_body_that_keeps_coming_is_served(server):
    """The body timeout is between bytes, not for the whole body."""
    with connect(server, timeout=10) as sock:
        sock.sendall(b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n")
        for byte in b"123":
            time.sleep(BODY_TIMEOUT * 0.6)
            sock.sendall(bytes([byte]))
        (response,) = parse(read(sock))
    assert response.status == 200
    assert json.loads(response.body)["body_len"] == 3


def test_no_traceback_was_logged(server):
    assert "Traceback" not in server.log(), server.log()[-3000:]


# -- shutdown ---------------------------------------------------------------------------------------

SHUTDOWN_CONFIG = """
[backends.slow]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:slow"

[[routes]]
prefix = "/slow"
backend = "slow"
auth = "none"
"""
MARGIN = 1.5


@dataclass
class Shutdown:
    response: object  # httpx.Response, or the exception the client got
    answered_after: float  # seconds from SIGTERM
    exited_after: float
    returncode: int
    log: str


def _shut_down_during(tmp_path, graceful: int, sleep: float, slow_head: bool = False) -> Shutdown:
    """Start `stackgate run --graceful-timeout`, send SIGTERM while /slow sleeps ``sleep`` seconds."""
    config = tmp_path / "config.toml"
    config.write_text(SHUTDOWN_CONFIG)
    port = free_port()
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config), "--port", str(port), "--graceful-timeout", str(graceful)],
            cwd=ROOT,
            env=_env(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            try:
                if httpx.get(url + "/_stackgate/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        outcome: dict = {}

        def slow_request() -> None:
            try:
                outcome["response"] = httpx.get(f"{url}/slow/x?s={sleep}", timeout=sleep + 10)
            except httpx.HTTPError as exc:
                outcome["response"] = exc
            outcome["at"] = time.monotonic()

        client = threading.Thread(target=slow_request)
        client.start()
        head = socket.create_connection(("127.0.0.1", port)) if slow_head else None
        if head is not None:
            head.sendall(b"GET /slow/x HTTP/1.1\r\nHost: x\r\n")  # never finished
        time.sleep(0.5)
        signalled = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(graceful + 10)
        finally:
            exited = time.monotonic()
            client.join(10)
            if head is not None:
                head.close()
        return Shutdown(outcome["response"], outcome["at"] - signalled, exited - signalled, proc.returncode, log_path.read_text())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_shutdown_finishes_a_request_in_flight(tmp_path):
    result = _shut_down_during(tmp_path, graceful=5, sleep=2, slow_head=True)
    assert isinstance(result.response, httpx.Response), result.response
    assert result.response.status_code == 200 and result.response.json() == {"slept": 2.0}
    # done when the request is, neither waiting for the unfinished head nor for the whole graceful timeout
    assert result.exited_after <= result.answered_after + MARGIN, result
    assert result.exited_after <= 5 + MARGIN


@pytest.fixture(scope="module")
def shutdown_past_the_bound(tmp_path_factory):
    return _shut_down_during(tmp_path_factory.mktemp("shutdown"), graceful=1, sleep=10)


def test_shutdown_is_bounded_by_the_graceful_timeout(shutdown_past_the_bound):
    result = shutdown_past_the_bound
    assert result.exited_after <= 1 + MARGIN, f"exited {result.exited_after:.2f} s after SIGTERM"
    assert result.answered_after <= 1 + MARGIN


def test_a_request_cut_by_shutdown_gets_the_json_shape(shutdown_past_the_bound):
    response = shutdown_past_the_bound.response
    assert isinstance(response, httpx.Response), response
    assert response.headers["content-type"] == "application/json", (response.status_code, response.text)
    assert "Traceback" not in response.text
    assert response.status_code == 503 and response.json()["error"]["code"] == "shutting_down"
    assert response.headers["retry-after"] == "1"
