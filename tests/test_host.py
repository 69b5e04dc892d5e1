"""The Host grammar (gateway/host.py) and what the in-process gateway does with the one host it reads.

On the wire, against both real stacks: tests/e2e/test_host_wire.py.
"""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.config import ConfigError, parse_config
from gateway.host import AllowedHosts, BadHost, Host, parse, parse_name, parse_pattern
from tests.conftest import make_gateway

# -- the grammar ------------------------------------------------------------------------------------

VALID = [
    # value, scheme, normalised name, port
    ("example.com", "http", "example.com", None),
    ("Example.COM", "http", "example.com", None),
    ("example.com.", "http", "example.com", None),
    ("EXAMPLE.com.:8080", "http", "example.com", 8080),
    ("example.com:80", "http", "example.com", None),
    ("example.com:443", "https", "example.com", None),
    ("example.com:443", "http", "example.com", 443),
    ("example.com:80", "https", "example.com", 80),
    ("example.com:0080", "http", "example.com", None),
    ("example.com:65535", "http", "example.com", 65535),
    ("localhost", "http", "localhost", None),
    ("a-b.c-d.example", "http", "a-b.c-d.example", None),
    ("xn--bcher-kva.example", "http", "xn--bcher-kva.example", None),
    ("XN--BCHER-KVA.example", "http", "xn--bcher-kva.example", None),
    ("127.0.0.1", "http", "127.0.0.1", None),
    ("127.0.0.1:8000", "http", "127.0.0.1", 8000),
    ("255.255.255.255", "http", "255.255.255.255", None),
    ("1.2.3.4.example", "http", "1.2.3.4.example", None),
    ("0x1.example", "http", "0x1.example", None),
    ("[::1]", "http", "[::1]", None),
    ("[::1]:8000", "http", "[::1]", 8000),
    ("[0:0:0:0:0:0:0:1]", "http", "[::1]", None),
    ("[2001:DB8::A]:443", "https", "[2001:db8::a]", None),
    ("[::ffff:127.0.0.1]", "http", "[::ffff:7f00:1]", None),
    ("a" * 63 + ".example", "http", "a" * 63 + ".example", None),
    (".".join(["a" * 61] * 4), "http", ".".join(["a" * 61] * 4), None),  # 247 characters
]

INVALID = [
    ("empty", ""),
    ("userinfo after a port", "127.0.0.1:1@evil.example"),
    ("userinfo", "user@example.com"),
    ("userinfo with a password", "user:pw@example.com"),
    ("path", "127.0.0.1:80/evil.example"),
    ("path without a port", "example.com/x"),
    ("backslash", "example.com\\x"),
    ("query", "example.com?x"),
    ("fragment", "example.com#x"),
    ("space", "exa mple.com"),
    ("tab", "example.com\tx"),
    ("comma", "example.com,evil.example"),
    ("semicolon", "example.com;x"),
    ("percent-encoded", "%65xample.com"),
    ("underscore", "a_b.example.com"),
    ("leading hyphen", "-a.example.com"),
    ("trailing hyphen", "a-.example.com"),
    ("empty label", "a..example.com"),
    ("leading dot", ".example.com"),
    ("two trailing dots", "example.com.."),
    ("only a dot", "."),
    ("label of 64", "a" * 64 + ".example"),
    ("name of 254", ".".join(["a" * 63] * 4)[:254]),
    ("non-ASCII", "bücher.example"),
    ("fullwidth dot", "example\uff0ecom"),
    ("empty port", "example.com:"),
    ("port name", "example.com:port"),
    ("port 0", "example.com:0"),
    ("port too large", "example.com:65536"),
    ("port of six digits", "example.com:000080"),
    ("signed port", "example.com:+80"),
    ("negative port", "example.com:-1"),
    ("two ports", "example.com:80:81"),
    ("port with a space", "example.com: 80"),
    ("IPv4 with a leading zero", "127.000.0.1"),
    ("IPv4 octet over 255", "1.2.3.256"),
    ("five numbers", "1.2.3.4.5"),
    ("short IPv4", "127.1"),
    ("decimal IPv4", "2130706433"),
    ("hex IPv4", "0x7f.0.0.1"),
    ("hex last label", "example.0x7f"),
    ("bracketed name", "[evil.example]"),
    ("unclosed bracket", "[::1"),
    ("empty brackets", "[]"),
    ("IPv6 without brackets", "::1"),
    ("IPv6 with a zone id", "[fe80::1%25eth0]"),
    ("IPvFuture", "[v1.fe80::a+en1]"),
    ("IPv6 too long", "[1:2:3:4:5:6:7:8:9]"),
    ("text after the brackets", "[::1]x"),
    ("bracket and userinfo", "[::1]@evil.example"),
    ("two hosts", "[::1][::2]"),
]


