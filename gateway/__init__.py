"""Stackgate: one ASGI endpoint in front of two Python web stacks."""

from gateway.app import create_app
from gateway.config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "create_app", "load_config"]
__version__ = "0.1.0"
