"""What every backend kind shares."""

from __future__ import annotations

from typing import Any

from pydantic import field_validator

from gateway.schema import Schema

_IMPORT_FORM = 'must be an import string in the form "<module>:<attribute>", e.g. "backends.flask_site.wsgi:app"'


class AppImportConfig(Schema):
    """Fields of backends that load an application by import string."""

    app: str
    """``module:attribute`` of the application object (a restart is needed to change it)."""

    @field_validator("app")
    @classmethod
    def _app(cls, value: str) -> str:
        module, _, attribute = value.partition(":")
        if not module or not attribute or not all(part.isidentifier() for part in module.split(".")):
            raise ValueError(_IMPORT_FORM)
        if not all(part.isidentifier() for part in attribute.split(".")):
            raise ValueError(_IMPORT_FORM)
        return value


def load_app(import_string: str) -> Any:
    from uvicorn.importer import import_from_string

    return import_from_string(import_string)


class Backend:
    """Base of the backend kinds: a name, its config, an ASGI ``__call__``."""

    kind: str = ""

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config

    def restart_key(self) -> Any:
        """Config that cannot change without a restart (compared on reload)."""
        return self.config

    def stats(self) -> dict[str, Any]:
        return {}

    async def startup(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass
