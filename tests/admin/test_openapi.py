"""The OpenAPI document builder (gateway/admin/openapi.py) and its endpoint, in-process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from gateway.admin import openapi
from gateway.config import load_config, parse_config
from tests.users import consumers_toml

ROOT = Path(__file__).resolve().parents[2]
TODOS_OPS = {"getRoot", "listTodos", "createTodo", "getTodo", "replaceTodo", "updateTodo", "deleteTodo"}

BACKENDS = """
[backends.a]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[backends.b]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[versions.v1]
[versions.v2]
"""

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


def document(routes: str, extra: str = ALL_SCHEMES) -> dict:
    """The document of a config with these routes; valid OpenAPI 3.1 whatever the routes."""
    doc = openapi.build_document(parse_config((BACKENDS + extra + consumers_toml() + routes).encode(), "test.toml"))
    try:
        from openapi_spec_validator import validate
    except ImportError:  # pragma: no cover - part of the dev extra
        pass
    else:
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
        if name != "parameters"
    }


def test_default_config_documents_both_prefixes_and_validates():
    spec_validator = pytest.importorskip("openapi_spec_validator")
    doc = openapi.build_document(load_config(ROOT / "config.toml"))
    spec_validator.validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"] == [{"url": "/"}]
    assert sorted(doc["paths"]) == ["/v1/", "/v1/todos", "/v1/todos/{id}", "/v2/", "/v2/todos", "/v2/todos/{id}"]
    assert ops_of(doc, "/v1") == ops_of(doc, "/v2") == TODOS_OPS
    assert [tag["name"] for tag in doc["tags"]] == ["todos-v1", "todos-v2"]
    schemas = doc["components"]["schemas"]
    assert {"Todo", "TodoInput", "TodoPatch", "Page", "Error"} <= set(schemas)
    assert schemas["TodoInput"]["required"] == ["title"]
    assert "required" not in schemas["TodoPatch"]
    assert schemas["Error"]["properties"]["error"]["required"] == ["status", "code", "message", "request_id"]
    assert set(doc["components"]["securitySchemes"]) == {"BearerAuth", "BasicAuth", "ApiKeyAuth"}
    assert doc["components"]["securitySchemes"]["ApiKeyAuth"] == {**doc["components"]["securitySchemes"]["ApiKeyAuth"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    create = op(doc, "/v2/todos", "post")
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TodoInput"}
    assert set(create["responses"]["201"]["links"]) == {"GetTodo", "ReplaceTodo", "UpdateTodo", "DeleteTodo"}
    assert create["responses"]["201"]["headers"]["Location"] == {"$ref": "#/components/headers/Location"}
    for status in ("400", "401", "403", "405", "408", "413", "415", "429", "431", "500", "502", "503", "504"):
        assert create["responses"][status] == {"$ref": f"#/components/responses/Error{status}"}
    assert create["responses"]["421"] == {"$ref": "#/components/responses/Error421"}  # config.toml has allowed_hosts
    assert "404" in op(doc, "/v1/todos/{id}", "delete")["responses"]
    assert "413" not in op(doc, "/v1/todos/{id}", "delete")["responses"]


def test_only_routes_with_a_version_are_todos_routes():
    doc = document(
        """
[[routes]]
prefix = "/api"
backend = "a"
version = "v1"

[[routes]]
prefix = "/other"
backend = "b"
"""
    )
    assert sorted(doc["paths"]) == ["/api/", "/api/todos", "/api/todos/{id}"]


def test_a_versioned_root_route_has_unprefixed_paths():
    doc = document('[[routes]]\nprefix = "/"\nbackend = "a"\nversion = "v1"\n')
    assert sorted(doc["paths"]) == ["/", "/todos", "/todos/{id}"]


def test_security_follows_each_route_s_auth_mode_and_schemes():
    doc = document(
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
"""
    )
    required = op(doc, "/req/todos")
    assert required["security"] == [{"BearerAuth": []}, {"BasicAuth": []}, {"ApiKeyAuth": []}]
    assert {"401", "403"} <= set(required["responses"])
    assert required["x-stackgate-roles"] == ["user"]

    optional = op(doc, "/opt/todos")
    assert optional["security"] == [{}, {"BearerAuth": []}]
    assert "401" in optional["responses"] and "403" not in optional["responses"]

    open_ = op(doc, "/open/todos")
    assert open_["security"] == []
    assert "401" not in open_["responses"] and "403" not in open_["responses"]

    keys = op(doc, "/keys/todos")  # [auth] default is "required"; no roles: no 403
    assert keys["security"] == [{"BasicAuth": []}, {"ApiKeyAuth": []}]
    assert "401" in keys["responses"] and "403" not in keys["responses"]


def test_only_configured_schemes_are_declared():
    doc = document('[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\n', extra="")
    assert set(doc["components"]["securitySchemes"]) == {"ApiKeyAuth"}
    assert op(doc, "/v1/todos")["security"] == [{"ApiKeyAuth": []}]
    nobody = document('[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\nauth = "none"\n')
    assert "securitySchemes" not in nobody["components"]


