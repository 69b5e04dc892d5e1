"""What every backend kind shares."""

from __future__ import annotations

from typing import Any

from pydantic import field_validator

from gateway.schema import Schema

_IMPORT_FORM = (
    'must be an import string in the form "<module>:<attribute>" or "<module>:<factory>()", '
    'e.g. "mysite.wsgi:application" or "myapp:create_app()"'
)
FACTORY_CALL = "()"


class AppImportConfig(Schema):
    """Fields of backends that load an application by import string."""

    app: str
    """``module:attribute`` of the application object, or ``module:factory()`` to call a factory
    without arguments, as Flask's ``create_app()`` (a restart is needed to change it)."""

    @field_validator("app")
    @classmethod
    def _app(cls, value: str) -> str:
        module, _, attribute = value.partition(":")
        attribute = attribute.removesuffix(FACTORY_CALL)
        if not module or not attribute or not all(part.isidentifier() for part in module.split(".")):
            raise ValueError(_IMPORT_FORM)
        if not all(part.isidentifier() for part in attribute.split(".")):
            raise ValueError(_IMPORT_FORM)
        return value


def load_app(import_string: str) -> Any:
    """The object an ``app`` import string names; ``module:factory()`` is the factory's return value."""
    from uvicorn.importer import import_from_string

    if import_string.endswith(FACTORY_CALL):
        factory = import_from_string(import_string.removesuffix(FACTORY_CALL))
        if not callable(factory):
            raise TypeError(f'"{import_string}": {type(factory).__name__} is not callable, so it is not a factory')
        return factory()
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
