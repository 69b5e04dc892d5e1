"""The todos contract (docs/contract.md) as an OpenAPI 3.1 document, built from the live config.

Served at ``GET /_stackgate/openapi.json`` (open, like ``health``: API clients
need it). Which routes serve the todos API is derived, not configured: **every
route with a ``version``** (the default config's ``/v1`` and ``/v2``) gets the
todos paths under its prefix (``{prefix}/``, ``{prefix}/todos``,
``{prefix}/todos/{id}``); routes without one (``/admin``, ``/static``) are
left out. When several versioned routes share a prefix (narrowed by ``hosts``
or ``methods``), the first in file order describes it.

Per route the document follows the config: the operations its ``methods``
allow, the security schemes its ``auth`` mode and ``auth_schemes`` accept
(alternatives; ``optional`` adds the anonymous ``{}``), 403 when it has
``roles``, 429 and the ``RateLimit`` headers when it has a ``throttle``,
``Deprecation``/``Sunset``/``Link`` (and ``deprecated: true``) from its
version, ``X-Served-By`` on split routes. Every error, from the gateway or a
stack, has the one shape of docs/errors.md.

The document depends on the config only, so it is built once per config
(cached by the config's digest) and served as bytes.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any, Optional

from gateway.policies import versions
from gateway.policies.auth.schema import SCHEMES, available_schemes, effective_mode

OPENAPI_VERSION = "3.1.0"

#: Security scheme name in ``components.securitySchemes`` for each auth scheme.
SECURITY_SCHEMES: dict[str, tuple[str, dict[str, Any]]] = {
    "jwt": ("BearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "`Authorization: Bearer <token>` from a configured `[auth.jwt.NAME]` issuer."}),
    "basic": ("BasicAuth", {"type": "http", "scheme": "basic", "description": "`Authorization: Basic <base64 of user:password>` of a consumer with a `password`."}),
    "api-key": ("ApiKeyAuth", {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "`X-API-Key: <key>` of a consumer (`stackgate keys new NAME`)."}),
}

# --- JSON Schema pieces -------------------------------------------------------------

# Python's str.isspace() set: what both stacks trim (str.strip()) around a title.
_WS = r"\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_EDGE = rf"[^{_WS}\u0000]"  # a title's first and last character after trimming
#: A title as sent: 1-200 characters after trimming surrounding whitespace, no NUL.
TITLE_INPUT_PATTERN = rf"^[{_WS}]*{_EDGE}([^\u0000]{{0,198}}{_EDGE})?[{_WS}]*$"
#: A title as stored and returned: already trimmed.
TITLE_PATTERN = rf"^{_EDGE}([^\u0000]{{0,198}}{_EDGE})?$"
_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z$"
_ORDERING_FIELDS = ("id", "title", "done", "created_at", "updated_at")
_ORDER_TERM = "-?(" + "|".join(_ORDERING_FIELDS) + ")"
ORDERING_PATTERN = f"^{_ORDER_TERM}(,{_ORDER_TERM})*$"
DONE_PATTERN = "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$"
_REQUEST_ID = r"^[A-Za-z0-9._:\-]{1,128}$"

_TITLE_DOC = (
    "Surrounding whitespace is trimmed; 1-200 characters after trimming, "
    "without NUL or lone surrogate characters. Numbers are refused."
)


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schemas() -> dict[str, Any]:
    return {
        "Todo": {
            "type": "object",
            "description": "A todo, keys in this order. Only its owner (the caller) ever sees it.",
            "required": ["id", "url", "title", "done", "owner", "created_at", "updated_at"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "integer", "minimum": 1, "readOnly": True},
                "url": {"type": "string", "format": "uri", "readOnly": True, "description": "`{scheme}://{host}{prefix}/todos/{id}`, under the prefix it was fetched through."},
                "title": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": TITLE_PATTERN},
                "done": {"type": "boolean"},
                "owner": {"type": "string", "readOnly": True, "description": "The identity that created it (`anonymous` without one)."},
                "created_at": {"type": "string", "format": "date-time", "pattern": _TIMESTAMP, "readOnly": True},
                "updated_at": {"type": "string", "format": "date-time", "pattern": _TIMESTAMP, "readOnly": True},
            },
        },
        "TodoInput": {
            "type": "object",
            "description": "Body of POST (create) and PUT (replace): `title` required, `done` optional (false on create, unchanged on PUT). Read-only and unknown keys are ignored.",
            "required": ["title"],
            "properties": {
                "title": {"type": "string", "minLength": 1, "pattern": TITLE_INPUT_PATTERN, "description": _TITLE_DOC},
                "done": {"type": "boolean", "description": "A JSON boolean; null is refused."},
            },
        },
        "TodoPatch": {
            "type": "object",
            "description": "Body of PATCH: any subset of the writable fields (`{}` changes nothing).",
            "properties": {
                "title": {"type": "string", "minLength": 1, "pattern": TITLE_INPUT_PATTERN, "description": _TITLE_DOC},
                "done": {"type": "boolean", "description": "A JSON boolean; null is refused."},
            },
        },
        "Page": {
            "type": "object",
            "description": "One page of the caller's todos.",
            "required": ["count", "next", "previous", "results"],
            "additionalProperties": False,
            "properties": {
                "count": {"type": "integer", "minimum": 0, "description": "All matching todos of the caller."},
                "next": {"type": ["string", "null"], "format": "uri", "description": "Absolute URL of the next page, null on the last."},
                "previous": {"type": ["string", "null"], "format": "uri", "description": "Absolute URL of the previous page (without `page` for page 1), null on the first."},
                "results": {"type": "array", "maxItems": 100, "items": _ref("schemas", "Todo")},
            },
        },
        "Root": {
            "type": "object",
            "required": ["todos"],
            "additionalProperties": False,
            "properties": {"todos": {"type": "string", "format": "uri", "description": "Absolute URL of `{prefix}/todos`."}},
        },
        "Error": {
            "type": "object",
            "description": "Every error, from the gateway or either stack (docs/errors.md).",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["status", "code", "message", "request_id"],
                    "additionalProperties": False,
                    "properties": {
                        "status": {"type": "integer", "minimum": 400, "maximum": 599, "description": "The HTTP status, repeated."},
                        "code": {"type": "string", "pattern": "^[a-z][a-z_]*$", "description": "Stable, machine-readable; clients branch on this."},
                        "message": {"type": "string", "description": "One human-readable sentence; may change between releases."},
                        "request_id": {"type": ["string", "null"], "description": "The request's `X-Request-ID`."},
                        "fields": {
                            "type": "object",
                            "description": "Validation errors only: field (or `non_field_errors`) -> messages.",
                            "additionalProperties": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        },
                    },
                }
            },
        },
    }


#: status -> (description, codes the gateway or a stack answers it with)
ERRORS: dict[int, tuple[str, tuple[str, ...]]] = {
    400: ("Bad request: an ambiguous path, a bad method/`Content-Length`, a missing or invalid `Host` (gateway); invalid JSON, a body or query parameter that fails validation (stack; `fields` says which).", ("bad_path", "bad_method", "bad_request", "bad_host", "parse_error", "invalid")),
    401: ("No, bad or ambiguous credentials; `WWW-Authenticate` lists the accepted schemes.", ("unauthorized",)),
    403: ("Authenticated, but without one of the route's roles.", ("forbidden",)),
    404: ("No such todo (or not the caller's), a page past the last, or no route.", ("not_found", "route_not_found")),
    405: ("The method is not served on this path (`Allow` lists those that are): for methods the document does not list.", ("method_not_allowed",)),
    408: ("A slow client: the head or the body did not arrive in time; the connection is closed.", ("request_timeout",)),
    413: ("The body exceeds the route's `max_body_size`; refused before the backend reads it.", ("body_too_large",)),
    415: ("The body is not `application/json`.", ("unsupported_media_type",)),
    421: ("The host is not one `[gateway] allowed_hosts` lists.", ("host_not_allowed",)),
    429: ("A rate limit is spent; retry after `Retry-After` seconds.", ("rate_limited",)),
    431: ("The request line and headers exceed 32 KiB.", ("headers_too_large",)),
    500: ("An unhandled error in the stack.", ("server_error",)),
    502: ("The backend failed before its response began, or could not be reached.", ("backend_error", "backend_unavailable")),
    503: ("The backend's pool and queue are full, or the rate-limit store is down (`on_store_error = \"deny\"`).", ("backend_busy", "throttle_unavailable")),
    504: ("The backend did not start its response within its `timeout`.", ("backend_timeout",)),
}


def _header(description: str, schema: Optional[dict] = None, required: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "schema": schema or {"type": "string"}}
    if required:
        out["required"] = True
    return out


def _headers() -> dict[str, Any]:
    return {
        "X-Request-ID": _header("The request's id (the client's own when it sent a valid one); quote it in bug reports.", {"type": "string", "pattern": _REQUEST_ID}, True),
        "Location": _header("The created todo's `url`.", {"type": "string", "format": "uri"}, True),
        "WWW-Authenticate": _header("The schemes the route accepts, e.g. `Bearer realm=\"stackgate\", ApiKey realm=\"stackgate\", header=\"X-API-Key\"`.", required=True),
        "Allow": _header("The methods the path serves.", required=True),
        "Retry-After": _header("Seconds to wait before retrying.", {"type": "string", "pattern": "^[0-9]+$"}, True),
        "RateLimit-Policy": _header("The route's quota (draft-ietf-httpapi-ratelimit-headers); absent while the rate-limit store is down and `on_store_error = \"allow\"`."),
        "RateLimit": _header("What is left of the quota, e.g. `\"1-minute\";r=599;t=60`."),
        "Deprecation": _header("RFC 9745: when this version was (or will be) deprecated, `@<unix time>`.", {"type": "string", "pattern": "^@-?[0-9]+$"}),
        "Sunset": _header("RFC 8594: when this version stops being served (HTTP-date)."),
        "Link": _header('`<successor prefix>; rel="successor-version"` and/or `<notes>; rel="deprecation"`.'),
        "X-Served-By": _header("The backend that answered (split routes)."),
    }


def _error_response(status: int) -> dict[str, Any]:
    description, codes = ERRORS[status]
    headers: dict[str, Any] = {"X-Request-ID": _ref("headers", "X-Request-ID")}
    if status == 401:
        headers["WWW-Authenticate"] = _ref("headers", "WWW-Authenticate")
    elif status == 405:
        headers["Allow"] = _ref("headers", "Allow")
    elif status == 429:
        headers.update({"Retry-After": _ref("headers", "Retry-After"), "RateLimit-Policy": _ref("headers", "RateLimit-Policy"), "RateLimit": _ref("headers", "RateLimit")})
    schema = {
        "allOf": [_ref("schemas", "Error")],
        "properties": {"error": {"properties": {"status": {"const": status}, "code": {"enum": list(codes)}}}},
    }
    return {"description": description, "headers": headers, "content": {"application/json": {"schema": schema}}}


def _error_name(status: int) -> str:
    return f"Error{status}"


# --- routes ---------------------------------------------------------------------------


def todos_routes(config: Any) -> list[Any]:
    """The routes that serve the todos API: those with a ``version``, the first per prefix."""
    seen: set[str] = set()
    out = []
    for route in config.routes:
        if route.version is not None and route.prefix not in seen:
            seen.add(route.prefix)
            out.append(route)
    return out


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_") or "root"


class _Route:
    """What the document needs to know about one todos route."""

    def __init__(self, route: Any, config: Any, slug: str) -> None:
        self.route = route
        self.slug = slug  # operationId prefix, unique in the document
        self.mode = effective_mode(route, config.auth)
        available = available_schemes(config.auth, config.consumers)
        wanted = set(route.auth_schemes) if route.auth_schemes is not None else set(available)
        self.schemes = [name for name in SCHEMES if name in wanted and name in available]
        self.roles = sorted(route.roles or ())
        self.throttled = route.throttle is not None
        version = config.versions.get(route.version)
        successor = None
        if version is not None and version.successor:
            successor = next((r.prefix for r in config.routes if r.version == version.successor), None)
        self.version_headers = [name.decode() for name, _ in versions.response_headers(version, successor)] if version else []
        self.deprecated = bool(version is not None and version.deprecated is not None)
        self.served_by = bool(route.split) and not route.hide_served_by
        self.methods = set(route.methods) if route.methods else None
        self.hosts_allowed = bool(config.gateway.allowed_hosts)

    def security(self) -> list[dict[str, list[str]]]:
        if self.mode == "none":
            return []
        requirements: list[dict[str, list[str]]] = [{SECURITY_SCHEMES[name][0]: []} for name in self.schemes]
        if self.mode == "optional":
            requirements.insert(0, {})
        return requirements

    def error_statuses(self, has_body: bool, not_found: bool) -> list[int]:
        statuses = [400]
        if self.mode != "none":
            statuses.append(401)
        if self.mode == "required" and self.roles:
            statuses.append(403)
        if not_found:
            statuses.append(404)
        statuses += [405, 408]
        if has_body:
            statuses += [413, 415]
        if self.hosts_allowed:
            statuses.append(421)
        if self.throttled:
            statuses.append(429)
        statuses += [431, 500, 502, 503, 504]
        return sorted(statuses)

    def success_headers(self, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        headers: dict[str, Any] = {"X-Request-ID": _ref("headers", "X-Request-ID"), **(extra or {})}
        if self.throttled:
            headers["RateLimit-Policy"] = _ref("headers", "RateLimit-Policy")
            headers["RateLimit"] = _ref("headers", "RateLimit")
        names = {"deprecation": "Deprecation", "sunset": "Sunset", "link": "Link"}
        for header in self.version_headers:
            name = names[header]
            headers[name] = {**_headers()[name], "required": True}
        if self.served_by:
            backends = sorted(self.route.split)
            headers["X-Served-By"] = {**_headers()["X-Served-By"], "required": True, "schema": {"type": "string", "enum": backends}}
        return headers


def _operation(r: _Route, op_id: str, summary: str, success: dict[str, Any], *, body: Optional[tuple[str, bool]] = None, not_found: bool = False, parameters: Optional[list] = None) -> dict[str, Any]:
    route = r.route
    responses: dict[str, Any] = dict(success)
    for status in r.error_statuses(body is not None, not_found):
        responses[str(status)] = _ref("responses", _error_name(status))
    op: dict[str, Any] = {
        "operationId": f"{r.slug}_{op_id}",
        "summary": summary,
        "tags": [route.label],
        "security": r.security(),
        "responses": responses,
    }
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        schema, required = body
        op["requestBody"] = {
            "required": required,
            "description": "JSON only (`Content-Type: application/json`); an empty body counts as `{}`.",
            "content": {"application/json": {"schema": _ref("schemas", schema)}},
        }
    if r.roles:
        op["x-stackgate-roles"] = r.roles
    if r.deprecated:
        op["deprecated"] = True
    return op


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref("schemas", schema)}}


def _list_parameters() -> list[dict[str, Any]]:
    # An empty value (`?page=`) counts as absent; a repeated parameter counts by its last value.
    return [
        {"name": "done", "in": "query", "required": False, "allowEmptyValue": True, "description": "Only done (`true`, `1`) or open (`false`, `0`) todos; case-insensitive.", "schema": {"type": "string", "pattern": DONE_PATTERN}},
        {"name": "ordering", "in": "query", "required": False, "allowEmptyValue": True, "description": "Comma-separated fields, each optionally prefixed with `-` (descending); ties by `id`. Default `id`.", "schema": {"type": "string", "pattern": ORDERING_PATTERN}},
        {"name": "page", "in": "query", "required": False, "allowEmptyValue": True, "description": "Page number (default 1); past the last page: 404 (page 1 of an empty list is 200).", "schema": {"type": "integer", "minimum": 1}},
        {"name": "page_size", "in": "query", "required": False, "allowEmptyValue": True, "description": "Todos per page, 1-100 (default 20).", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    ]


def _paths_for(r: _Route) -> dict[str, dict[str, Any]]:
    prefix = r.route.prefix
    base = "" if prefix == "/" else prefix
    slug = r.slug

    def allowed(method: str) -> bool:
        return r.methods is None or method in r.methods

    item_param = {"name": "id", "in": "path", "required": True, "description": "The todo's id; one that is not a positive integer, or not the caller's, is 404.", "schema": {"type": "integer", "minimum": 1}}
    links = {
        name: {"operationId": f"{slug}_{op_id}", "parameters": {"id": "$response.body#/id"}, "description": f"{what} the created todo."}
        for name, op_id, method, what in (
            ("GetTodo", "getTodo", "GET", "Read"),
            ("ReplaceTodo", "replaceTodo", "PUT", "Replace"),
            ("UpdateTodo", "updateTodo", "PATCH", "Change"),
            ("DeleteTodo", "deleteTodo", "DELETE", "Delete"),
        )
        if allowed(method)
    }
    ok_todo = {"description": "The todo.", "headers": r.success_headers(), "content": _json("Todo")}
    root: dict[str, Any] = {}
    collection: dict[str, Any] = {}
    item: dict[str, Any] = {"parameters": [item_param]}
    if allowed("GET"):
        root["get"] = _operation(r, "getRoot", "Links to the collections", {"200": {"description": "The API root.", "headers": r.success_headers(), "content": _json("Root")}})
        collection["get"] = _operation(r, "listTodos", "List the caller's todos, one page at a time", {"200": {"description": "A page.", "headers": r.success_headers(), "content": _json("Page")}}, not_found=True, parameters=_list_parameters())
        item["get"] = _operation(r, "getTodo", "One todo", {"200": ok_todo}, not_found=True)
    if allowed("POST"):
        created = {"description": "Created.", "headers": r.success_headers({"Location": _ref("headers", "Location")}), "content": _json("Todo")}
        if links:
            created["links"] = links
        collection["post"] = _operation(r, "createTodo", "Create a todo", {"201": created}, body=("TodoInput", True))
    if allowed("PUT"):
        item["put"] = _operation(r, "replaceTodo", "Replace a todo's writable fields (`done` unchanged when absent)", {"200": ok_todo}, body=("TodoInput", True), not_found=True)
    if allowed("PATCH"):
        item["patch"] = _operation(r, "updateTodo", "Change some of a todo's writable fields", {"200": ok_todo}, body=("TodoPatch", False), not_found=True)
    if allowed("DELETE"):
        item["delete"] = _operation(r, "deleteTodo", "Delete a todo", {"204": {"description": "Deleted.", "headers": r.success_headers()}}, not_found=True)
    paths = {f"{base}/": root, f"{base}/todos": collection, f"{base}/todos/{{id}}": item}
    return {path: ops for path, ops in paths.items() if set(ops) - {"parameters"}}


def _tag(r: _Route) -> dict[str, Any]:
    route = r.route
    target = f"backend `{route.backend}`" if route.backend else "split " + ", ".join(f"`{name}` {weight}" for name, weight in route.split.items())
    parts = [f"The todos API under `{route.prefix}`: version `{route.version}`, {target}, auth `{r.mode}`."]
    if r.roles:
        parts.append("Roles (any one): " + ", ".join(f"`{role}`" for role in r.roles) + ".")
    if route.hosts:
        parts.append("Only for hosts " + ", ".join(f"`{host}`" for host in route.hosts) + ".")
    if r.deprecated:
        parts.append("Deprecated: see the `Deprecation`, `Sunset` and `Link` response headers.")
    return {"name": route.label, "description": " ".join(parts)}


def build_document(config: Any) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``config``'s todos routes (a fresh dict)."""
    routes: list[_Route] = []
    slugs: set[str] = set()
    for route in todos_routes(config):
        slug = base = _slug(route.label)
        n = 1
        while slug in slugs:
            n += 1
            slug = f"{base}_{n}"
        slugs.add(slug)
        routes.append(_Route(route, config, slug))
    paths: dict[str, Any] = {}
    for r in routes:
        paths.update(_paths_for(r))
    used = sorted({name for r in routes if r.mode != "none" for name in r.schemes}, key=list(SCHEMES).index)
    components: dict[str, Any] = {
        "schemas": _schemas(),
        "responses": {_error_name(status): _error_response(status) for status in ERRORS},
        "headers": _headers(),
    }
    if used:
        components["securitySchemes"] = {SECURITY_SCHEMES[name][0]: SECURITY_SCHEMES[name][1] for name in used}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Stackgate todos API",
            "version": config.digest or "unversioned",
            "summary": "The todos contract both stacks serve, under every versioned route of this gateway.",
            "description": (
                "Generated from the gateway's live config (`info.version` is the config's digest). "
                "Paths take an optional trailing slash (`/todos` and `/todos/` are the same resource). "
                "`HEAD` is answered wherever `GET` is; other methods get 405 with `Allow`. "
                "Every error has one JSON shape (`Error`) whether the gateway or a stack answers it."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [_tag(r) for r in routes],
        "paths": paths,
        "components": components,
    }


_CACHE: "OrderedDict[str, bytes]" = OrderedDict()
_CACHE_SIZE = 8


def document_bytes(config: Any) -> bytes:
    """``build_document(config)`` as compact JSON, built once per config digest."""
    key = config.digest
    if key:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    body = json.dumps(build_document(config), separators=(",", ":")).encode()
    if key:
        _CACHE[key] = body
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return body
