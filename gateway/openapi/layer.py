"""The gateway's own layer over a route's operations: what every answer through it may carry.

Per route, from the config: the security schemes its ``auth`` mode and
``auth_schemes`` accept (``optional`` adds the anonymous ``{}``), 401, 403 when
it has ``roles``, 429 and the ``RateLimit`` headers when it has a ``throttle``,
``Deprecation``/``Sunset``/``Link`` (and ``deprecated: true``) from its
version, ``X-Served-By`` on split routes, 421 with ``[gateway] allowed_hosts``,
and the gateway's own errors (400, 405, 408, 413, 431, 5xx). Every one of
these errors has the one shape of docs/errors.md (``components/schemas/Error``).
"""

from __future__ import annotations

from typing import Any, Optional

from gateway.policies import versions
from gateway.policies.auth.schema import SCHEMES, available_schemes, effective_mode

#: Security scheme name in ``components.securitySchemes`` for each auth scheme.
SECURITY_SCHEMES: dict[str, tuple[str, dict[str, Any]]] = {
    "jwt": ("BearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "`Authorization: Bearer <token>` from a configured `[auth.jwt.NAME]` issuer."}),
    "basic": ("BasicAuth", {"type": "http", "scheme": "basic", "description": "`Authorization: Basic <base64 of user:password>` of a consumer with a `password`."}),
    "api-key": ("ApiKeyAuth", {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "`X-API-Key: <key>` of a consumer (`stackgate keys new NAME`)."}),
}

_REQUEST_ID = r"^[A-Za-z0-9._:\-]{1,128}$"

#: status -> (description, codes the gateway answers it with)
ERRORS: dict[int, tuple[str, tuple[str, ...]]] = {
    400: ("Bad request: an ambiguous path, a bad method/`Content-Length`, a missing or invalid `Host` (gateway); input the stack refuses.", ("bad_path", "bad_method", "bad_request", "bad_host", "parse_error", "invalid")),
    401: ("No, bad or ambiguous credentials; `WWW-Authenticate` lists the accepted schemes.", ("unauthorized",)),
    403: ("Authenticated, but without one of the route's roles.", ("forbidden",)),
    404: ("Not found.", ("not_found", "route_not_found")),
    405: ("The method is not served on this path (`Allow` lists those that are): for methods the document does not list.", ("method_not_allowed",)),
    408: ("A slow client: the head or the body did not arrive in time; the connection is closed.", ("request_timeout",)),
    413: ("The body exceeds the route's `max_body_size`; refused before the backend reads it.", ("body_too_large",)),
    415: ("The body's media type is not one the operation accepts.", ("unsupported_media_type",)),
    421: ("The host is not one `[gateway] allowed_hosts` lists.", ("host_not_allowed",)),
    429: ("A rate limit is spent; retry after `Retry-After` seconds.", ("rate_limited",)),
    431: ("The request line and headers exceed 32 KiB.", ("headers_too_large",)),
    500: ("An unhandled error in the stack.", ("server_error",)),
    502: ("The backend failed before its response began, or could not be reached.", ("backend_error", "backend_unavailable")),
    503: ("The backend's pool and queue are full, or the rate-limit store is down (`on_store_error = \"deny\"`).", ("backend_busy", "throttle_unavailable")),
    504: ("The backend did not start its response within its `timeout`.", ("backend_timeout",)),
}


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Every error from the gateway (docs/errors.md).",
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
    }


def _header(description: str, schema: Optional[dict] = None, required: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "schema": schema or {"type": "string"}}
    if required:
        out["required"] = True
    return out


