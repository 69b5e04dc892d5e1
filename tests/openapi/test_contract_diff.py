"""``stackgate contract-diff ROUTE`` and ``x-stackgate-contract-diff``: where a split's stacks disagree.

On the demo: its two stacks declare one contract; a Flask variant with
deliberate differences (tests/fixtures/flask_variant.py) is reported exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from gateway import openapi
from gateway.cli import main
from gateway.config import load_config
from gateway.openapi.diff import contract_diff

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
[backends.flask]
kind = "wsgi"
app = "{flask}"

[backends.django]
kind = "wsgi"
app = "backends.django_site.wsgi:application"

[consumers.alice]
roles = ["user"]
api_keys = ["sha256:e1667d0e2a2a3bcb894c7b372cffe15decddbcb4ea2d5a1a7d1546b9df3d2627"]

[versions.v1]

[[routes]]
name = "todos"
prefix = "/v1"
split = {{ flask = 50, django = 50 }}
version = "v1"

[[routes]]
name = "plain"
prefix = "/v2"
backend = "django"
version = "v1"
"""

VARIANT_DIFFERENCES = [
    {"operation": "GET /todos", "kind": "parameter", "name": "query:search", "only_in": "flask"},
    {"operation": "GET /todos", "kind": "status", "name": "404", "only_in": "django"},
    {"operation": "GET /todos/{}", "kind": "response_field", "name": "200 priority", "only_in": "flask"},
    {"operation": "GET /todos/{}", "kind": "response_field", "name": "200 owner", "only_in": "django"},
    {"operation": "POST /todos/{}/archive", "kind": "operation", "name": "POST /todos/{}/archive", "only_in": "flask"},
]


def write_config(tmp_path: Path, flask: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(flask=flask))
    return path


def test_the_demo_stacks_declare_one_contract(tmp_path, capsys):
    path = write_config(tmp_path, "backends.flask_site.wsgi:app")
    assert main(["contract-diff", "todos", "--config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "todos: flask and django declare the same contract"
    doc = openapi.build_document(load_config(path))
    assert doc["x-stackgate-contract-diff"] == {"todos": {"stacks": ["flask", "django"], "differences": []}}


def test_a_variant_s_differences_are_listed(tmp_path, capsys):
    path = write_config(tmp_path, "tests.fixtures.flask_variant:app")
    assert main(["contract-diff", "todos", "--config", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "todos: 5 differences between flask and django"
    assert "  only in flask: GET /todos: parameter query:search" in out
    assert "  only in django: GET /todos/{}: response field 200 owner" in out
    assert "  only in flask: POST /todos/{}/archive" in out

    assert main(["contract-diff", "/v1", "--config", str(path), "--json"]) == 1  # by prefix too
    data = json.loads(capsys.readouterr().out)
    assert data["route"] == "todos" and data["stacks"] == ["flask", "django"]
    assert sorted(data["differences"], key=json.dumps) == sorted(VARIANT_DIFFERENCES, key=json.dumps)

    doc = openapi.build_document(load_config(path))
    validate(doc)
    assert sorted(doc["x-stackgate-contract-diff"]["todos"]["differences"], key=json.dumps) == sorted(VARIANT_DIFFERENCES, key=json.dumps)
    assert "5 places" in next(tag for tag in doc["tags"] if tag["name"] == "todos")["description"]
    assert "/v1/todos/{todo_id}/archive" in doc["paths"]  # the heavier (here: first) stack's operations


@pytest.mark.parametrize(
    ("route", "message"),
    [("nope", 'no route named "nope"'), ("plain", 'route "plain" is not a split: it has one backend, "django"')],
)
def test_a_route_that_is_no_split_is_an_error(tmp_path, capsys, route, message):
    path = write_config(tmp_path, "backends.flask_site.wsgi:app")
    assert main(["contract-diff", route, "--config", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_request_fields_and_path_parameters_by_position():
    def doc(path: str, props: dict) -> dict:
        return {"paths": {path: {"put": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/In"}}}}, "responses": {"200": {"description": "ok"}}}}},
                "components": {"schemas": {"In": {"type": "object", "properties": props}}}}

    a = doc("/things/{id}/", {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "object", "properties": {"label": {}}}}})
    b = doc("/things/{thing_id}", {"name": {"type": "string"}})
    assert contract_diff({"a": a, "b": b}) == [
        {"operation": "PUT /things/{}", "kind": "request_field", "name": "tags", "only_in": "a"},
        {"operation": "PUT /things/{}", "kind": "request_field", "name": "tags[].label", "only_in": "a"},
    ]
