"""``gateway.asgi:app`` for any ASGI server; reads ``STACKGATE_CONFIG`` (default ``./config.toml``).

Like ``stackgate run`` it makes the config file's folder importable, applies the
migrations of a Django backend with ``migrate = true`` first (unless
``STACKGATE_MIGRATE=0``), and runs the bootstrap checks (``gateway.bootstrap``)
whatever the server.
"""

import logging
import os
import sys

from gateway import bootstrap, logs
from gateway.app import create_app
from gateway.cli import use_app_dir
from gateway.migrations import migrate_before_serving
from gateway.config import ConfigError, load_config
from gateway.edge import settings as server_settings

if not logging.getLogger("stackgate").handlers:
    logs.setup(os.environ.get("STACKGATE_LOG_LEVEL", "info"))

try:
    config = load_config()
except ConfigError as exc:  # one line per problem, not a traceback from the server's import
    for problem in exc.problems:
        logging.getLogger("stackgate").error(problem)
    logs.flush()
    sys.exit(bootstrap.EXIT_REFUSED)
server_settings.use(config.server)  # the [server] limits gateway.edge.protocol applies to each connection
use_app_dir(config.source)
if os.environ.get("STACKGATE_MIGRATE", "1") != "0":
    migrate_before_serving(config)
app = bootstrap.guard(
    create_app(config, watch=os.environ.get("STACKGATE_WATCH", "1") != "0", freeze_gc=True), config
)
