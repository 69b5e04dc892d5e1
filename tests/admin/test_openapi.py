"""The merged OpenAPI document (gateway/openapi/) and its endpoints, in-process.

Most cases describe a stack with a document file (a backend's ``openapi`` key),
so the gateway's own layer is tested apart from any framework; the default
config's case generates from both demo stacks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from gateway import openapi
from gateway.config import load_config, parse_config
from tests.users import consumers_toml

ROOT = Path(__file__).resolve().parents[2]
TODOS_OPS = {"getRoot", "listTodos", "createTodo", "getTodo", "replaceTodo", "updateTodo", "deleteTodo"}

# A stack as its own document describes it: a root, a collection and an item.
STACK = {
    "openapi": "3.1.0",
    "info": {"title": "things", "version": "1"},
    "paths": {
        "/": {"get": {"operationId": "getRoot", "responses": {"200": {"description": "Root."}}}},
        "/things/": {
            "get": {"operationId": "listThings", "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}], "responses": {"200": {"description": "All.", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Thing"}}}}}}},
            "post": {"operationId": "createThing", "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}}, "responses": {"201": {"description": "Created."}}},
        },
        "/things/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "get": {"operationId": "getThing", "responses": {"200": {"description": "One.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}}, "404": {"description": "No such thing."}}},
            "delete": {"operationId": "deleteThing", "security": [{"theirs": []}], "responses": {"204": {"description": "Gone."}, "409": {"description": "Busy.", "content": {"application/json": {"schema": {"type": "object"}}}}}},
        },
    },
    "components": {
        "schemas": {"Thing": {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}},
        "securitySchemes": {"theirs": {"type": "http", "scheme": "basic"}},
    },
}
THINGS_OPS = {"getRoot", "listThings", "createThing", "getThing", "deleteThing"}

# Every scheme configured: keys (consumers_toml), a password, a JWT issuer.
ALL_SCHEMES = f"""
[auth.jwt.corp]
issuer = "corp"
algorithms = ["HS256"]
secret = "${{UNSET_JWT_SECRET:-0123456789abcdef0123456789abcdef}}"

[consumers.carol]
roles = ["user"]
password = "{PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")}"
"""


@pytest.fixture
def stack_file(tmp_path):
    path = tmp_path / "things.json"
    path.write_text(json.dumps(STACK))
    return path


def backends(stack_file: Path, b_openapi: str | None = None) -> str:
    return f"""
[backends.a]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
openapi = "{stack_file}"

[backends.b]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
openapi = "{b_openapi or stack_file}"

