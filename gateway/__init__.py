"""Stackgate: one ASGI endpoint in front of two Python web stacks.

The names below load on first use (PEP 562), so that importing one module of
the package (``gateway.migrations`` from a stack's ``wsgi`` module, say, or the
CLI) does not import the whole gateway with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app import create_app
    from gateway.config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "create_app", "load_config"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    if name in ("Config", "ConfigError", "load_config"):
        from gateway import config

        return getattr(config, name)
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
