"""Adversarial requests against the in-process gateway, table-driven.

Every case ends one of two ways, and the tests check which:

- refused: a 4xx in the one JSON error shape, no traceback, and the recorder
  (the backend) saw nothing;
- served: the backend got exactly the path the gateway routed on
  (``SCRIPT_NAME + PATH_INFO`` is the path decoded once), and none of the
  headers only the gateway may set.

Scopes are built by hand, as a server would build them: httpx would normalise
the very paths under test. What the HTTP parser decides (bytes a request line
cannot carry, framing, slow clients) is tested on the wire in
``tests/e2e/test_adversarial_wire.py``.
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import pytest

from gateway.app import create_app
from gateway.edge import settings as server_settings
from gateway.config import parse_config
from gateway.paths import canonical_path
from tests.adversarial_cases import BYTE_CASE_IDS, BYTE_CASES
from tests.fixtures import wsgi_apps

LIMIT = 64 * 1024

CONFIG = """
[gateway]
max_body_size = "64KiB"

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
threads = 1
buffer_size = "16KiB"

[[routes]]
prefix = "/v1"
backend = "rec"
auth = "none"

[[routes]]
prefix = "/hosted"
backend = "rec"
auth = "none"
hosts = ["api.example.com"]
"""

#: WSGI keys only the gateway may fill (docs/security.md, Headers).
GATEWAY_ONLY = {
    "HTTP_X_REMOTE_USER",
    "HTTP_REMOTE_USER",
    "HTTP_X_CONSUMER_ID",
    "HTTP_X_CONSUMER_ROLES",
    "HTTP_X_AUTH_SCHEME",
    "HTTP_X_FORWARDED_USER",
    "HTTP_X_AUTHENTICATED_USER",
    "HTTP_X_FORWARDED_PREFIX",
    "HTTP_X_API_VERSION",
    "HTTP_X_STACKGATE_BACKEND",
    "HTTP_X_HTTP_METHOD_OVERRIDE",
    "HTTP_X_HTTP_METHOD",
    "HTTP_X_METHOD_OVERRIDE",
}


@pytest.fixture(scope="module")
def app():
    """One gateway for the module (tests/conftest.py clears the recorder before each test)."""
    return create_app(parse_config(CONFIG.encode(), "adversarial.toml"))


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    reads: int  # receive() calls the gateway made

    def json(self) -> dict:
        return json.loads(self.body)


async def call(
    app, raw_path: bytes, method: str = "GET", headers=(), body=(b"",), query: bytes = b"", stall: bool = False
) -> Answer:
    """One request through the gateway; ``body`` is the chunks the server delivers (then, with ``stall``, nothing)."""
    chunks = list(body)
    reads = 0

    async def receive():
        nonlocal reads
        reads += 1
        if reads <= len(chunks):
            return {"type": "http.request", "body": chunks[reads - 1], "more_body": stall or reads < len(chunks)}
        await asyncio.sleep(3600)  # nothing more will come

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": _with_host([(n.lower(), v) for n, v in headers]),
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 8000),
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    start = sent[0]
    return Answer(start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:]), reads)


def _with_host(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An HTTP/1.1 request carries a Host (the gateway refuses one without): ``testserver`` unless the case gives its own."""
    return headers if any(name == b"host" for name, _ in headers) else [(b"host", b"testserver"), *headers]


def assert_refused(answer: Answer, status: int, code: str) -> dict:
    assert answer.status == status, answer.body
    assert answer.headers[b"content-type"] == b"application/json"
    document = answer.json()
    assert list(document) == ["error"]
    error = document["error"]
    assert {"status", "code", "message", "request_id"} <= set(error)
    assert (error["status"], error["code"]) == (status, code)
    assert error["message"]
    assert error["request_id"] == answer.headers[b"x-request-id"].decode()
    assert b"Traceback" not in answer.body and b'File "' not in answer.body
    assert wsgi_apps.RECORDED == [], "a refused request reached the backend"
    return error