[versions.v1]
[versions.v2]
"""


def document(stack_file: Path, routes: str, extra: str = ALL_SCHEMES, b_openapi: str | None = None) -> dict:
    """The document of a config with these routes; valid OpenAPI 3.1 whatever the routes."""
    from openapi_spec_validator import validate

    config = parse_config((backends(stack_file, b_openapi) + extra + consumers_toml() + routes).encode(), str(stack_file.parent / "test.toml"))
    doc = openapi.build_document(config)
    validate(doc)
    return doc


def op(doc: dict, path: str, method: str = "get") -> dict:
    return doc["paths"][path][method]


def ops_of(doc: dict, prefix: str) -> set[str]:
    return {
        operation["operationId"].rsplit("_", 1)[1]
        for path, item in doc["paths"].items()
        if path.startswith(prefix)
        for name, operation in item.items()
        if name not in ("parameters", "summary", "description")
    }


def test_default_config_documents_both_stacks_and_validates():
    from openapi_spec_validator import validate

    doc = openapi.build_document(load_config(ROOT / "config.toml"))
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert "x-stackgate-problems" not in doc
    assert doc["servers"] == [{"url": "/"}]
    assert sorted(doc["paths"]) == ["/v1/", "/v1/todos", "/v1/todos/{todo_id}", "/v2/", "/v2/todos", "/v2/todos/{id}"]
    assert ops_of(doc, "/v1") == ops_of(doc, "/v2") == TODOS_OPS  # Flask and Django describe the same contract
    assert [tag["name"] for tag in doc["tags"]] == ["todos-v1", "todos-v2"]
    schemas = doc["components"]["schemas"]
    assert schemas["Error"]["properties"]["error"]["required"] == ["status", "code", "message", "request_id"]
    assert set(doc["components"]["securitySchemes"]) == {"BearerAuth", "BasicAuth", "ApiKeyAuth"}
    for prefix, body in (("/v1", "TodoInput"), ("/v2", "TodoRequest")):
        create = op(doc, f"{prefix}/todos", "post")
        assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{body}"}
        assert schemas[body]["required"] == ["title"]
        todo = "Todo" if prefix == "/v1" else "django.Todo"  # same name, each stack its own wording: renamed
        assert create["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{todo}"}
        for status in ("400", "401", "403", "405", "408", "413", "415", "421", "429", "431", "500", "502", "503", "504"):
            assert create["responses"][status] == {"$ref": f"#/components/responses/Error{status}"}
        listing = op(doc, f"{prefix}/todos")
        assert {p["name"] for p in listing["parameters"]} == {"done", "ordering", "page", "page_size"}
        assert listing["responses"]["404"] == {"$ref": "#/components/responses/Error404"}
        page = listing["responses"]["200"]["content"]["application/json"]["schema"]
        page = schemas[page["$ref"].rsplit("/", 1)[1]]
        assert set(page["properties"]) == {"count", "next", "previous", "results"}
        item = doc["paths"][f"{prefix}/todos/{{{'todo_id' if prefix == '/v1' else 'id'}}}"]
        assert {"get", "put", "patch", "delete"} <= set(item)
        assert "413" not in item["delete"]["responses"] and "404" in item["delete"]["responses"]


def test_paths_go_under_the_prefix_and_other_schemes_are_dropped(stack_file):
    doc = document(stack_file, '[[routes]]\nprefix = "/api"\nbackend = "a"\nversion = "v1"\n')
    assert sorted(doc["paths"]) == ["/api/", "/api/things", "/api/things/{id}"]  # trailing slashes dropped
    assert ops_of(doc, "/api") == THINGS_OPS
    assert doc["paths"]["/api/things/{id}"]["parameters"][0]["name"] == "id"
    assert op(doc, "/api/things/{id}", "delete")["security"] == [{"BearerAuth": []}, {"BasicAuth": []}, {"ApiKeyAuth": []}]
    assert "theirs" not in doc["components"]["securitySchemes"]
    assert op(doc, "/api/things")["tags"] == ["/api"]
    assert op(doc, "/api/things")["responses"]["200"]["content"]["application/json"]["schema"]["items"] == {"$ref": "#/components/schemas/Thing"}


def test_a_root_route_has_unprefixed_paths(stack_file):
    doc = document(stack_file, '[[routes]]\nprefix = "/"\nbackend = "a"\nversion = "v1"\n')
    assert sorted(doc["paths"]) == ["/", "/things", "/things/{id}"]


def test_stack_errors_take_the_one_shape_unless_they_declare_a_body(stack_file):
    doc = document(stack_file, '[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\n')
    assert op(doc, "/v1/things/{id}")["responses"]["404"] == {"$ref": "#/components/responses/Error404"}
    assert op(doc, "/v1/things/{id}", "delete")["responses"]["409"]["content"]["application/json"]["schema"] == {"type": "object"}
    assert "404" not in op(doc, "/v1/things")["responses"]  # the stack does not say it answers one
    error404 = doc["components"]["responses"]["Error404"]
    schema = error404["content"]["application/json"]["schema"]
    assert schema["allOf"] == [{"$ref": "#/components/schemas/Error"}]
    assert schema["properties"]["error"]["properties"]["status"] == {"const": 404}
    assert error404["headers"]["X-Request-ID"] == {"$ref": "#/components/headers/X-Request-ID"}
    assert doc["components"]["responses"]["Error401"]["headers"]["WWW-Authenticate"]
    assert doc["components"]["responses"]["Error405"]["headers"]["Allow"]


def test_a_stack_is_documented_under_its_versioned_routes_only(stack_file):
    doc = document(
        stack_file,
        """
[[routes]]
prefix = "/api"
backend = "a"
version = "v1"

[[routes]]
prefix = "/a-admin"
backend = "a"

[[routes]]
prefix = "/b1"
backend = "b"

[[routes]]
prefix = "/b2"
backend = "b"
""",
    )
    prefixes = {path.split("/")[1] for path in doc["paths"]}
    assert prefixes == {"api", "b1", "b2"}  # b has no versioned route: every route to it


def test_security_follows_each_route_s_auth_mode_and_schemes(stack_file):
    doc = document(
        stack_file,
        """
[[routes]]
prefix = "/req"
backend = "a"
version = "v1"
auth = "required"
roles = ["user"]

[[routes]]
prefix = "/opt"
backend = "a"
version = "v1"
auth = "optional"
auth_schemes = ["jwt"]

[[routes]]
prefix = "/open"
backend = "b"
version = "v2"
auth = "none"

