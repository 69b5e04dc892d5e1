"""(c) One stack's WSGI app under its prefix through a bare ``a2wsgi.WSGIMiddleware``, nothing else.

Which stack comes from the environment (``BENCH_WSGI_APP``, ``BENCH_PREFIX``):
uvicorn's workers import this module by name.
"""

import importlib
import os

from a2wsgi import WSGIMiddleware
from starlette.applications import Starlette
from starlette.routing import Mount

os.environ.pop("SCRIPT_NAME", None)  # a2wsgi would apply it instead of the mount's root_path

_module, _attribute = os.environ["BENCH_WSGI_APP"].split(":")
wsgi_app = getattr(importlib.import_module(_module), _attribute)

app = Starlette(routes=[Mount(os.environ["BENCH_PREFIX"], app=WSGIMiddleware(wsgi_app))])