@pytest.mark.parametrize("value, scheme, name, port", VALID, ids=[v[0][:40] + "/" + v[1] for v in VALID])
def test_valid_hosts_are_normalised(value, scheme, name, port):
    assert parse(value.encode("utf-8"), scheme) == Host(name, port)


@pytest.mark.parametrize("value", [v for _, v in INVALID], ids=[i for i, _ in INVALID])
def test_invalid_hosts_are_refused(value):
    with pytest.raises(BadHost) as info:
        parse(value.encode("utf-8"))
    assert str(info.value).endswith(".") and str(info.value)[0].isupper()


def test_value_and_server():
    assert Host("example.com").value == "example.com"
    assert Host("example.com", 8080).value == "example.com:8080"
    assert Host("[::1]", 8000).value == "[::1]:8000"
    assert Host("example.com").server("http") == ("example.com", 80)
    assert Host("example.com").server("https") == ("example.com", 443)
    assert Host("[::1]", 8000).server("http") == ("::1", 8000)


def test_names_have_no_port():
    with pytest.raises(BadHost):
        parse_name("example.com:80")
    assert parse_name("Example.com.") == "example.com"


# -- the allow-list -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, normalised",
    [
        ("api.example.com", "api.example.com"),
        ("API.Example.com.", "api.example.com"),
        ("*.example.com", "*.example.com"),
        (".example.com", ".example.com"),
        ("127.0.0.1", "127.0.0.1"),
        ("[0::1]", "[::1]"),
    ],
)
def test_patterns_are_normalised(pattern, normalised):
    assert parse_pattern(pattern) == normalised


@pytest.mark.parametrize("pattern", ["", "*", "*.", ".", "api.example.com:443", "*.127.0.0.1", ".[::1]", "**.example.com", "*example.com", "a.*.example.com", "user@example.com"])
def test_bad_patterns(pattern):
    with pytest.raises(BadHost):
        parse_pattern(pattern)


@pytest.mark.parametrize(
    "name, allowed",
    [
        ("api.example.com", True),
        ("example.org", True),
        ("a.example.org", True),
        ("a.b.example.org", True),
        ("x.example.net", True),
        ("example.net", False),  # "*." is the subdomains only
        ("evil-example.org", False),
        ("example.org.evil.example", False),
        ("evil.example", False),
        ("xapi.example.com", False),
        ("[::1]", True),
        ("[::2]", False),
    ],
)
def test_allowed_hosts(name, allowed):
    hosts = AllowedHosts(["api.example.com", ".example.org", "*.example.net", "[::1]"])
    assert hosts.allows(name) is allowed


def test_an_empty_allow_list_allows_any_valid_host():
    assert AllowedHosts([]).allows("anything.example")


def test_config_normalises_allowed_hosts():
    config = parse_config(b'[gateway]\nallowed_hosts = ["API.example.com", "[0::1]", "*.example.org"]\n')
    assert config.gateway.allowed_hosts == ["api.example.com", "[::1]", "*.example.org"]
    assert parse_config(b"").gateway.allowed_hosts == []


