"""``kind = "asgi"``: an ASGI application in this process, called directly."""

from __future__ import annotations

from typing import Literal

from gateway.backends.base import AppImportConfig, Backend, load_app
from gateway.types import Receive, Scope, Send


class ASGIBackendConfig(AppImportConfig):
    kind: Literal["asgi"]


class ASGIBackend(Backend):
    kind = "asgi"

    def __init__(self, name: str, config: ASGIBackendConfig) -> None:
        super().__init__(name, config)
        self.app = load_app(config.app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
