"""``gateway.asgi:app`` for any ASGI server; reads ``STACKGATE_CONFIG`` (default ``./config.toml``)."""

import logging
import os

from gateway import logs
from gateway.app import create_app
from gateway.config import load_config

if not logging.getLogger("stackgate").handlers:
    logs.setup(os.environ.get("STACKGATE_LOG_LEVEL", "info"))

app = create_app(load_config(), watch=os.environ.get("STACKGATE_WATCH", "1") != "0", freeze_gc=True)