def test_methods_throttle_versions_and_split_shape_the_operations():
    doc = document(
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
"""
    )
    assert ops_of(doc, "/old") == {"getRoot", "listTodos", "createTodo", "getTodo"}
    assert "/old/todos/{id}" in doc["paths"] and set(doc["paths"]["/old/todos/{id}"]) == {"parameters", "get"}
    assert set(op(doc, "/old/todos", "post")["responses"]["201"]["links"]) == {"GetTodo"}

    listing = op(doc, "/old/todos")
    assert listing["deprecated"] is True
    assert "429" in listing["responses"]
    headers = listing["responses"]["200"]["headers"]
    assert {"X-Request-ID", "RateLimit-Policy", "RateLimit", "Deprecation", "Sunset", "Link"} <= set(headers)
    assert headers["Deprecation"]["required"] is True
    assert doc["components"]["responses"]["Error429"]["headers"]["Retry-After"] == {"$ref": "#/components/headers/Retry-After"}

    split = op(doc, "/v2/todos")
    assert "deprecated" not in split and "429" not in split["responses"]
    served_by = split["responses"]["200"]["headers"]["X-Served-By"]
    assert served_by["required"] is True and served_by["schema"]["enum"] == ["a", "b"]
    assert "X-Served-By" not in op(doc, "/v2h/todos")["responses"]["200"]["headers"]
    ids = [o["operationId"] for item in doc["paths"].values() for name, o in item.items() if name != "parameters"]
    assert len(ids) == len(set(ids))


def test_error_responses_pin_status_and_codes():
    doc = document('[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\n')
    error404 = doc["components"]["responses"]["Error404"]
    schema = error404["content"]["application/json"]["schema"]
    assert schema["allOf"] == [{"$ref": "#/components/schemas/Error"}]
    assert schema["properties"]["error"]["properties"]["status"] == {"const": 404}
    assert set(schema["properties"]["error"]["properties"]["code"]["enum"]) == {"not_found", "route_not_found"}
    assert error404["headers"]["X-Request-ID"] == {"$ref": "#/components/headers/X-Request-ID"}
    assert doc["components"]["responses"]["Error401"]["headers"]["WWW-Authenticate"]
    assert doc["components"]["responses"]["Error405"]["headers"]["Allow"]


@pytest.mark.parametrize(
    ("title", "valid"),
    [
        ("x", True),
        ("  Buy milk \n", True),
        ("a" * 200, True),
        (" \t" + "a" * 200 + "\u3000 ", True),
        ("a b\u00a0c", True),
        ("a" * 201, False),
        ("", False),
        ("   ", False),
        ("\u2003\u0085\x1f", False),
        ("a\x00b", False),
    ],
)
def test_title_pattern_is_the_contract_s_trimmed_1_to_200(title, valid):
    assert bool(re.search(openapi.TITLE_INPUT_PATTERN, title)) is valid
    if valid:
        assert re.search(openapi.TITLE_PATTERN, title.strip())


def test_query_patterns():
    assert all(re.search(openapi.DONE_PATTERN, v) for v in ("true", "FALSE", "True", "1", "0"))
    assert not any(re.search(openapi.DONE_PATTERN, v) for v in ("yes", "2", "", "true,false"))
    assert all(re.search(openapi.ORDERING_PATTERN, v) for v in ("id", "-title", "done,-created_at,updated_at"))
    assert not any(re.search(openapi.ORDERING_PATTERN, v) for v in ("owner", "id,", "--id", "id title"))


def test_document_is_built_once_per_config_digest():
    config = parse_config((BACKENDS + consumers_toml() + '[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\n').encode())
    body = openapi.document_bytes(config)
    assert openapi.document_bytes(config) is body
    assert openapi.document_bytes(config.model_copy()) is body  # same digest: same bytes
    assert json.loads(body) == openapi.build_document(config)
    other = config.model_copy(update={"digest": "something-else"})
    assert openapi.document_bytes(other) is not body


async def test_endpoint_is_public_json(gateway_client):
    client = gateway_client(BACKENDS + consumers_toml() + '[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\n')
    response = await client.get("/_stackgate/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == openapi.build_document(client.gateway.compiled.config)
    assert response.json()["info"]["version"] == client.gateway.compiled.config.digest
    head = await client.head("/_stackgate/openapi.json")
    assert head.status_code == 200
    post = await client.post("/_stackgate/openapi.json")
    assert post.status_code == 405


def test_421_is_documented_only_with_an_allow_list():
    routes = '[[routes]]\nprefix = "/v1"\nbackend = "a"\nversion = "v1"\n'
    assert "421" not in op(document(routes), "/v1/todos")["responses"]
    doc = document(routes, ALL_SCHEMES + '\n[gateway]\nallowed_hosts = ["api.example.com"]\n')
    assert op(doc, "/v1/todos")["responses"]["421"] == {"$ref": "#/components/responses/Error421"}
    assert doc["components"]["responses"]["Error421"]["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]["enum"] == ["host_not_allowed"]
