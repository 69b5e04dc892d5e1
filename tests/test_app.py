"""The gateway's request path in process: route, canonical path, headers, errors."""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures import wsgi_apps

CONFIG = """
[gateway]
max_body_size = "64KiB"

[auth]
default = "none"

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
threads = 4
buffer_size = "16KiB"

[backends.fail]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:fail"

[backends.nostart]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:no_start"

[backends.slow]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:slow"
timeout = 0.3

[backends.blocked]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:blocked"
threads = 1
queue = 0

[versions.v1]
deprecated = 2026-01-01
sunset = 2027-06-30T12:00:00Z
successor = "v2"
link = "https://example.com/v1-retirement"

[versions.v2]

[[routes]]
prefix = "/v1"
backend = "rec"
version = "v1"

[[routes]]
prefix = "/v2"
backend = "rec"
version = "v2"

[[routes]]
prefix = "/whole"
backend = "rec"
strip_prefix = false

[[routes]]
prefix = "/readonly"
backend = "rec"
methods = ["GET"]

[[routes]]
prefix = "/fail"
backend = "fail"

[[routes]]
prefix = "/nostart"
backend = "nostart"

[[routes]]
prefix = "/slow"
backend = "slow"

[[routes]]
prefix = "/blocked"
backend = "blocked"
"""


@pytest.fixture
def client(gateway_client):
    return gateway_client(CONFIG)


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == status
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


async def test_script_name_and_path_info(client):
    response = await client.get("/v1/todos/7?x=1")
    seen = response.json()
    assert (seen["script_name"], seen["path_info"], seen["query"]) == ("/v1", "/todos/7", "x=1")
    assert seen["headers"]["HTTP_X_API_VERSION"] == "v1"


async def test_prefix_kept_when_not_stripped(client):
    seen = (await client.get("/whole/a")).json()
    assert (seen["script_name"], seen["path_info"]) == ("", "/whole/a")


async def test_prefix_is_a_whole_segment(client):
    response = await client.get("/v1admin")
    assert_error(response, 404, "route_not_found")
    assert wsgi_apps.RECORDED == []


async def test_unknown_route(client):
    error = assert_error(await client.get("/nope"), 404, "route_not_found")
    assert error["message"] == "No route for GET /nope."


async def test_method_not_allowed(client):
    response = await client.post("/readonly/x")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"
    assert wsgi_apps.RECORDED == []


@pytest.mark.parametrize("path", ["/v1/%2e%2e/v2/todos", "/v1/todos%2F1", "/v1//todos", "/v1/a;b", "/v1/%00"])
async def test_bad_paths_are_refused_before_the_backend(client, path):
    assert_error(await client.get(path), 400, "bad_path")
    assert wsgi_apps.RECORDED == []


