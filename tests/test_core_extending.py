"""The gateway as a Starlette app: user middleware, user routes, mounted apps, the request context."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, Router

from gateway.app import create_app
from gateway.config import parse_config
from gateway.context import SCOPE_KEY, RequestContext, context
from gateway.errors import GatewayError
from gateway.policies import PolicyError, with_policies
from tests.conftest import BASE_TEST_CONFIG

KEY = "core-extending-test-key"

POLICY_CONFIG = f"""
[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
threads = 2

[consumers.tester]
roles = ["user"]
api_keys = ["sha256:{hashlib.sha256(KEY.encode()).hexdigest()}"]

[[routes]]
prefix = "/v1"
backend = "rec"
auth = "none"

[[routes]]
prefix = "/reports"
name = "reports"
backend = "rec"
auth = "required"
roles = ["user"]
max_body_size = 10
"""


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 5555)), base_url="http://testserver")


def gateway(toml: str = BASE_TEST_CONFIG, **kwargs):
    return create_app(parse_config(toml.encode(), "test.toml"), **kwargs)


class SeesContext:
    """A user middleware: records the request context and tags the answer."""

    seen: list[RequestContext] = []

    def __init__(self, app, tag: str = "x") -> None:
        self.app = app
        self.tag = tag.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            ctx = context(scope)
            SeesContext.seen.append(ctx)
            ctx.response_headers.append((b"x-tag", self.tag))
            if scope["path"] == "/v1/refused":
                raise GatewayError(418, "teapot", "Refused by the user middleware.")
            if scope["path"] == "/v1/broken":
                raise ValueError("a bug in the user middleware")
        await self.app(scope, receive, send)


def test_create_app_returns_a_starlette_app():
    app = gateway()
    assert isinstance(app, Starlette)
    assert [type(r).__name__ for r in app.routes] == ["Route"]  # the config's one route, on Starlette's routing API


async def test_user_middleware_sees_the_request_id_and_its_errors_get_the_json_shape():
    SeesContext.seen.clear()
    app = gateway(middleware=[Middleware(SeesContext, tag="arg")])
    async with client_for(app) as client:
        ok = await client.get("/v1/x", headers={"X-Request-ID": "abc-123"})
        refused = await client.get("/v1/refused", headers={"X-Request-ID": "abc-124"})
        broken = await client.get("/v1/broken", headers={"X-Request-ID": "abc-125"})
    assert ok.status_code == 200 and ok.headers["x-tag"] == "arg"
    assert [ctx.request_id for ctx in SeesContext.seen] == ["abc-123", "abc-124", "abc-125"]
    assert SeesContext.seen[0].route is not None and SeesContext.seen[0].route.prefix == "/v1"
    assert refused.status_code == 418 and refused.headers["x-request-id"] == "abc-124"
    assert refused.json() == {"error": {"status": 418, "code": "teapot", "message": "Refused by the user middleware.", "request_id": "abc-124"}}
    assert broken.status_code == 502 and broken.json()["error"]["code"] == "backend_error"


async def test_config_middleware_is_imported_with_its_options():
    SeesContext.seen.clear()
    toml = BASE_TEST_CONFIG.replace(
        "[backends.rec]",
        '[gateway]\nmiddleware = [{ use = "tests.test_core_extending:SeesContext", options = { tag = "from-config" } }]\n\n[backends.rec]',
    )
    async with client_for(gateway(toml)) as client:
        response = await client.get("/v1/x")
    assert response.headers["x-tag"] == "from-config" and len(SeesContext.seen) == 1


def test_a_bad_middleware_entry_is_a_config_problem():
    toml = '[gateway]\nmiddleware = [{ use = "no colon", options = {} }]\n' + BASE_TEST_CONFIG
    with pytest.raises(Exception) as info:
        parse_config(toml.encode(), "test.toml")
    assert info.value.problems == [
        'test.toml: gateway.middleware[0].use: "no colon" must be an import string such as "package.module:Class"'
    ]


async def hello(request):
    ctx = context(request.scope)
    return JSONResponse({"hello": request.path_params["name"], "request_id": ctx.request_id})


async def teapot(request):
    raise HTTPException(418, "I am a teapot.")


async def test_a_user_route_sits_next_to_the_config_routes():
    app = gateway(routes=[Route("/hello/{name}", hello), Route("/teapot", teapot)])
    async with client_for(app) as client:
        hi = await client.get("/hello/ann", headers={"X-Request-ID": "rid-1"})
        config_route = await client.get("/v1/x")
        wrong_method = await client.post("/hello/ann")
        teapot_answer = await client.get("/teapot")
        nothing = await client.get("/nope")
    assert hi.json() == {"hello": "ann", "request_id": "rid-1"} and hi.headers["x-request-id"] == "rid-1"
    assert config_route.status_code == 200
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET, HEAD"
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert teapot_answer.status_code == 418 and teapot_answer.json()["error"]["message"] == "I am a teapot."
    assert nothing.status_code == 404 and nothing.json()["error"]["code"] == "route_not_found"


async def test_a_mounted_asgi_app_is_served_under_its_prefix():
    inner = Starlette(routes=[Route("/ping", lambda request: PlainTextResponse(f"pong {request.scope['root_path']}"))])
    app = gateway(routes=[Mount("/tools", app=inner), Mount("/bare", routes=[Route("/ping", hello_bare)])])
    async with client_for(app) as client:
        response = await client.get("/tools/ping")
        own_404 = await client.get("/tools/nope")
        missing = await client.get("/bare/nope")
    assert response.status_code == 200 and response.text == "pong /tools"
    assert response.headers["x-request-id"]
    assert own_404.status_code == 404 and own_404.text == "Not Found"  # a mounted app answers for itself
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"  # a bare Mount: the gateway's shape


async def hello_bare(request):
    return PlainTextResponse("pong")


async def test_a_user_route_passes_through_a_config_routes_policies():
    reports = Starlette(routes=[Route("/{rest:path}", lambda request: JSONResponse({"who": context(request.scope).identity}), methods=["GET", "POST"])])
    app = gateway(POLICY_CONFIG, routes=[Mount("/reports", app=with_policies(reports, route="reports"))])
    async with client_for(app) as client:
        anonymous = await client.get("/reports/q1")
        known = await client.get("/reports/q1", headers={"X-API-Key": KEY})
        too_big = await client.post("/reports/q1", headers={"X-API-Key": KEY}, content=b"x" * 11)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    assert known.status_code == 200 and known.json() == {"who": "tester"}
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "body_too_large"


def test_with_policies_names_an_existing_route():
    with pytest.raises(PolicyError, match='no \\[\\[routes\\]\\] entry named "nope"; known: "/v1", "reports"'):
        gateway(POLICY_CONFIG, routes=[Mount("/x", app=with_policies(lambda s, r, se: None, route="nope"))])


async def test_the_context_is_one_typed_object_at_one_key():
    seen: dict = {}

    class Peek:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            seen.update(scope)
            await self.app(scope, receive, send)

    async with client_for(gateway(middleware=[Middleware(Peek)])) as client:
        await client.get("/v1/x")
    assert isinstance(seen[SCOPE_KEY], RequestContext)
    assert not [key for key in seen if key.startswith("stackgate") and key != SCOPE_KEY]


async def test_a_reload_swaps_the_routes_a_new_request_sees():
    app = gateway()
    async with client_for(app) as client:
        assert (await client.get("/v2/x")).status_code == 404
        app.apply(parse_config(BASE_TEST_CONFIG.replace('prefix = "/v1"', 'prefix = "/v2"').encode(), "test.toml"))
        assert (await client.get("/v2/x")).status_code == 200
        assert (await client.get("/v1/x")).status_code == 404


async def test_starlettes_add_route_and_mount_add_user_routes():
    app = gateway()
    app.add_route("/hello/{name}", hello)
    app.mount("/bare", Router([Route("/ping", hello_bare)]))
    async with client_for(app) as client:
        assert (await client.get("/hello/bo")).json()["hello"] == "bo"
        assert (await client.get("/bare/ping")).text == "pong"
        assert (await client.get("/v1/x")).status_code == 200


class Unpaid(Exception):
    pass


async def unpaid_endpoint(request):
    raise Unpaid()


async def test_user_exception_handlers_answer_their_exceptions():
    def on_unpaid(request, exc):  # a plain function: Starlette runs it in the thread pool
        return JSONResponse({"error": {"code": "payment_required"}}, status_code=402)

    app = gateway(routes=[Route("/pay", unpaid_endpoint)], exception_handlers={Unpaid: on_unpaid})
    async with client_for(app) as client:
        response = await client.get("/pay", headers={"X-Request-ID": "pay-1"})
    assert response.status_code == 402 and response.json() == {"error": {"code": "payment_required"}}
    assert response.headers["x-request-id"] == "pay-1"
