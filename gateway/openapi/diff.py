"""Where two stacks' documents disagree: a static check before a split sends them traffic.

Operations are matched by method and path, with path parameters compared by
position (``/items/{id}`` is ``/items/{item_id}``) and trailing slashes ignored.
For each operation both declare, the query/header/cookie parameters, the
JSON request body's fields, the response status codes and the JSON response
fields (nested, ``results[].title``) one declares and the other does not are
listed.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAM = re.compile(r"\{[^}/]+\}")
_MAX_DEPTH = 6


def normal_path(path: str) -> str:
    """A stack's path as documented: no trailing slash (except the root)."""
    return path.rstrip("/") or "/"


def _key(method: str, path: str) -> str:
    return f"{method.upper()} {_PARAM.sub('{}', normal_path(path))}"


def _resolve(doc: dict[str, Any], node: Any, seen: frozenset = frozenset()) -> Any:
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        target = node["$ref"]
        if target in seen:
            return {}
        seen = seen | {target}
        node = _walk(doc, target)
    return node


def _walk(doc: dict[str, Any], pointer: str) -> Any:
    node: Any = doc
    for part in pointer[2:].split("/"):
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, dict) else {}
    return node


def fields(doc: dict[str, Any], schema: Any, prefix: str = "", depth: int = 0) -> set[str]:
    """Dotted property paths of a JSON schema (``results[].title``), refs and ``allOf`` followed."""
    schema = _resolve(doc, schema)
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return set()
    out: set[str] = set()
    for part in schema.get("allOf", []) + schema.get("anyOf", []) + schema.get("oneOf", []):
        out |= fields(doc, part, prefix, depth + 1)
    if "items" in schema:
        out |= fields(doc, schema["items"], prefix + "[]", depth + 1)
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        out.add(path)
        out |= fields(doc, sub, path, depth + 1)
    return out


def _json_schema(doc: dict[str, Any], holder: Any) -> Any:
    content = (_resolve(doc, holder) or {}).get("content") or {}
    for media, item in content.items():
        if media == "application/json" or media.endswith("+json"):
            return item.get("schema")
    return None


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``"GET /items/{}"`` -> what the operation declares, comparably."""
    out: dict[str, dict[str, Any]] = {}
    for path, item in (doc.get("paths") or {}).items():
        item = _resolve(doc, item)
        shared = item.get("parameters", [])
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            params = {}
            for param in list(shared) + list(op.get("parameters", [])):
                param = _resolve(doc, param)
                if param.get("in") != "path":
                    params[f"{param.get('in')}:{param.get('name')}"] = param
            body = _json_schema(doc, op["requestBody"]) if "requestBody" in op else None
            responses = op.get("responses") or {}
            response_fields = set()
            for status, response in responses.items():
                if str(status).startswith("2"):
                    response_fields |= {f"{status} {name}" for name in fields(doc, _json_schema(doc, response))}
            out[_key(method, path)] = {
                "path": normal_path(path),
                "parameters": set(params),
                "request_fields": fields(doc, body) if body is not None else set(),
                "statuses": {str(status) for status in responses},
                "response_fields": response_fields,
            }
    return out


def contract_diff(docs: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """What one stack declares and another does not, between the first and each other stack.

    Each difference: ``{"operation", "kind", "name", "only_in"}``; kind is ``operation``,
    ``parameter``, ``request_field``, ``status`` or ``response_field``.
    """
    names = list(docs)
    ops = {name: operations(doc) for name, doc in docs.items()}
    out: list[dict[str, str]] = []
    first = names[0]
    for other in names[1:]:
        pair = (first, other)
        for key in sorted(set(ops[first]) | set(ops[other])):
            have = [name for name in pair if key in ops[name]]
            if len(have) == 1:
                out.append({"operation": key, "kind": "operation", "name": key, "only_in": have[0]})
                continue
            a, b = ops[first][key], ops[other][key]
            for kind in ("parameters", "request_fields", "statuses", "response_fields"):
                label = {"parameters": "parameter", "request_fields": "request_field", "statuses": "status", "response_fields": "response_field"}[kind]
                for name, values, others in ((first, a[kind], b[kind]), (other, b[kind], a[kind])):
                    for value in sorted(values - others):
                        out.append({"operation": key, "kind": label, "name": value, "only_in": name})
    return out


def format_diff(route: str, stacks: Iterable[str], differences: list[dict[str, str]]) -> str:
    """The differences as lines for a terminal."""
    stacks = list(stacks)
    if not differences:
        return f"{route}: {' and '.join(stacks)} declare the same contract"
    lines = [f"{route}: {len(differences)} differences between {' and '.join(stacks)}"]
    for d in differences:
        what = d["operation"] if d["kind"] == "operation" else f"{d['operation']}: {d['kind'].replace('_', ' ')} {d['name']}"
        lines.append(f"  only in {d['only_in']}: {what}")
    return "\n".join(lines)