def test_config_reports_every_bad_allowed_host():
    with pytest.raises(ConfigError) as info:
        parse_config(b'[gateway]\nallowed_hosts = ["ok.example", "api.example.com:443", "user@x"]\n', "c.toml")
    assert info.value.problems == [
        'c.toml: gateway.allowed_hosts: "api.example.com:443", "user@x" are not hosts such as "api.example.com", '
        '"*.example.com" (its subdomains), ".example.com" (it and its subdomains), "127.0.0.1" or "[::1]", without a port'
    ]


# -- in the gateway ----------------------------------------------------------------------------------


def where(environ, start_response):
    """WSGI: what a stack builds its links from."""
    seen = {
        "host": environ.get("HTTP_HOST"),
        "server_name": environ["SERVER_NAME"],
        "server_port": environ["SERVER_PORT"],
        "scheme": environ["wsgi.url_scheme"],
        "forwarded_host": environ.get("HTTP_X_FORWARDED_HOST"),
    }
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


CONFIG = """
[gateway]
allowed_hosts = ["localhost", "127.0.0.1", "[::1]", "api.example.com", "*.apps.example.com"]
{extra}

[auth]
default = "none"

[backends.where]
kind = "wsgi"
app = "tests.test_host:where"

[[routes]]
prefix = "/any"
backend = "where"

[[routes]]
prefix = "/local"
backend = "where"
hosts = ["127.0.0.1", "localhost"]
"""


async def request(app, path: str, headers, scheme: str = "http", client=("127.0.0.1", 5555)) -> tuple[int, dict, dict]:
    """One request with exactly ``headers`` (a list: repeated and missing Host included)."""
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in headers],
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    return sent[0]["status"], dict(sent[0]["headers"]), body


@pytest.fixture(scope="module")
def app():
    return make_gateway(CONFIG.format(extra=""))


@pytest.mark.parametrize(
    "host, scheme, expected",
    [
        (b"LocalHost.:8000", "http", ("localhost:8000", "localhost", "8000")),
        (b"localhost:80", "http", ("localhost", "localhost", "80")),
        (b"localhost:443", "https", ("localhost", "localhost", "443")),
        (b"localhost", "https", ("localhost", "localhost", "443")),
        (b"[0:0::1]:8000", "http", ("[::1]:8000", "::1", "8000")),
        (b"x.apps.example.com", "http", ("x.apps.example.com", "x.apps.example.com", "80")),
    ],
)
async def test_the_stack_gets_the_normalised_host(app, host, scheme, expected):
    status, _, seen = await request(app, "/any/x", [(b"host", host)], scheme)
    assert status == 200
    assert (seen["host"], seen["server_name"], seen["server_port"]) == expected


async def assert_error(answer, status: int, code: str) -> None:
    got, headers, body = answer
    assert (got, body["error"]["status"], body["error"]["code"]) == (status, status, code), body
    assert headers[b"content-type"] == b"application/json"
    assert body["error"]["request_id"] == headers[b"x-request-id"].decode()


@pytest.mark.parametrize("value", [v for _, v in INVALID], ids=[i for i, _ in INVALID])
async def test_an_invalid_host_is_a_400(app, value):
    await assert_error(await request(app, "/any/x", [(b"host", value.encode())]), 400, "bad_host")


async def test_a_missing_host_is_a_400(app):
    await assert_error(await request(app, "/any/x", []), 400, "bad_host")


async def test_two_hosts_are_a_400(app):
    await assert_error(await request(app, "/any/x", [(b"host", b"localhost"), (b"host", b"localhost")]), 400, "bad_request")


@pytest.mark.parametrize("host", [b"evil.example", b"apps.example.com", b"api.example.com.evil.example", b"xapi.example.com", b"127.0.0.2", b"[::2]"])
async def test_a_host_not_allowed_is_a_421(app, host):
    await assert_error(await request(app, "/any/x", [(b"host", host)]), 421, "host_not_allowed")


@pytest.mark.parametrize("host", [b"evil.example", b"bad host"])
async def test_the_gateway_endpoints_check_the_grammar_but_not_the_allow_list(app, host):
    status, _, body = await request(app, "/_stackgate/health", [(b"host", host)])
    if host == b"evil.example":
        assert status == 200 and body["status"] == "ok"
    else:
        assert (status, body["error"]["code"]) == (400, "bad_host")


