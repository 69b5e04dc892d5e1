"""What a remote ``http`` upstream receives, and what comes back: what a proxy forwards (RFC 9110 7.6.1).

The upstream is a plain ``http.server`` on loopback that echoes the request
head exactly as it arrived on the wire (every header, every copy, and whether
the body came with ``Content-Length`` or chunked); ``/hop`` answers with
hop-by-hop headers of its own. Most cases go through the gateway in process
(``httpx.ASGITransport``); one goes through a real ``stackgate run``.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from gateway import headers as H
from gateway.config import ConfigError, parse_config
from tests.fixtures import wsgi_apps
from tests.services import GatewayProcess, base_env
from tests.users import USERS, consumers_toml

UPSTREAM_HOP = {
    "Connection": "X-Upstream-Secret",
    "X-Upstream-Secret": "s3cret",
    "Keep-Alive": "timeout=5",
    "Proxy-Connection": "keep-alive",
    "Proxy-Authenticate": 'Basic realm="upstream"',
    "Upgrade": "h2c",
    "Trailer": "X-Checksum",
}


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        framing, size = "none", 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            framing = "chunked"
            while True:
                length = int(self.rfile.readline().split(b";")[0], 16)
                size += len(self.rfile.read(length))
                self.rfile.readline()
                if length == 0:
                    break
        elif self.headers.get("Content-Length") is not None:
            framing = "content-length"
            size = len(self.rfile.read(int(self.headers["Content-Length"])))
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": [[name.lower(), value] for name, value in self.headers.items()],
            "framing": framing,
            "body_size": size,
        }
        body = json.dumps(seen).encode()
        extra = dict(UPSTREAM_HOP) if self.path.endswith("/hop") else {}
        if self.path.endswith("/gzip") and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            extra["Content-Encoding"] = "gzip"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-End-To-End", "kept")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def config(upstream_url: str, extra: str = "", backend: str = "") -> str:
    return f"""
{extra}
[backends.remote]
kind = "http"
url = "{upstream_url}"
{backend}

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[[routes]]
prefix = "/remote"
backend = "remote"

