"""Backend kinds: how the gateway reaches a stack.

Each kind is one module with its config schema and its ASGI callable; this
registry is the one list of kinds (the config's ``kind`` choices come from it).
"""

from __future__ import annotations

from typing import Any

from gateway import telemetry
from gateway.backends.asgi import ASGIBackend, ASGIBackendConfig
from gateway.backends.http import HTTPBackend, HTTPBackendConfig
from gateway.backends.static import StaticBackend, StaticBackendConfig
from gateway.backends.wsgi import WSGIBackend, WSGIBackendConfig

KINDS: dict[str, tuple[type, type]] = {
    "wsgi": (WSGIBackendConfig, WSGIBackend),
    "asgi": (ASGIBackendConfig, ASGIBackend),
    "http": (HTTPBackendConfig, HTTPBackend),
    "static": (StaticBackendConfig, StaticBackend),
}


def build_backend(name: str, config: Any) -> Any:
    """Instantiate the backend for a validated config (imports the app); traced with ``[telemetry]`` on."""
    return telemetry.backend_class(KINDS[config.kind][1])(name, config)
