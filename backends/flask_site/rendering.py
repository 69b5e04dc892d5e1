"""JSON responses written the way DRF's ``JSONRenderer`` writes them."""

from __future__ import annotations

import json

from flask import current_app


def render_json(data, code: int = 200, headers=None):
    """Compact UTF-8 JSON with the key order of ``data``; Flask's own provider would sort keys."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return current_app.response_class(body, code, headers, mimetype="application/json")