[[routes]]
prefix = "/local"
backend = "rec"
""" + consumers_toml()


def received(response: httpx.Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        out.setdefault(name, []).append(value)
    return out


ALICE = USERS["alice"].headers()

# Hop-by-hop, with the client's Connection naming one header of its own and one the gateway sets.
HOP = {
    "Connection": "keep-alive, X-Hop-Secret, X-Consumer-Id",
    "X-Hop-Secret": "only-for-the-next-hop",
    "Keep-Alive": "timeout=5",
    "Proxy-Connection": "keep-alive",
    "Proxy-Authorization": "Basic bWFsbG9yeTpwdw==",
    "TE": "trailers",
    "Trailer": "X-Checksum",
    "Upgrade": "h2c",
    "X-End-To-End": "kept",
}

# The target-rewrite family and client-address claims: none may reach any backend.
REWRITE = {
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-Original-URI": "/admin",
    "X-Envoy-Original-Path": "/admin",
    "X-Request-URI": "/admin",
    "X-Forwarded-Uri": "/admin",
    "X-Forwarded-Path": "/admin",
    "X-Forwarded-Prefix": "/admin",
    "X-Script-Name": "/admin",
    "X-Original-Prefix": "/admin",
    "X-Forwarded-Ssl": "on",
    "X-Forwarded-Scheme": "https",
    "X-Forwarded-Protocol": "ssl",
    "X-Scheme": "https",
    "X-Url-Scheme": "https",
    "Front-End-Https": "on",
    "X-ARR-SSL": "on",
    "X-Original-Proto": "https",
    "X-Original-Host": "admin.internal",
    "X-Host": "admin.internal",
    "X-Real-Host": "admin.internal",
    "X-HTTP-Host-Override": "admin.internal",
    "X-Forwarded-Server": "admin.internal",
    "X-Forwarded-Host": "admin.internal",
    "X-Forwarded-Port": "443",
    "X-Forwarded-For": "203.0.113.66",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Email": "root@example.com",
    "Forwarded": "for=203.0.113.66;proto=https;host=admin.internal",
    "X-Real-IP": "203.0.113.66",
    "X-Client-IP": "203.0.113.66",
    "True-Client-IP": "203.0.113.66",
    "X-Cluster-Client-IP": "203.0.113.66",
    "X-Original-For": "203.0.113.66",
}


async def test_hop_by_hop_headers_and_those_connection_names_stop_at_the_gateway(gateway_client, upstream):
    client = gateway_client(config(upstream))
    response = await client.get("/remote/todos", headers={**ALICE, **HOP})
    assert response.status_code == 200
    got = received(response)
    assert got.pop("connection", ["keep-alive"]) == ["keep-alive"], "only the gateway's own, for its own connection"
    for name in HOP:
        if name.lower() != "x-end-to-end":
            assert name.lower() not in got, (name, got)
    assert got["x-end-to-end"] == ["kept"]
    assert got["x-consumer-id"] == ["alice"], "a header the gateway sets survives the client naming it in Connection"
    assert got["x-forwarded-for"] == ["127.0.0.1"] and got["x-forwarded-proto"] == ["http"]


async def test_hop_by_hop_headers_of_the_upstream_stop_at_the_gateway(gateway_client, upstream):
    client = gateway_client(config(upstream))
    response = await client.get("/remote/hop", headers=ALICE)
    assert response.status_code == 200
    for name in UPSTREAM_HOP:
        assert name.lower() not in response.headers, name
    assert response.headers["x-end-to-end"] == "kept"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json()["path"] == "/hop"


@pytest.mark.parametrize("prefix", ["/remote", "/local"])
async def test_target_rewrite_headers_reach_no_backend(gateway_client, upstream, prefix):
    client = gateway_client(config(upstream))
    response = await client.get(f"{prefix}/todos", headers={**ALICE, **REWRITE, "X-Kept": "yes"})
    assert response.status_code == 200
    if prefix == "/remote":
        got = received(response)
        for name in REWRITE:
            if name.lower() not in (H.X_FORWARDED_FOR.decode(), H.X_FORWARDED_PROTO.decode(), H.X_FORWARDED_HOST.decode(), H.X_FORWARDED_PREFIX.decode()):
                assert name.lower() not in got, name
        # One of each, set by the gateway from what it resolved, never the client's copy.
        assert got["x-forwarded-for"] == ["127.0.0.1"]
        assert got["x-forwarded-proto"] == ["http"]
        assert got["x-forwarded-host"] == ["testserver"]
        assert got["x-forwarded-prefix"] == ["/remote"]
        assert got["x-kept"] == ["yes"]
        assert response.json()["path"] == "/todos"
    else:
        seen = wsgi_apps.RECORDED[-1]
        environ_names = {"HTTP_" + name.upper().replace("-", "_") for name in REWRITE}
        assert not environ_names & set(seen["headers"]), environ_names & set(seen["headers"])
        assert seen["headers"]["HTTP_X_KEPT"] == "yes"
        assert seen["path_info"] == "/todos"


@pytest.mark.parametrize("name", sorted(H.TARGET_REWRITE | H.FORWARDED))
def test_every_listed_header_is_dropped_on_every_route(name):
    for spelling in (name, name.upper(), name.replace(b"-", b"_")):
        assert H.inbound([(spelling.lower(), b"x")]) == [], spelling


def test_any_x_forwarded_header_is_dropped():
    kept = [(b"x-forwarded-anything", b"1"), (b"x-forwardedfor", b"2"), (b"accept", b"*/*")]
    assert H.inbound(kept) == [(b"x-forwardedfor", b"2"), (b"accept", b"*/*")]


async def test_a_trusted_proxys_forwarded_for_and_proto_are_resolved_then_set_by_the_gateway(gateway_client, upstream):
    trusted = config(upstream, extra='[gateway]\ntrusted_proxies = ["127.0.0.1"]')
    client = gateway_client(trusted)
    response = await client.get(
        "/remote/x",
        headers={**ALICE, "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Uri": "/admin", "X-Forwarded-Ssl": "on"},
    )
    got = received(response)
    assert got["x-forwarded-for"] == ["203.0.113.9"] and got["x-forwarded-proto"] == ["https"]
    assert "x-forwarded-uri" not in got and "x-forwarded-ssl" not in got

    untrusted = gateway_client(config(upstream), client=("198.51.100.7", 4000))
    got = received(await untrusted.get("/remote/x", headers={**ALICE, "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}))
    assert got["x-forwarded-for"] == ["198.51.100.7"] and got["x-forwarded-proto"] == ["http"]


async def test_the_clients_own_accept_encoding_and_no_other(gateway_client, upstream):
    client = gateway_client(config(upstream))
    for name in ("accept-encoding", "accept", "user-agent"):
        del client.headers[name]  # the test client's defaults
    for sent in ("identity", "br;q=1, gzip;q=0.5"):
        got = received(await client.get("/remote/x", headers={**ALICE, "Accept-Encoding": sent}))
        assert got["accept-encoding"] == [sent]
    got = received(await client.get("/remote/x", headers=ALICE))
    assert "accept-encoding" not in got, got
    assert "user-agent" not in got and "accept" not in got, "the gateway adds no header of httpx's own"


async def test_a_compressed_answer_passes_through_as_sent(gateway_client, upstream):
    client = gateway_client(config(upstream))
    response = await client.get("/remote/gzip", headers={**ALICE, "Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["path"] == "/gzip"  # httpx decoded the upstream's own gzip bytes


async def test_request_bodies_keep_their_framing(gateway_client, upstream):
    client = gateway_client(config(upstream))
    sized = (await client.post("/remote/x", headers=ALICE, content=b"x" * 70_000)).json()
    assert (sized["framing"], sized["body_size"]) == ("content-length", 70_000)
    assert [v for k, v in sized["headers"] if k == "content-length"] == ["70000"]

    async def chunks():
        for _ in range(3):
            yield b"y" * 1000

    chunked = (await client.post("/remote/x", headers=ALICE, content=chunks())).json()
    assert (chunked["framing"], chunked["body_size"]) == ("chunked", 3000)


async def test_drop_headers_adds_to_the_list(gateway_client, upstream):
    client = gateway_client(config(upstream, backend='drop_headers = ["X-Debug-Token", "cookie"]'))
    got = received(await client.get("/remote/x", headers={**ALICE, "X-Debug-Token": "1", "Cookie": "a=1", "X-Kept": "yes"}))
    assert "x-debug-token" not in got and "cookie" not in got and got["x-kept"] == ["yes"]


def test_drop_headers_must_be_header_names(upstream):
    with pytest.raises(ConfigError) as info:
        parse_config(config(upstream, backend='drop_headers = ["X-Ok", "not a header:"]').encode(), "test.toml", {})
    assert any(p.startswith("test.toml: backends.remote.drop_headers: ") and "'not a header:'" in p for p in info.value.problems), info.value.problems


def test_through_a_real_gateway_process(tmp_path, upstream):
    """On the wire: uvicorn parses the client's head, the gateway forwards it with httpx."""
    path = tmp_path / "config.toml"
    path.write_text(config(upstream))
    server = GatewayProcess(path, base_env(STACKGATE_DATA_DIR=str(tmp_path))).start()
    try:
        headers = {**ALICE, **{k: v for k, v in HOP.items() if k != "Upgrade"}, **REWRITE, "Accept-Encoding": "identity"}
        response = httpx.post(server.url + "/remote/todos", headers=headers, content=b"z" * 5000, timeout=30)
        assert response.status_code == 200, server.log()
        seen = response.json()
        got = received(response)
        assert got.pop("connection", ["keep-alive"]) == ["keep-alive"]
        leaked = [name for name in [*HOP, *REWRITE] if name.lower() in got and name.lower() not in ("x-end-to-end", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix")]
        assert leaked == [], leaked
        assert got["x-forwarded-for"] == ["127.0.0.1"] and got["x-forwarded-proto"] == ["http"]
        assert got["x-forwarded-host"] == [f"127.0.0.1:{server.port}"] and got["x-forwarded-prefix"] == ["/remote"]
        assert seen["path"] == "/todos"
        assert got["accept-encoding"] == ["identity"] and got["x-consumer-id"] == ["alice"]
        assert (seen["framing"], seen["body_size"]) == ("content-length", 5000)

        hop = httpx.get(server.url + "/remote/hop", headers=ALICE, timeout=30)
        assert hop.status_code == 200 and hop.headers["x-end-to-end"] == "kept"
        assert not [name for name in UPSTREAM_HOP if name.lower() in hop.headers and name != "Connection"], hop.headers
        assert "x-upstream-secret" not in hop.headers.get("connection", "").lower()
    finally:
        server.stop()


async def test_the_upstream_gets_the_query_as_sent_and_no_empty_one(gateway_client, upstream):
    client = gateway_client(config(upstream))
    assert (await client.get("/remote/x", headers=ALICE)).json()["path"] == "/x"
    assert (await client.get("/remote/x?a=1&b=%20", headers=ALICE)).json()["path"] == "/x?a=1&b=%20"