@pytest.mark.parametrize(
    "host, status",
    [
        (b"127.0.0.1", 200),
        (b"LOCALHOST.", 200),
        (b"localhost:8000", 200),
        (b"api.example.com", 404),  # allowed, but not on this route
        (b"127.0.0.1:1@evil.example", 400),
        (b"127.0.0.1:80/evil.example", 400),
        (b"localhost@evil.example", 400),
        (b"evil.example#127.0.0.1", 400),
        (b"127.0.0.1.evil.example", 421),
        (b"[::1]", 404),
    ],
)
async def test_the_hosts_restriction_uses_the_one_host(app, host, status):
    got, _, body = await request(app, "/local/x", [(b"host", host)])
    assert got == status, body
    if got == 200:  # served: the stack links to a host the route names, and to nothing else
        assert parse(body["host"].encode()).name in ("127.0.0.1", "localhost")
        assert body["server_name"] in ("127.0.0.1", "localhost")


PROXY = 'trusted_proxies = ["10.0.0.0/8"]'


async def test_x_forwarded_host_counts_from_a_trusted_proxy_only():
    app = make_gateway(CONFIG.format(extra=PROXY))
    headers = [(b"host", b"10.0.0.5:8000"), (b"x-forwarded-host", b"api.example.com"), (b"x-forwarded-proto", b"https")]
    # From the proxy: its X-Forwarded-Host is the host (the Host it sent is its own business).
    status, _, seen = await request(app, "/any/x", headers, client=("10.1.2.3", 4000))
    assert status == 200
    assert (seen["host"], seen["server_name"], seen["server_port"], seen["scheme"]) == ("api.example.com", "api.example.com", "443", "https")
    assert seen["forwarded_host"] is None  # resolved, then removed, like the other proxy headers
    # From anyone else: ignored.
    headers[0] = (b"host", b"localhost")
    status, _, seen = await request(app, "/any/x", headers, client=("192.0.2.1", 4000))
    assert (status, seen["host"], seen["scheme"]) == (200, "localhost", "http")


@pytest.mark.parametrize(
    "forwarded, status, host",
    [
        (b"evil.example", 421, None),
        (b"api.example.com:1@evil.example", 400, None),
        (b"evil.example, api.example.com", 200, "api.example.com"),  # the right-most is the trusted proxy's
        (b"api.example.com, evil.example", 421, None),
    ],
)
async def test_a_trusted_x_forwarded_host_is_held_to_the_same_rules(forwarded, status, host):
    app = make_gateway(CONFIG.format(extra=PROXY))
    got, _, body = await request(app, "/any/x", [(b"host", b"localhost"), (b"x-forwarded-host", forwarded)], client=("10.1.2.3", 4000))
    assert got == status, body
    if host:
        assert body["host"] == host


async def test_the_access_log_names_the_normalised_host(app, caplog):
    caplog.set_level("INFO", logger="stackgate.access")
    await request(app, "/any/x", [(b"host", b"LOCALHOST.:8000")])
    await request(app, "/any/x", [(b"host", b"a b")])
    lines = [r for r in caplog.records if r.name == "stackgate.access"]
    hosts = [getattr(r, "host", None) for r in lines[-2:]]
    assert hosts == ["localhost:8000", None]


async def test_refused_hosts_are_counted(app):
    from gateway import metrics

    def value(code: str) -> float:
        return metrics.HOSTS_REFUSED.labels(code)._value.get()

    before = value("bad_host"), value("host_not_allowed")
    await request(app, "/any/x", [(b"host", b"a b")])
    await request(app, "/any/x", [(b"host", b"evil.example")])
    assert (value("bad_host"), value("host_not_allowed")) == (before[0] + 1, before[1] + 1)


async def test_httpx_through_the_gateway(app):
    """The path a client library takes: httpx sets Host from the URL."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://LOCALHOST:8000") as client:
        seen = (await client.get("/any/x")).json()
    assert seen["host"] == "localhost:8000"