[[routes]]
prefix = "/keys"
backend = "b"
version = "v2"
auth_schemes = ["api-key", "basic"]
""",
    )
    required = op(doc, "/req/things")
    assert required["security"] == [{"BearerAuth": []}, {"BasicAuth": []}, {"ApiKeyAuth": []}]
    assert {"401", "403"} <= set(required["responses"])
    assert required["x-stackgate-roles"] == ["user"]
    optional = op(doc, "/opt/things")
    assert optional["security"] == [{}, {"BearerAuth": []}]
    assert "401" in optional["responses"] and "403" not in optional["responses"]
    open_ = op(doc, "/open/things")
    assert open_["security"] == []
    assert "401" not in open_["responses"] and "403" not in open_["responses"]
    keys = op(doc, "/keys/things")
    assert keys["security"] == [{"BasicAuth": []}, {"ApiKeyAuth": []}]
    assert "401" in keys["responses"] and "403" not in keys["responses"]


def test_only_configured_schemes_are_declared(stack_file):
    doc = document(stack_file, '[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\n', extra="")
    assert set(doc["components"]["securitySchemes"]) == {"ApiKeyAuth"}
    nobody = document(stack_file, '[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\nauth = "none"\n')
    assert "securitySchemes" not in nobody["components"]


def test_methods_throttle_versions_and_split_shape_the_operations(stack_file):
    doc = document(
        stack_file,
        """
[versions.old]
deprecated = 2026-01-01
sunset = 2027-06-30
successor = "v2"

[throttle.policies.standard]
rates = ["10/second"]

[[routes]]
prefix = "/old"
backend = "a"
version = "old"
methods = ["GET", "HEAD", "POST"]
throttle = "standard"

[[routes]]
prefix = "/v2"
split = { a = 50, b = 50 }
version = "v2"