def assert_served(answer: Answer, raw_path: bytes) -> dict:
    """Served: the backend saw the path decoded exactly once, and what the gateway routed on."""
    assert answer.status == 200, answer.body
    assert len(wsgi_apps.RECORDED) == 1
    seen = wsgi_apps.RECORDED[0]
    backend_path = (seen["script_name"] + seen["path_info"]).encode("latin-1").decode("utf-8")  # PEP 3333
    assert backend_path == unquote_to_bytes(raw_path).decode("utf-8")
    assert backend_path == canonical_path(raw_path)
    assert not ambiguous(backend_path), f"served an ambiguous path {backend_path!r}"
    assert not GATEWAY_ONLY & set(seen["headers"]), seen["headers"]
    assert seen["remote_user"] is None
    return seen


def ambiguous(path: str) -> bool:
    """An independent statement of what docs/security.md promises never reaches a backend."""
    segments = path.split("/")[1:]
    return (
        not path.startswith("/")
        or any(s in (".", "..") for s in segments)
        or "" in segments[:-1]
        or any(ch in path for ch in "\\;#?%")
        or any(unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs") for ch in path)
    )


# -- every byte, raw and percent-encoded, inside a segment ----------------------------------------



@pytest.mark.parametrize("form, byte, raw", BYTE_CASES, ids=BYTE_CASE_IDS)
async def test_every_byte_in_a_segment(app, form, byte, raw):
    answer = await call(app, raw)
    if answer.status == 200:
        assert_served(answer, raw)
    else:
        assert_refused(answer, 400, "bad_path")


# -- path tricks ------------------------------------------------------------------------------------

REFUSED_PATHS = [
    ("dot-dot", b"/v1/../v1/x"),
    ("dot", b"/v1/./x"),
    ("dot-dot at the end", b"/v1/x/.."),
    ("dot-dot escaping the prefix", b"/v1/../admin"),
    ("encoded dot-dot", b"/v1/%2e%2e/x"),
    ("encoded dot-dot upper", b"/v1/%2E%2E/x"),
    ("encoded dot", b"/v1/%2e/x"),
    ("mixed dot-dot", b"/v1/.%2e/x"),
    ("mixed dot-dot 2", b"/v1/%2E./x"),
    ("encoded dot-dot at the end", b"/v1/x/%2e%2e"),
    ("double-encoded dot-dot", b"/v1/%252e%252e/x"),
    ("double-encoded slash", b"/v1/a%252fb"),
    ("triple-encoded dot", b"/v1/%25252e/x"),
    ("dot-dot with encoded slash", b"/v1/..%2fadmin"),
    ("encoded slash", b"/v1/a%2Fb"),
    ("encoded slash lower", b"/v1/a%2fb"),
    ("encoded backslash", b"/v1/a%5Cb"),
    ("encoded backslash lower", b"/v1/a%5cb"),
    ("raw backslash", b"/v1/a\\b"),
    ("backslash dot-dot", b"/v1/..\\admin"),
    ("double slash", b"/v1//x"),
    ("leading double slash", b"//v1/x"),
    ("double slash at the end", b"/v1/x//"),
    ("semicolon", b"/v1/x;a=b"),
    ("semicolon on the prefix", b"/v1;a=b/x"),
    ("encoded semicolon", b"/v1/x%3Bb"),
    ("encoded semicolon lower", b"/v1/x%3bb"),
    ("encoded hash", b"/v1/x%23y"),
    ("encoded question mark", b"/v1/x%3Fy"),
    ("encoded question mark lower", b"/v1/x%3fy"),
    ("encoded percent", b"/v1/x%25y"),
    ("overlong dot-dot", b"/v1/%C0%AE%C0%AE/x"),
    ("overlong dot-dot lower", b"/v1/%c0%ae%c0%ae/x"),
    ("overlong slash", b"/v1/%C0%AFx"),
    ("overlong backslash", b"/v1/%C1%9Cx"),
    ("overlong three-byte dot", b"/v1/%E0%80%AE%E0%80%AE/x"),
    ("overlong four-byte slash", b"/v1/%F0%80%80%AF"),
    ("lone continuation byte", b"/v1/%80"),
    ("invalid start byte", b"/v1/%FF"),
    ("truncated sequence", b"/v1/%E2%82"),
    ("surrogate", b"/v1/%ED%A0%80"),
    ("beyond U+10FFFF", b"/v1/%F4%90%80%80"),
    ("raw invalid UTF-8", b"/v1/\xc0\xae\xc0\xae/x"),
    ("NUL", b"/v1/a%00b"),
    ("NUL at the end", b"/v1/x%00"),
    ("raw NUL", b"/v1/x\x00"),
    ("trailing newline", b"/v1/x%0a"),
    ("trailing newline upper", b"/v1/x%0A"),
    ("trailing CRLF", b"/v1/x%0d%0a"),
    ("raw trailing newline", b"/v1/x\n"),
    ("tab", b"/v1/x%09"),
    ("DEL", b"/v1/x%7F"),
    ("C1 NEL", b"/v1/x%C2%85"),
    ("line separator", b"/v1/x%E2%80%A8"),
    ("paragraph separator", b"/v1/x%E2%80%A9"),
    ("malformed escape", b"/v1/%zz"),
    ("short escape", b"/v1/a%4"),
    ("percent at the end", b"/v1/a%"),
    ("raw hash", b"/v1/x#y"),
    ("raw question mark in the path", b"/v1/x?y"),
    ("absolute form", b"http://evil.example/v1/x"),
    ("asterisk form", b"*"),
    ("authority form", b"evil.example:443"),
    ("empty target", b""),
    ("no leading slash", b"v1/x"),
]


@pytest.mark.parametrize("raw", [r for _, r in REFUSED_PATHS], ids=[i for i, _ in REFUSED_PATHS])
async def test_path_refused(app, raw):
    assert_refused(await call(app, raw), 400, "bad_path")


SERVED_PATHS = [
    ("plain", b"/v1/x"),
    ("prefix alone", b"/v1"),
    ("trailing slash kept", b"/v1/x/"),
    ("escaped space", b"/v1/a%20b"),
    ("escaped plus", b"/v1/a%2Bb"),
    ("escaped prefix letter", b"/%761/x"),
    ("dots inside a segment", b"/v1/..x/x../.x."),
    ("encoded dots inside a segment", b"/v1/%2e%2ex"),
    ("utf-8 escaped", b"/v1/caf%C3%A9"),
    ("utf-8 raw", "/v1/caf\u00e9".encode()),
    ("four-byte utf-8", b"/v1/%F0%9F%98%80"),
    ("sub-delims", b"/v1/!$&'()*+,=:@~"),
]


@pytest.mark.parametrize("raw", [r for _, r in SERVED_PATHS], ids=[i for i, _ in SERVED_PATHS])
async def test_path_served_as_decoded_once(app, raw):
    assert_served(await call(app, raw), raw)


@pytest.mark.parametrize("raw", [b"/V1/x", b"/v1X/x", b"/v1admin", b"/%561/x", b"/V%31/x", b"/v12/x"])
async def test_case_and_near_prefixes_do_not_reach_the_route(app, raw):
    assert_refused(await call(app, raw), 404, "route_not_found")


async def test_query_string_does_not_change_the_path(app):
    answer = await call(app, b"/v1/x", query=b"a=%2e%2e/%2F..&b=%00")
    seen = assert_served(answer, b"/v1/x")
    assert seen["query"] == "a=%2e%2e/%2F..&b=%00"  # passed on as sent: the backend decodes its own query


# -- methods ----------------------------------------------------------------------------------------

BAD_METHODS = ["get", "Get", "gEt", "post", "G ET", "GET ", " GET", "GET\r", "GET\n", "GE\x00T", "G(T", "G/T", "", "GET;", "GÉT"]


@pytest.mark.parametrize("method", BAD_METHODS, ids=[repr(m) for m in BAD_METHODS])
async def test_method_must_be_an_upper_case_token(app, method):
    assert_refused(await call(app, b"/v1/x", method=method), 400, "bad_method")


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PROPFIND", "M-SEARCH"])
async def test_upper_case_token_methods_pass_unchanged(app, method):
    answer = await call(app, b"/v1/x", method=method)
    assert assert_served(answer, b"/v1/x")["method"] == method


# -- headers only the gateway sets, in every spelling ------------------------------------------------

_OWNED = [
    "X-Remote-User",
    "Remote-User",
    "X-Consumer-Id",
    "X-Consumer-Roles",
    "X-Auth-Scheme",
    "X-Forwarded-User",
    "X-Authenticated-User",
    "X-Forwarded-Prefix",
    "X-API-Version",
    "X-Stackgate-Backend",
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
]


def _spellings(name: str) -> list[str]:
    return sorted(
        {
            name,
            name.upper(),
            name.lower(),
            name.replace("-", "_"),
            name.upper().replace("-", "_"),
            name.lower().replace("-", "_"),
            name.replace("-", "_", 1),
            name.swapcase(),
        }
    )


FORGED = [(spelling, base) for base in _OWNED for spelling in _spellings(base)]


@pytest.mark.parametrize("name", [s for s, _ in FORGED], ids=[s for s, _ in FORGED])
async def test_gateway_owned_header_is_stripped(app, name):
    value = b"DELETE" if "METHOD" in name.upper() else b"mallory"
    answer = await call(app, b"/v1/x", method="GET", headers=[(name.encode(), value), (b"x-keep", b"yes")])
    seen = assert_served(answer, b"/v1/x")
    assert seen["method"] == "GET"
    assert seen["headers"]["HTTP_X_KEEP"] == "yes"
    assert "mallory" not in json.dumps(seen) and "DELETE" not in json.dumps(seen)


async def test_all_forgeries_at_once(app):
    headers = [(spelling.encode(), b"mallory") for spelling, _ in FORGED]
    seen = assert_served(await call(app, b"/v1/x", method="POST", headers=headers), b"/v1/x")
    assert seen["method"] == "POST"
    assert "mallory" not in json.dumps(seen)


async def test_two_host_headers_are_refused(app):
    """Under any ASGI server: a backend would see both copies joined (a2wsgi), so the gateway routes on neither."""
    answer = await call(app, b"/hosted/x", headers=[(b"host", b"api.example.com"), (b"host", b"admin.example.com")])
    assert_refused(answer, 400, "bad_request")


# -- bodies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [b"abc", b"-1", b"+5", b"5 ", b" 5", b"0x10", b"1e3", b"5,5", b"", "\uff15".encode()])
async def test_content_length_that_is_not_a_number(app, declared):
    answer = await call(app, b"/v1/x", method="POST", headers=[(b"content-length", declared)], body=[b"12345"])
    assert_refused(answer, 400, "bad_request")


@pytest.mark.parametrize("declared", [LIMIT + 1, 10**12, 10**40])
async def test_declared_body_over_the_limit_is_refused_before_reading(app, declared):
    answer = await call(app, b"/v1/x", method="POST", headers=[(b"content-length", str(declared).encode())], body=[b"x" * 100])
    assert_refused(answer, 413, "body_too_large")
    assert answer.reads == 0, "the gateway read a body it had already refused"


async def test_chunked_body_over_the_limit_is_refused_as_it_arrives(app):
    chunks = [b"c" * 8192] * 64  # 512 KiB offered, 64 KiB allowed
    answer = await call(app, b"/v1/x", method="POST", headers=[(b"transfer-encoding", b"chunked")], body=chunks)
    assert_refused(answer, 413, "body_too_large")
    assert answer.reads == LIMIT // 8192 + 1, "the gateway kept reading past the limit"


async def test_body_at_the_limit_is_served_whole(app):
    chunks = [b"c" * 8192] * (LIMIT // 8192)
    answer = await call(app, b"/v1/x", method="POST", headers=[(b"transfer-encoding", b"chunked")], body=chunks)
    seen = assert_served(answer, b"/v1/x")
    assert (seen["body_len"], seen["content_length"]) == (LIMIT, str(LIMIT))


async def test_content_length_and_transfer_encoding_reach_the_backend_unambiguous(app):
    """The server frames the body; whatever the headers claimed, the backend gets one length: the bytes read."""
    answer = await call(
        app,
        b"/v1/x",
        method="POST",
        headers=[(b"content-length", b"3"), (b"transfer-encoding", b"chunked")],
        body=[b"abc", b"defgh"],
    )
    seen = assert_served(answer, b"/v1/x")
    assert (seen["body_len"], seen["content_length"]) == (8, "8")


async def test_stalled_body_is_a_408_and_holds_no_thread(app, monkeypatch):
    monkeypatch.setattr(server_settings, "current", lambda: server_settings.ServerSettings(body_timeout=0.2))
    backend = app.backends["rec"]
    task = asyncio.ensure_future(
        call(app, b"/v1/x", method="POST", headers=[(b"content-length", b"100")], body=[b"0123456789"], stall=True)
    )
    await asyncio.sleep(0.1)
    assert backend.busy == 0, "a stalled body holds a backend thread"
    answer = await task
    assert_refused(answer, 408, "request_timeout")
    assert answer.headers[b"connection"] == b"close"
