"""The admin endpoints: health and readiness for now."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError
from gateway.routing import ADMIN_PREFIX
from gateway.types import Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.app import Gateway


async def send_json(send: Send, status: int, data: Any, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(data, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AdminApp:
    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        self.endpoints = {
            "/health": self.health,
            "/ready": self.ready,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        endpoint = self.endpoints.get(path[len(ADMIN_PREFIX) :])
        if endpoint is None:
            raise GatewayError(404, "not_found", f"No gateway endpoint at {path}.")
        if scope["method"] not in ("GET", "HEAD"):
            raise GatewayError(405, "method_not_allowed", f'Method "{scope["method"]}" not allowed.', [(b"allow", b"GET, HEAD")])
        await endpoint(scope, receive, send)

    async def health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"status": "ok", "config_version": self.gateway.state.config.digest})

    async def ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        checks = await self.gateway.readiness()
        ok = all(check["ok"] for check in checks.values())
        await send_json(send, 200 if ok else 503, {"status": "ready" if ok else "not_ready", "checks": checks})
