"""``kind = "static"``: files from a folder or from installed packages' ``static/``.

Serves Django admin's and DRF's stylesheets and scripts without collectstatic:
``packages = ["rest_framework", "django.contrib.admin"]``.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import model_validator
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles

from gateway.backends.base import Backend
from gateway.errors import GatewayError
from gateway.schema import Schema
from gateway.types import Receive, Scope, Send


class StaticBackendConfig(Schema):
    kind: Literal["static"]
    directory: Optional[str] = None
    """A folder of files (relative to the working directory)."""
    packages: list[str] = []
    """Installed packages whose ``static/`` folder is served."""

    @model_validator(mode="after")
    def _something(self) -> "StaticBackendConfig":
        if self.directory is None and not self.packages:
            raise ValueError('needs "directory" or "packages" (or both)')
        return self


class StaticBackend(Backend):
    kind = "static"

    def __init__(self, name: str, config: StaticBackendConfig) -> None:
        super().__init__(name, config)
        try:
            self.files = StaticFiles(
                directory=config.directory,
                packages=[(package, "static") for package in config.packages] or None,
            )
        except (AssertionError, RuntimeError, ModuleNotFoundError) as exc:
            raise RuntimeError(f"backends.{name}: {exc}") from None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.files(scope, receive, send)
        except HTTPException as exc:
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "static_error")
            message = "Not found." if exc.status_code == 404 else str(exc.detail)
            headers = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
            raise GatewayError(exc.status_code, code, message, headers) from None
