"""JSON Schemas the resources' docstrings name (besides ``marshalling.todo_fields``).

The gateway's OpenAPI generator reads each handler's docstring (apispec YAML
after ``---``) and resolves a bare ``schema: NAME`` against the handler's
module: these dicts, or a ``fields`` dict that ``marshal`` uses.
"""

from __future__ import annotations

from .validation import ORDERING_FIELDS, PAGE_SIZE_MAX, TITLE_MAX_LENGTH

_TITLE = {
    "type": "string",
    "minLength": 1,
    "maxLength": TITLE_MAX_LENGTH,
    "description": "Surrounding whitespace is trimmed; 1-200 characters after trimming, without NUL. Numbers are refused.",
}
_DONE = {"type": "boolean", "description": "A JSON boolean; null is refused."}
_ORDER_TERM = "-?(" + "|".join(ORDERING_FIELDS) + ")"

todo_input = {
    "type": "object",
    "description": "Body of POST (create) and PUT (replace): `title` required, `done` optional. Read-only and unknown keys are ignored.",
    "required": ["title"],
    "properties": {"title": _TITLE, "done": _DONE},
}

patched_todo_input = {
    "type": "object",
    "description": "Body of PATCH: any subset of the writable fields (`{}` changes nothing).",
    "properties": {"title": _TITLE, "done": _DONE},
}

page = {
    "type": "object",
    "description": "One page of the caller's todos.",
    "required": ["count", "next", "previous", "results"],
    "properties": {
        "count": {"type": "integer", "minimum": 0, "description": "All matching todos of the caller."},
        "next": {"type": ["string", "null"], "format": "uri", "description": "Absolute URL of the next page, null on the last."},
        "previous": {"type": ["string", "null"], "format": "uri", "description": "Absolute URL of the previous page, null on the first."},
        "results": {"type": "array", "maxItems": PAGE_SIZE_MAX, "items": "todo_fields"},
    },
}

root = {
    "type": "object",
    "required": ["todos"],
    "properties": {"todos": {"type": "string", "format": "uri", "description": "Absolute URL of the todos collection."}},
}

list_parameters = [
    {"name": "done", "in": "query", "schema": {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$"}, "description": "Only done (`true`, `1`) or open (`false`, `0`) todos; case-insensitive."},
    {"name": "ordering", "in": "query", "schema": {"type": "string", "pattern": f"^{_ORDER_TERM}(,{_ORDER_TERM})*$"}, "description": "Comma-separated fields, each optionally prefixed with `-` (descending); ties by `id`. Default `id`."},
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
    {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_SIZE_MAX, "default": 20}},
]
