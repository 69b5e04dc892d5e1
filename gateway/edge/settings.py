"""The ``[server]`` table: the HTTP server's limits and timeouts, and their environment overrides.

``gateway.config`` validates it with the rest of the file; the process uses the
table of the config its app was built from (``use``, in ``gateway.asgi``), read
by ``gateway.edge.protocol`` for each new connection and by the WSGI bridge.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional

from pydantic import ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from gateway.schema import Schema, parse_size

ENVIRONMENT = {
    "max_header_bytes": "STACKGATE_MAX_HEADER_BYTES",
    "header_timeout": "STACKGATE_HEADER_TIMEOUT",
    "body_timeout": "STACKGATE_BODY_TIMEOUT",
}
"""Keys an environment variable overrides (the variable wins over the file)."""
MIN_HEADER_BYTES = 1024
RESTART = "a restart is needed: the server's limits are read when it starts"


class _FromEnvironment:
    """A value taken from an environment variable, so that its error names the variable."""

    def __init__(self, name: str, raw: str) -> None:
        self.name, self.raw = name, raw


def _checked(value: Any, parse: Any, form: str) -> Any:
    if isinstance(value, _FromEnvironment):
        try:
            return parse(value.raw)
        except ValueError:
            message = f'{value.name}="{value.raw}" (environment) must be {form}'
            raise PydanticCustomError("environment", "{message}", {"message": message}) from None
    try:
        return parse(value)
    except ValueError:
        raise ValueError(f"must be {form}") from None


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError from None
    if not 0 < seconds < math.inf:
        raise ValueError
    return seconds


def _header_bytes(value: Any) -> int:
    size = parse_size(value.strip() if isinstance(value, str) else value)
    if size < MIN_HEADER_BYTES:
        raise ValueError
    return size


SECONDS = "a positive number of seconds, such as 10 or 2.5"
HEADER_BYTES = f'a size of at least {MIN_HEADER_BYTES} bytes, such as 32768 or "32KiB"'


class ServerSettings(Schema):
    """The ``[server]`` table."""

    max_header_bytes: int = 32 * 1024
    """Largest request line plus headers (431 beyond); also ``STACKGATE_MAX_HEADER_BYTES``."""
    header_timeout: float = 10.0
    """Seconds a request's line and headers may take from its first byte (408 beyond); also ``STACKGATE_HEADER_TIMEOUT``."""
    body_timeout: float = 30.0
    """Seconds a request body may go without a byte (408 beyond); also ``STACKGATE_BODY_TIMEOUT``."""
    keep_alive_timeout: float = 5.0
    """Seconds an idle connection (no request in progress, a new one included) stays open."""
    graceful_timeout: float = 30.0
    """Seconds requests in flight get at shutdown (``stackgate run --graceful-timeout`` wins)."""

    @model_validator(mode="before")
    @classmethod
    def _environment(cls, data: Any, info: Any) -> Any:
        environ = (info.context or {}).get("environ") if info is not None else None
        if environ is None or not isinstance(data, dict):
            return data
        data = dict(data)
        for key, name in ENVIRONMENT.items():
            if environ.get(name):
                data[key] = _FromEnvironment(name, environ[name])
        return data

    @field_validator("max_header_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return _checked(value, _header_bytes, HEADER_BYTES)

    @field_validator("header_timeout", "body_timeout", "keep_alive_timeout", "graceful_timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float:
        return _checked(value, _seconds, SECONDS)

    def summary(self, environ: Optional[Mapping[str, str]] = None) -> str:
        """One line, ``key=value`` each, naming the environment variable where one set the value."""
        environ = os.environ if environ is None else environ
        parts = []
        for key in type(self).model_fields:
            value = getattr(self, key)
            text = f"{value:g}s" if isinstance(value, float) else str(value)
            name = ENVIRONMENT.get(key)
            parts.append(f"{key}={text}" + (f" (${name})" if name and environ.get(name) else ""))
        return " ".join(parts)


def _validation_message(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"server.{where}: {error['msg'].removeprefix('Value error, ')}"


def from_environment(environ: Optional[Mapping[str, str]] = None) -> ServerSettings:
    """The defaults with the environment's overrides (no config file); ValueError names a bad variable."""
    try:
        return ServerSettings.model_validate({}, context={"environ": os.environ if environ is None else environ})
    except ValidationError as exc:
        raise ValueError(_validation_message(exc)) from None


def body_stalled(seconds: float) -> str:
    """The 408 message for a body that stalled: one text for the protocol and the WSGI bridge."""
    return f"No request body bytes arrived for {seconds:g} seconds."


def restart_needed(serving: ServerSettings, new: ServerSettings, source: str) -> list[str]:
    """``FILE: server.KEY: ...`` for each key a hot reload would change: none of them applies before a restart."""
    return [
        f"{source}: server.{key}: changed ({getattr(serving, key):g} -> {getattr(new, key):g}); {RESTART}"
        for key in type(new).model_fields
        if getattr(serving, key) != getattr(new, key)
    ]


_CURRENT: Optional[ServerSettings] = None


def use(settings: ServerSettings) -> None:
    """Make ``settings`` this process's limits (``gateway.asgi`` does, with its config's table)."""
    global _CURRENT
    _CURRENT = settings


def current() -> ServerSettings:
    """This process's limits: those given to ``use``, else the defaults with the environment's overrides."""
    if _CURRENT is None:
        use(from_environment())
    return _CURRENT  # type: ignore[return-value]
