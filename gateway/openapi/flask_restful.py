"""A Flask (Flask-RESTful) app's OpenAPI paths, from its ``url_map`` and its resources.

apispec has no maintained Flask-RESTful plugin for Flask 3, so this is a small
introspection built on apispec's public API (``APISpec``, ``yaml_utils``):

- each URL rule gives a path (``<int:id>`` -> ``{id}``, typed by its converter;
  ``/x`` and ``/x/`` are one path) and its methods: a resource's handlers
  (``get``, ``post``...) or a plain view's ``methods``; ``HEAD``/``OPTIONS`` are left out;
- the handler's docstring gives the summary (first line), the description, and
  after a ``---`` line an apispec YAML operation (``parameters``, ``requestBody``,
  ``responses``);
- a ``schema`` written as a bare name in that YAML is looked up in the resource's
  module (``parameters: NAME``, a list): a dict of Flask-RESTful ``fields`` (what ``marshal`` uses) becomes a JSON
  Schema, any other dict is taken as JSON Schema; either becomes a component
  (``todo_fields`` -> ``Todo``). A custom ``fields.Raw`` says its type with
  ``__schema_type__`` / ``__schema_format__`` (flask-restx's convention).
"""

from __future__ import annotations

import copy
import inspect
import re
import sys
from typing import Any

from apispec import APISpec
from apispec.yaml_utils import load_yaml_from_docstring

_SKIP_METHODS = {"HEAD", "OPTIONS"}
_RULE_ARG = re.compile(r"<(?:([a-zA-Z_][a-zA-Z0-9_]*)(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")
_SUFFIXES = ("_fields", "_schema")


def is_flask_app(app: Any) -> bool:
    try:
        from flask import Flask
    except ImportError:  # pragma: no cover - Flask is a dependency
        return False
    return isinstance(app, Flask)


def field_schema(field: Any) -> dict[str, Any]:
    """JSON Schema of one Flask-RESTful field (a class or an instance)."""
    from flask_restful import fields

    cls = field if isinstance(field, type) else type(field)
    declared = getattr(cls, "__schema_type__", None)
    if declared:
        out: dict[str, Any] = {"type": declared}
        if getattr(cls, "__schema_format__", None):
            out["format"] = cls.__schema_format__
        return out
    if isinstance(field, dict):
        return fields_schema(field)
    if issubclass(cls, fields.Nested):
        nested = fields_schema(field.nested) if not isinstance(field, type) else {"type": "object"}
        return {"anyOf": [nested, {"type": "null"}]} if getattr(field, "allow_null", False) else nested
    if issubclass(cls, fields.List):
        return {"type": "array", "items": field_schema(field.container) if not isinstance(field, type) else {}}
    for kind, schema in (
        (fields.Boolean, {"type": "boolean"}),
        (fields.Integer, {"type": "integer"}),
        (fields.Arbitrary, {"type": "number"}),
        (fields.Fixed, {"type": "string"}),
        (fields.Float, {"type": "number"}),
        (fields.DateTime, {"type": "string", "format": "date-time"}),
        (fields.Url, {"type": "string", "format": "uri"}),
        (fields.FormattedString, {"type": "string"}),
        (fields.String, {"type": "string"}),
    ):
        if issubclass(cls, kind):
            return dict(schema)
    return {}  # fields.Raw: anything


def is_fields_dict(value: Any) -> bool:
    from flask_restful import fields

    return isinstance(value, dict) and bool(value) and all(
        isinstance(v, dict) or isinstance(v, fields.Raw) or (isinstance(v, type) and issubclass(v, fields.Raw)) for v in value.values()
    )


def fields_schema(value: dict[str, Any]) -> dict[str, Any]:
    """``marshal`` always writes every key, in this order: all are required."""
    return {"type": "object", "properties": {k: field_schema(v) for k, v in value.items()}, "required": list(value)}


def component_name(variable: str) -> str:
    for suffix in _SUFFIXES:
        if variable.endswith(suffix) and len(variable) > len(suffix):
            variable = variable[: -len(suffix)]
    return "".join(part[:1].upper() + part[1:] for part in variable.split("_") if part)


def _path(rule: str, converters: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    from werkzeug.routing import FloatConverter, IntegerConverter, UUIDConverter

    params = []

    def replace(match: re.Match) -> str:
        converter, name = match.group(1) or "default", match.group(2)
        cls = converters.get(converter)
        schema: dict[str, Any] = {"type": "string"}
        if cls is not None and issubclass(cls, IntegerConverter):
            schema = {"type": "integer", "minimum": 0}
        elif cls is not None and issubclass(cls, FloatConverter):
            schema = {"type": "number"}
        elif cls is not None and issubclass(cls, UUIDConverter):
            schema = {"type": "string", "format": "uuid"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
        return "{" + name + "}"

    path = _RULE_ARG.sub(replace, rule)
    if len(path) > 1:
        path = path.rstrip("/")
    return path, params


def _operation(handler: Any, module: Any, spec: APISpec) -> dict[str, Any]:
    doc = inspect.getdoc(handler) or ""
    text = doc.split("\n---", 1)[0].strip()
    operation: dict[str, Any] = dict(load_yaml_from_docstring(doc) or {})
    if text:
        summary, _, description = text.partition("\n")
        operation.setdefault("summary", summary.strip())
        if description.strip():
            operation.setdefault("description", description.strip())
    operation["responses"] = {str(status): response for status, response in (operation.get("responses") or {"200": {"description": "OK"}}).items()}
    return _resolve_schemas(operation, module, spec)


def _resolve_schemas(node: Any, module: Any, spec: APISpec) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in ("schema", "items") and isinstance(value, str):
                out[key] = _named_schema(value, module, spec)
            elif key == "parameters" and isinstance(value, str):
                out[key] = _resolve_schemas(copy.deepcopy(_named(value, module, list)), module, spec)
            else:
                out[key] = _resolve_schemas(value, module, spec)
        return out
    if isinstance(node, list):
        return [_resolve_schemas(item, module, spec) for item in node]
    return node


def _named(variable: str, module: Any, kind: type) -> Any:
    value = getattr(module, variable, None)
    if not isinstance(value, kind):
        raise LookupError(f'"{variable}" is not a {kind.__name__} in {getattr(module, "__name__", module)}')
    return value


def _named_schema(variable: str, module: Any, spec: APISpec) -> dict[str, Any]:
    value = _named(variable, module, dict)
    name = component_name(variable)
    if name not in spec.components.schemas:
        spec.components.schema(name, fields_schema(value) if is_fields_dict(value) else _resolve_schemas(value, module, spec))
    return {"$ref": f"#/components/schemas/{name}"}


def flask_document(app: Any, title: str = "flask") -> dict[str, Any]:
    """The OpenAPI 3.1 document of a Flask app's routes (a fresh dict)."""
    spec = APISpec(title=title, version="1", openapi_version="3.1.0")
    paths: dict[str, dict[str, Any]] = {}
    params_of: dict[str, list] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        view = app.view_functions.get(rule.endpoint)
        if view is None:
            continue
        cls = getattr(view, "view_class", None)
        path, params = _path(rule.rule, app.url_map.converters)
        for method in sorted((rule.methods or set()) - _SKIP_METHODS):
            handler = getattr(cls, method.lower(), None) if cls is not None else view
            if handler is None:
                continue
            module = sys.modules.get(getattr(handler, "__module__", None) or (cls or view).__module__)
            paths.setdefault(path, {}).setdefault(method.lower(), _operation(handler, module, spec))
        if params:
            params_of.setdefault(path, params)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations, parameters=params_of.get(path) or None)
    return spec.to_dict()