[[routes]]
prefix = "/v2h"
split = { a = 50, b = 50 }
version = "v2"
hide_served_by = true
""",
    )
    assert ops_of(doc, "/old") == {"getRoot", "listThings", "createThing", "getThing"}
    listing = op(doc, "/old/things")
    assert listing["deprecated"] is True
    assert "429" in listing["responses"]
    headers = listing["responses"]["200"]["headers"]
    assert {"X-Request-ID", "RateLimit-Policy", "RateLimit", "Deprecation", "Sunset", "Link"} <= set(headers)
    assert headers["Deprecation"]["required"] is True
    assert doc["components"]["responses"]["Error429"]["headers"]["Retry-After"] == {"$ref": "#/components/headers/Retry-After"}
    assert "413" in op(doc, "/old/things", "post")["responses"] and "413" not in listing["responses"]

    split = op(doc, "/v2/things")
    assert "deprecated" not in split and "429" not in split["responses"]
    served_by = split["responses"]["200"]["headers"]["X-Served-By"]
    assert served_by["required"] is True and served_by["schema"]["enum"] == ["a", "b"]
    assert "X-Served-By" not in op(doc, "/v2h/things")["responses"]["200"]["headers"]
    assert doc["x-stackgate-contract-diff"]["/v2"] == {"stacks": ["a", "b"], "differences": []}
    ids = [o["operationId"] for item in doc["paths"].values() for name, o in item.items() if name != "parameters"]
    assert len(ids) == len(set(ids))


def test_421_is_documented_only_with_an_allow_list(stack_file):
    routes = '[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\n'
    assert "421" not in op(document(stack_file, routes), "/v1/things")["responses"]
    doc = document(stack_file, routes, ALL_SCHEMES + '\n[gateway]\nallowed_hosts = ["api.example.com"]\n')
    assert op(doc, "/v1/things")["responses"]["421"] == {"$ref": "#/components/responses/Error421"}
    assert doc["components"]["responses"]["Error421"]["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]["enum"] == ["host_not_allowed"]


def test_components_that_collide_are_renamed_per_backend(stack_file, tmp_path):
    other = json.loads(json.dumps(STACK))
    other["components"]["schemas"]["Thing"]["properties"]["colour"] = {"type": "string"}
    other["components"]["schemas"]["Error"] = {"type": "string"}  # the gateway's name
    other_file = tmp_path / "other.json"
    other_file.write_text(json.dumps(other))
    doc = document(stack_file, '[[routes]]\nprefix = "/a"\nbackend = "a"\nversion = "v1"\n\n[[routes]]\nprefix = "/b"\nbackend = "b"\nversion = "v2"\n', b_openapi=str(other_file))
    schemas = doc["components"]["schemas"]
    assert "colour" not in schemas["Thing"]["properties"] and "colour" in schemas["b.Thing"]["properties"]
    assert schemas["b.Error"] == {"type": "string"} and "properties" in schemas["Error"]
    assert op(doc, "/b/things/{id}")["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/b.Thing"}
    assert op(doc, "/a/things/{id}")["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Thing"}


def test_a_yaml_file_none_and_a_broken_source(stack_file, tmp_path):
    import yaml

    yaml_file = tmp_path / "things.yaml"
    yaml_file.write_text(yaml.safe_dump(STACK))
    routes = '[[routes]]\nprefix = "/a"\nbackend = "a"\nversion = "v1"\n\n[[routes]]\nprefix = "/b"\nbackend = "b"\nversion = "v2"\n'
    doc = document(yaml_file, routes, b_openapi="none")
    assert {path.split("/")[1] for path in doc["paths"]} == {"a"}
    broken = document(stack_file, routes, b_openapi="missing.json")
    assert {path.split("/")[1] for path in broken["paths"]} == {"a"}  # one stack's failure hides only its paths
    [problem] = broken["x-stackgate-problems"]
    assert problem.startswith("backends.b: no OpenAPI document: FileNotFoundError")


def test_a_relative_file_is_read_beside_the_config(stack_file):
    config = parse_config((backends(Path("things.json")) + consumers_toml() + '[[routes]]\nprefix = "/a"\nbackend = "a"\nversion = "v1"\n').encode(), str(stack_file.parent / "config.toml"))
    assert "/a/things" in openapi.build_document(config)["paths"]


def test_openapi_key_must_not_be_blank():
    from gateway.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(('[backends.a]\nkind = "wsgi"\napp = "m:app"\nopenapi = " "\n[[routes]]\nprefix = "/"\nbackend = "a"\n').encode(), "c.toml")
    assert any("backends.a.openapi" in p and "none" in p for p in info.value.problems)


def test_document_is_built_once_per_config_digest(stack_file):
    config = parse_config((backends(stack_file) + consumers_toml() + '[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\n').encode(), str(stack_file.parent / "c.toml"))
    body = openapi.document_bytes(config)
    assert openapi.document_bytes(config) is body
    assert openapi.document_bytes(config.model_copy()) is body  # same digest: same bytes
    assert json.loads(body) == openapi.build_document(config)
    other = config.model_copy(update={"digest": "something-else"})
    assert openapi.document_bytes(other) is not body


async def test_endpoint_is_public_json(gateway_client, stack_file):
    client = gateway_client(backends(stack_file) + consumers_toml() + '[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\n')
    response = await client.get("/_stackgate/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == openapi.build_document(client.gateway.compiled.config)
    assert response.json()["info"]["version"] == client.gateway.compiled.config.digest
    assert "/v1/things" in response.json()["paths"]
    head = await client.head("/_stackgate/openapi.json")
    assert head.status_code == 200
    post = await client.post("/_stackgate/openapi.json")
    assert post.status_code == 405


async def test_docs_viewer_is_public_and_self_contained(gateway_client, stack_file):
    client = gateway_client(backends(stack_file) + consumers_toml() + '[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\n')
    page = await client.get("/_stackgate/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # every asset from the gateway itself: no CDN
    for asset, kind in (("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui.css", "text/css"), ("init.js", "text/javascript"), ("favicon-32x32.png", "image/png")):
        assert f"/_stackgate/docs/{asset}" in page.text
        response = await client.get(f"/_stackgate/docs/{asset}")
        assert response.status_code == 200, asset
        assert response.headers["content-type"].startswith(kind)
    assert "/_stackgate/openapi.json" in (await client.get("/_stackgate/docs/init.js")).text
    missing = await client.get("/_stackgate/docs/../app.py")
    assert missing.status_code == 404
    assert (await client.get("/_stackgate/docs/index.html")).json()["error"]["code"] == "not_found"


def test_a_stack_document_from_a_url(stack_file):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(STACK).encode() if self.path == "/openapi.json" else b"{}"
            self.send_response(200 if self.path == "/openapi.json" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        routes = '[[routes]]\nprefix = "/a"\nbackend = "a"\nversion = "v1"\n\n[[routes]]\nprefix = "/b"\nbackend = "b"\nversion = "v2"\n'
        doc = document(stack_file, routes, b_openapi=f"{base}/openapi.json")
        assert {"/a/things", "/b/things"} <= set(doc["paths"])
        missing = document(stack_file, routes, b_openapi=f"{base}/nothing.json")
        assert "/b/things" not in missing["paths"]
        assert missing["x-stackgate-problems"][0].startswith("backends.b: no OpenAPI document: HTTPStatusError")
    finally:
        server.shutdown()
        server.server_close()
