"""Host values on the wire: a real ``stackgate run`` in front of both stacks, raw sockets.

Each Host case goes to the Flask stack (``/v1``) and the Django stack (``/v2``).
A refused case must be the gateway's JSON error, the same on both prefixes,
and create nothing. A served case must give links (``url`` fields, ``next``,
the API root's link, ``Location``) that name the validated, normalised host
and nothing else, on both stacks. The routes ``/r1`` and ``/r2`` are narrowed
to ``hosts = ["127.0.0.1", "localhost"]``: no case may pass them and link
elsewhere.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Optional
from urllib.parse import urlsplit

import httpx
import pytest

from tests.backends.stack_cases import UNPARSED_BODIES, UNPARSED_IDS
from tests.e2e.test_adversarial_wire import Response, assert_refused, parse
from tests.services import GatewayProcess, base_env
from tests.users import USERS, consumers_toml

ALICE = USERS["alice"]
RESTRICTED_TO = ("127.0.0.1", "localhost")

CONFIG = f"""
[gateway]
allowed_hosts = ["127.0.0.1", "localhost", "[::1]", "api.example.test", "*.apps.example.test", ".xn--bcher-kva.example"]

[backends.flask]
kind = "wsgi"
app = "backends.flask_site.wsgi:app"
threads = 2

[backends.django]
kind = "wsgi"
app = "backends.django_site.wsgi:application"
threads = 2

[[routes]]
prefix = "/v1"
backend = "flask"

[[routes]]
prefix = "/v2"
backend = "django"

[[routes]]
prefix = "/r1"
backend = "flask"
hosts = ["127.0.0.1", "localhost"]

