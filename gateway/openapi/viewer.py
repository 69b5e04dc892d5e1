"""``/_stackgate/docs``: the merged document in Swagger UI, served from a pinned package.

Swagger UI's files come from ``drf-spectacular-sidecar`` (a wheel of Swagger UI's
``dist``, no Django needed to read it), so the viewer works offline: no CDN.
The page and its files are open, like ``openapi.json``; "Try it out" sends the
credentials given in its "Authorize" dialog (an API key or Basic) to the routes,
whose own access rules then apply (docs/openapi.md).
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from gateway.errors import GatewayError
from gateway.routing import ADMIN_PREFIX

BASE = f"{ADMIN_PREFIX}/docs"
_DIST = ("drf_spectacular_sidecar", "static/drf_spectacular_sidecar/swagger-ui-dist")
_DIST_FILES = {"swagger-ui.css": b"text/css; charset=utf-8", "swagger-ui-bundle.js": b"text/javascript; charset=utf-8", "favicon-32x32.png": b"image/png"}
# Swagger UI sets style attributes and <style> elements from its script: 'unsafe-inline' for styles only.
_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Stackgate API</title>
<link rel="icon" type="image/png" href="{BASE}/favicon-32x32.png">
<link rel="stylesheet" href="{BASE}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{BASE}/swagger-ui-bundle.js"></script>
<script src="{BASE}/init.js"></script>
</body>
</html>
""".encode()

INIT = f"""window.addEventListener("load", function () {{
  window.ui = SwaggerUIBundle({{
    url: "{ADMIN_PREFIX}/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    persistAuthorization: false,
    displayRequestDuration: true,
  }});
}});
""".encode()


@lru_cache(maxsize=None)
def _dist_file(name: str) -> bytes:
    package, folder = _DIST
    return files(package).joinpath(folder, name).read_bytes()


def asset(sub: str) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """``(body, content type, headers)`` of the viewer's page (``""``, ``"/"``) or one of its files."""
    if sub in ("", "/"):
        return PAGE, b"text/html; charset=utf-8", _HEADERS
    name = sub.removeprefix("/")
    if name == "init.js":
        return INIT, b"text/javascript; charset=utf-8", _HEADERS
    if name in _DIST_FILES:
        try:
            return _dist_file(name), _DIST_FILES[name], _HEADERS
        except (ModuleNotFoundError, OSError) as exc:  # the package is a dependency; say so if it is missing
            raise GatewayError(503, "docs_unavailable", f"Swagger UI's files are not installed (drf-spectacular-sidecar): {exc}") from None
    raise GatewayError(404, "not_found", "Not found.")