def headers() -> dict[str, Any]:
    return {
        "X-Request-ID": _header("The request's id (the client's own when it sent a valid one); quote it in bug reports.", {"type": "string", "pattern": _REQUEST_ID}, True),
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


def error_response(status: int) -> dict[str, Any]:
    description, codes = ERRORS[status]
    out_headers: dict[str, Any] = {"X-Request-ID": ref("headers", "X-Request-ID")}
    if status == 401:
        out_headers["WWW-Authenticate"] = ref("headers", "WWW-Authenticate")
    elif status == 405:
        out_headers["Allow"] = ref("headers", "Allow")
    elif status == 429:
        out_headers.update({"Retry-After": ref("headers", "Retry-After"), "RateLimit-Policy": ref("headers", "RateLimit-Policy"), "RateLimit": ref("headers", "RateLimit")})
    schema = {
        "allOf": [ref("schemas", "Error")],
        "properties": {"error": {"properties": {"status": {"const": status}, "code": {"enum": list(codes)}}}},
    }
    return {"description": description, "headers": out_headers, "content": {"application/json": {"schema": schema}}}


def error_name(status: int) -> str:
    return f"Error{status}"


class RouteLayer:
    """What the gateway adds to every operation of one route."""

    def __init__(self, route: Any, config: Any) -> None:
        self.route = route
        self.mode = effective_mode(route, config.auth)
        available = available_schemes(config.auth, config.consumers)
        wanted = set(route.auth_schemes) if route.auth_schemes is not None else set(available)
        self.schemes = [name for name in SCHEMES if name in wanted and name in available]
        self.roles = sorted(route.roles or ())
        self.throttled = route.throttle is not None
        version = config.versions.get(route.version) if route.version else None
        successor = None
        if version is not None and version.successor:
            successor = next((r.prefix for r in config.routes if r.version == version.successor), None)
        self.version_headers = [name.decode() for name, _ in versions.response_headers(version, successor)] if version else []
        self.deprecated = bool(version is not None and version.deprecated is not None)
        self.served_by = bool(route.split) and not route.hide_served_by
        self.methods = set(route.methods) if route.methods else None
        self.hosts_allowed = bool(config.gateway.allowed_hosts)

    def allows(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods

    def security(self) -> list[dict[str, list[str]]]:
        if self.mode == "none":
            return []
        requirements: list[dict[str, list[str]]] = [{SECURITY_SCHEMES[name][0]: []} for name in self.schemes]
        if self.mode == "optional":
            requirements.insert(0, {})
        return requirements

    def error_statuses(self, has_body: bool) -> list[int]:
        statuses = [400]
        if self.mode != "none":
            statuses.append(401)
        if self.mode == "required" and self.roles:
            statuses.append(403)
        statuses += [405, 408]
        if has_body:
            statuses += [413, 415]
        if self.hosts_allowed:
            statuses.append(421)
        if self.throttled:
            statuses.append(429)
        statuses += [431, 500, 502, 503, 504]
        return statuses

    def success_headers(self) -> dict[str, Any]:
        out: dict[str, Any] = {"X-Request-ID": ref("headers", "X-Request-ID")}
        if self.throttled:
            out["RateLimit-Policy"] = ref("headers", "RateLimit-Policy")
            out["RateLimit"] = ref("headers", "RateLimit")
        names = {"deprecation": "Deprecation", "sunset": "Sunset", "link": "Link"}
        for header in self.version_headers:
            name = names[header]
            out[name] = {**headers()[name], "required": True}
        if self.served_by:
            out["X-Served-By"] = {**headers()["X-Served-By"], "required": True, "schema": {"type": "string", "enum": sorted(self.route.split)}}
        return out

    def apply(self, operation: dict[str, Any]) -> dict[str, Any]:
        """``operation`` (a stack's, already copied) with the gateway's layer on top."""
        operation["security"] = self.security()
        responses = operation.setdefault("responses", {})
        for status, response in list(responses.items()):
            code = int(status) if str(status).isdigit() else None
            if code is not None and code < 400:
                response["headers"] = {**response.get("headers", {}), **self.success_headers()}
            elif code is not None and "content" not in response and code in ERRORS:
                # An error the stack declares without a body has the one error shape.
                responses[status] = ref("responses", error_name(code))
        for code in self.error_statuses("requestBody" in operation):
            responses.setdefault(str(code), ref("responses", error_name(code)))
        if self.roles:
            operation["x-stackgate-roles"] = self.roles
        if self.deprecated:
            operation["deprecated"] = True
        return operation

    def tag(self, stacks: list[str], diff_count: Optional[int]) -> dict[str, Any]:
        route = self.route
        target = f"backend `{route.backend}`" if route.backend else "split " + ", ".join(f"`{name}` {weight}" for name, weight in route.split.items())
        parts = [f"Route `{route.prefix}`: {target}" + (f", version `{route.version}`" if route.version else "") + f", auth `{self.mode}`."]
        if self.roles:
            parts.append("Roles (any one): " + ", ".join(f"`{role}`" for role in self.roles) + ".")
        if route.hosts:
            parts.append("Only for hosts " + ", ".join(f"`{host}`" for host in route.hosts) + ".")
        if self.deprecated:
            parts.append("Deprecated: see the `Deprecation`, `Sunset` and `Link` response headers.")
        if route.split:
            parts.append(f"Operations as `{stacks[0]}` describes them." + (f" The stacks disagree in {diff_count} places: `x-stackgate-contract-diff`." if diff_count else ""))
        return {"name": route.label, "description": " ".join(parts)}