[[routes]]
prefix = "/r2"
backend = "django"
hosts = ["127.0.0.1", "localhost"]
{consumers_toml([ALICE])}
"""

#: (id, the Host header lines sent, status, then for 200 the host every link must name, else the error code).
#: ``{port}`` is the gateway's port.
CASES = [
    ("address and port", ["127.0.0.1:{port}"], 200, "127.0.0.1:{port}"),
    ("localhost", ["localhost:{port}"], 200, "localhost:{port}"),
    ("upper case", ["LocalHost:{port}"], 200, "localhost:{port}"),
    ("trailing dot", ["localhost.:{port}"], 200, "localhost:{port}"),
    ("default port", ["localhost:80"], 200, "localhost"),
    ("no port", ["localhost"], 200, "localhost"),
    ("default port with leading zeros", ["localhost:0080"], 200, "localhost"),
    ("IPv6", ["[::1]:{port}"], 200, "[::1]:{port}"),
    ("IPv6 long form", ["[0:0:0:0:0:0:0:1]"], 200, "[::1]"),
    ("IPv6 another spelling", ["[0:0::0:1]:{port}"], 200, "[::1]:{port}"),
    ("allowed name", ["api.example.test"], 200, "api.example.test"),
    ("allowed subdomain", ["Shop.Apps.Example.Test"], 200, "shop.apps.example.test"),
    ("IDNA", ["xn--bcher-kva.example"], 200, "xn--bcher-kva.example"),
    ("IDNA subdomain", ["WWW.XN--BCHER-KVA.EXAMPLE.:8443"], 200, "www.xn--bcher-kva.example:8443"),
    ("not allowed", ["evil.example"], 421, "host_not_allowed"),
    ("wildcard's base", ["apps.example.test"], 421, "host_not_allowed"),
    ("allowed name, then more", ["api.example.test.evil.example"], 421, "host_not_allowed"),
    ("allowed name as a suffix", ["evilapi.example.test"], 421, "host_not_allowed"),
    ("another loopback address", ["127.0.0.2:{port}"], 421, "host_not_allowed"),
    ("IDNA not allowed", ["xn--80ak6aa92e.com"], 421, "host_not_allowed"),
    ("userinfo after a port", ["127.0.0.1:1@evil.example"], 400, "bad_host"),
    ("userinfo", ["evil.example@127.0.0.1"], 400, "bad_host"),
    ("userinfo and password", ["a:b@localhost"], 400, "bad_host"),
    ("path", ["127.0.0.1:80/evil.example"], 400, "bad_host"),
    ("path, no port", ["localhost/evil.example"], 400, "bad_host"),
    ("backslash", ["localhost\\evil.example"], 400, "bad_host"),
    ("query", ["127.0.0.1?evil.example"], 400, "bad_host"),
    ("fragment", ["127.0.0.1#evil.example"], 400, "bad_host"),
    ("space", ["local host"], 400, "bad_host"),
    ("tab", ["localhost\tevil.example"], 400, "bad_host"),
    ("comma", ["127.0.0.1,evil.example"], 400, "bad_host"),
    ("semicolon", ["localhost;evil.example"], 400, "bad_host"),
    ("port name", ["127.0.0.1:port"], 400, "bad_host"),
    ("empty port", ["127.0.0.1:"], 400, "bad_host"),
    ("port 0", ["127.0.0.1:0"], 400, "bad_host"),
    ("port too large", ["127.0.0.1:65536"], 400, "bad_host"),
    ("signed port", ["127.0.0.1:+80"], 400, "bad_host"),
    ("two ports", ["127.0.0.1:80:81"], 400, "bad_host"),
    ("bracketed name", ["[evil.example]"], 400, "bad_host"),
    ("bracketed name and port", ["[evil.example]:80"], 400, "bad_host"),
    ("unclosed bracket", ["[::1"], 400, "bad_host"),
    ("text after brackets", ["[::1]evil.example"], 400, "bad_host"),
    ("IPv6 without brackets", ["::1"], 400, "bad_host"),
    ("IPv6 zone id", ["[fe80::1%25lo]"], 400, "bad_host"),
    ("IPvFuture", ["[v1.fe80::a+en1]"], 400, "bad_host"),
    ("short IPv4", ["127.1"], 400, "bad_host"),
    ("hex IPv4", ["0x7f.0.0.1"], 400, "bad_host"),
    ("IPv4 with leading zeros", ["127.000.000.001"], 400, "bad_host"),
    ("underscore", ["a_b.apps.example.test"], 400, "bad_host"),
    ("percent-encoded", ["%6cocalhost"], 400, "bad_host"),
    ("two trailing dots", ["localhost.."], 400, "bad_host"),
    ("non-ASCII", ["bücher.example"], 400, "bad_host"),
    ("non-ASCII lookalike", ["l\u043ecalhost"], 400, "bad_host"),  # a Cyrillic o
    ("empty", [""], 400, "bad_host"),
    ("missing", [], 400, "bad_host"),
    ("two Host headers", ["localhost", "localhost"], 400, "bad_request"),
    ("two different Host headers", ["localhost", "evil.example"], 400, "bad_request"),
]
IDS = [case[0] for case in CASES]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("host-wire")
    config = tmp / "config.toml"
    config.write_text(CONFIG)
    proc = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp))).start(timeout=90)
    proc.http = httpx.Client(base_url=proc.url, headers=ALICE.headers(), timeout=30)
    assert proc.http.post("/v1/todos", json={"title": "seed"}).status_code == 201  # lists then have a next page
    yield proc
    proc.http.close()
    proc.stop()


def host_lines(server, hosts: list[str]) -> bytes:
    return b"".join(b"Host: " + host.replace("{port}", str(server.port)).encode("utf-8") + b"\r\n" for host in hosts)


def send(server, method: str, target: bytes, lines: bytes, body: Optional[bytes] = None, version: bytes = b"1.1") -> Response:
    head = b"%s %s HTTP/%s\r\n%sX-API-Key: %s\r\nConnection: close\r\n" % (method.encode(), target, version, lines, ALICE.api_key.encode())
    if body is not None:
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    data = head + b"\r\n" + (body or b"")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    responses = parse(received)
    assert len(responses) == 1, (received, server.log()[-3000:])
    return responses[0]


def links(response: Response) -> list[str]:
    """Every absolute link in a response: ``Location`` and every string in the JSON body that is a URL."""
    found = [response.headers["location"]] if "location" in response.headers else []

    def walk(value) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and "://" in value:
            found.append(value)

    walk(json.loads(response.body))
    return found


def assert_links_name(response: Response, host: str, prefix: str) -> None:
    found = links(response)
    assert found, response.raw
    for link in found:
        parts = urlsplit(link)
        assert (parts.scheme, parts.netloc) == ("http", host), link
        assert parts.path.startswith(prefix + "/"), link


def count(server) -> int:
    return server.http.get("/v1/todos").json()["count"]


def serve(server, prefix: str, lines: bytes, host: str) -> None:
    """POST, GET the list (two pages, so ``next`` is printed) and the API root: every link names ``host``."""
    created = send(server, "POST", prefix.encode() + b"/todos", lines, b'{"title": "host check"}')
    assert created.status == 201, created.raw
    assert_links_name(created, host, prefix)
    assert created.headers["location"] == json.loads(created.body)["url"]
    listed = send(server, "GET", prefix.encode() + b"/todos?page_size=1", lines)
    assert listed.status == 200, listed.raw
    assert json.loads(listed.body)["next"] is not None
    assert_links_name(listed, host, prefix)
    root = send(server, "GET", prefix.encode() + b"/", lines)
    assert root.status == 200, root.raw
    assert json.loads(root.body) == {"todos": f"http://{host}{prefix}/todos"}


@pytest.mark.parametrize("name, hosts, status, expected", CASES, ids=IDS)
def test_host_on_both_stacks(server, name, hosts, status, expected):
    lines = host_lines(server, hosts)
    expected = expected.replace("{port}", str(server.port))
    if status == 200:
        for prefix in ("/v1", "/v2"):
            serve(server, prefix, lines, expected)
        return
    before = count(server)
    for prefix in (b"/v1", b"/v2"):
        assert_refused(send(server, "POST", prefix + b"/todos", lines, b'{"title": "refused"}'), status, expected)
        assert_refused(send(server, "GET", prefix + b"/todos", lines), status, expected)
    assert count(server) == before, "a refused request reached a stack"


@pytest.mark.parametrize("name, hosts, status, expected", CASES, ids=IDS)
def test_hosts_restriction(server, name, hosts, status, expected):
    """``hosts = ["127.0.0.1", "localhost"]``: served only for those names, and then linking only to them."""
    lines = host_lines(server, hosts)
    expected = expected.replace("{port}", str(server.port))
    for prefix in ("/r1", "/r2"):
        response = send(server, "GET", prefix.encode() + b"/todos?page_size=1", lines)
        if status != 200:
            assert_refused(response, status, expected)
        elif urlsplit("//" + expected).hostname not in RESTRICTED_TO:
            assert_refused(response, 404, "route_not_found")
        else:
            assert response.status == 200, response.raw
            for link in links(response):
                assert urlsplit(link).netloc == expected and urlsplit(link).hostname in RESTRICTED_TO, link


@pytest.mark.parametrize(
    "target, host",
    [
        (b"http://evil.example/v1/todos", b"127.0.0.1:{port}"),  # the target disagrees with Host
        (b"http://127.0.0.1:{port}/v1/todos", b"evil.example"),
        (b"http://127.0.0.1:{port}/v2/todos", b"localhost:{port}"),
        (b"https://localhost/v2/todos", b"localhost"),
        (b"http://127.0.0.1:{port}/v1/todos", b"127.0.0.1:{port}"),  # even agreeing: origin form only
        (b"http://127.0.0.1:1@evil.example/v1/todos", b"127.0.0.1"),
        (b"//evil.example/v1/todos", b"127.0.0.1"),
    ],
)
def test_absolute_form_targets_are_refused(server, target, host):
    port = str(server.port).encode()
    response = send(server, "GET", target.replace(b"{port}", port), b"Host: " + host.replace(b"{port}", port) + b"\r\n")
    assert_refused(response, 400, "bad_path")


def test_http_1_0_needs_a_host_too(server):
    assert_refused(send(server, "GET", b"/v1/todos", b"", version=b"1.0"), 400, "bad_host")
    response = send(server, "GET", b"/v2/", b"Host: LOCALHOST.:80\r\n", version=b"1.0")
    assert json.loads(response.body) == {"todos": "http://localhost/v2/todos"}


@pytest.mark.parametrize(
    "header",
    [b"X-Forwarded-Host: evil.example", b"Forwarded: host=evil.example", b"X-Forwarded-Host: 127.0.0.1:1@evil.example", b"X-Forwarded-Port: 1"],
)
def test_proxy_headers_from_an_untrusted_peer_change_no_link(server, header):
    lines = b"Host: localhost:%d\r\n%s\r\n" % (server.port, header)
    for prefix in ("/v1", "/v2"):
        serve(server, prefix, lines, f"localhost:{server.port}")


def test_the_access_log_names_the_validated_host(server):
    request_id = b"host-log-check-1"
    send(server, "GET", b"/v2/", b"Host: LOCALHOST.:80\r\nX-Request-ID: " + request_id + b"\r\n")

    def logged() -> Optional[dict]:
        for line in server.log().splitlines():
            if request_id.decode() in line and line.startswith("{"):
                return json.loads(line)
        return None

    deadline = time.monotonic() + 30  # access lines are written in batches, by a thread
    while (line := logged()) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert line is not None, server.log()[-3000:]
    assert (line["host"], line["path"], line["status"]) == ("localhost", "/v2/", 200)


@pytest.mark.parametrize("body", [b for _, b in UNPARSED_BODIES], ids=UNPARSED_IDS)
def test_bodies_that_do_not_parse_are_400_on_both_stacks(server, body):
    before = count(server)
    for prefix in (b"/v1", b"/v2"):
        response = send(server, "POST", prefix + b"/todos", b"Host: localhost\r\n", body)
        assert_refused(response, 400, "parse_error")
    assert count(server) == before