async def test_lowercase_method_refused(client):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "get", "path": "/v1/x", "raw_path": b"/v1/x", "query_string": b"",
             "headers": [], "http_version": "1.1", "scheme": "http", "root_path": "", "client": ("1.2.3.4", 1), "server": ("s", 80)}
    await client.gateway(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b'"code":"bad_method"' in sent[1]["body"]
    assert wsgi_apps.RECORDED == []


async def test_identity_headers_stripped_in_every_spelling(client):
    response = await client.get(
        "/v1/x",
        headers=[
            ("X-Remote-User", "mallory"),
            ("X_Remote_User", "mallory"),
            ("Remote-User", "mallory"),
            ("X-Consumer-Id", "mallory"),
            ("x_consumer_id", "mallory"),
            ("X-Consumer-Roles", "admin"),
            ("X-Auth-Scheme", "forged"),
            ("X-API-Version", "v9"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("X-Keep", "yes"),
        ],
    )
    seen = response.json()
    assert seen["remote_user"] is None
    headers = seen["headers"]
    assert headers["HTTP_X_KEEP"] == "yes"
    assert headers["HTTP_X_API_VERSION"] == "v1"
    for key in ("HTTP_X_REMOTE_USER", "HTTP_REMOTE_USER", "HTTP_X_CONSUMER_ID", "HTTP_X_CONSUMER_ROLES", "HTTP_X_AUTH_SCHEME", "HTTP_X_HTTP_METHOD_OVERRIDE"):
        assert key not in headers


async def test_request_id_passed_through_and_returned(client):
    response = await client.get("/v1/x", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["headers"]["HTTP_X_REQUEST_ID"] == "abc-123"


@pytest.mark.parametrize("given", ["", "has space", "x" * 200, "evil\u00e9"])
async def test_malformed_request_id_is_replaced(client, given):
    response = await client.get("/v1/x", headers={"X-Request-ID": given.encode("utf-8")})
    rid = response.headers["x-request-id"]
    assert rid != given and len(rid) == 32
    assert response.json()["headers"]["HTTP_X_REQUEST_ID"] == rid


async def test_deprecated_version_headers(client):
    response = await client.get("/v1/x")
    assert response.headers["deprecation"] == "@1767225600"
    assert response.headers["sunset"] == "Wed, 30 Jun 2027 12:00:00 GMT"
    assert response.headers["link"] == '</v2>; rel="successor-version", <https://example.com/v1-retirement>; rel="deprecation"; type="text/html"'
    fresh = await client.get("/v2/x")
    assert "deprecation" not in fresh.headers and "sunset" not in fresh.headers


async def test_chunked_body_arrives_with_content_length(client):
    async def chunks():
        for _ in range(4):
            yield b"a" * 1000

    seen = (await client.post("/v1/x", content=chunks())).json()
    assert seen["body_len"] == 4000
    assert seen["content_length"] == "4000"


async def test_declared_body_over_limit(client):
    response = await client.post("/v1/x", content=b"a" * (64 * 1024 + 1))
    assert_error(response, 413, "body_too_large")
    assert wsgi_apps.RECORDED == []


async def test_chunked_body_over_limit(client):
    async def chunks():
        for _ in range(100):
            yield b"a" * 1024

    assert_error(await client.post("/v1/x", content=chunks()), 413, "body_too_large")
    assert wsgi_apps.RECORDED == []


async def test_backend_exception_is_a_502_without_traceback(client, caplog):
    response = await client.get("/fail/x")
    error = assert_error(response, 502, "backend_error")
    assert "boom" not in response.text and "Traceback" not in response.text
    assert any("boom" in (r.exc_text or "") or (r.exc_info and "boom" in str(r.exc_info[1])) for r in caplog.records)
    assert error["request_id"]


async def test_app_without_start_response_is_a_502(client):
    assert_error(await client.get("/nostart/x"), 502, "backend_error")


async def test_timeout_is_a_504(client):
    response = await client.get("/slow/x?s=2")
    error = assert_error(response, 504, "backend_timeout")
    assert "0.3 seconds" in error["message"]


async def test_full_pool_is_a_503_with_retry_after(client):
    wsgi_apps.RELEASE.clear()
    first = asyncio.ensure_future(client.get("/blocked/a"))
    await asyncio.sleep(0.2)
    response = await client.get("/blocked/b")
    assert_error(response, 503, "backend_busy")
    assert response.headers["retry-after"] == "1"
    wsgi_apps.RELEASE.set()
    assert (await first).status_code == 200


async def test_a_request_that_times_out_waiting_for_a_thread_never_runs(gateway_client):
    client = gateway_client(
        """
[backends.one]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:counted"
threads = 1
timeout = 0.3

[[routes]]
prefix = "/one"
backend = "one"
auth = "none"
"""
    )
    wsgi_apps.RELEASE.clear()
    wsgi_apps.STARTED.clear()
    try:
        first, second = await asyncio.gather(client.get("/one/first"), client.get("/one/second"))
        assert_error(first, 504, "backend_timeout")  # ran, but too long
        assert_error(second, 504, "backend_timeout")  # waited for the one thread, too long
        assert wsgi_apps.STARTED == ["/first"]
    finally:
        wsgi_apps.RELEASE.set()
    third = await client.get("/one/third")
    assert third.status_code == 200
    assert wsgi_apps.STARTED == ["/first", "/third"]  # the withdrawn one never ran
    assert client.gateway.backends["one"].busy == 0


async def test_health(client):
    response = await client.get("/_stackgate/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_unknown_admin_endpoint(client):
    assert_error(await client.get("/_stackgate/nope"), 404, "not_found")


async def lifespan(app, *messages: str) -> list[dict]:
    """Drive the ASGI lifespan protocol through ``messages``; what the app sent back."""
    inbox: asyncio.Queue = asyncio.Queue()
    for message in messages:
        inbox.put_nowait({"type": message})
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    return sent


async def test_a_server_process_freezes_what_startup_loaded():
    """Full collections skip the stacks' own objects (gateway.asgi:app sets freeze_gc)."""
    import gc

    from gateway.app import create_app
    from gateway.config import parse_config

    app = create_app(parse_config(CONFIG.encode(), "test.toml", {}), freeze_gc=True)
    before = gc.get_freeze_count()
    try:
        sent = await lifespan(app, "lifespan.startup", "lifespan.shutdown")
        assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert gc.get_freeze_count() > before + 10_000
        assert app._refreeze is not None, "it would freeze again what requests load"
        await asyncio.sleep(0)
        assert app._refreeze.cancelled(), "and stops with the worker"
    finally:
        gc.unfreeze()
    plain = create_app(parse_config(CONFIG.encode(), "test.toml", {}))
    await lifespan(plain, "lifespan.startup", "lifespan.shutdown")
    assert gc.get_freeze_count() == 0, "only a server process freezes (a test process keeps collecting)"
    assert plain._refreeze is None
