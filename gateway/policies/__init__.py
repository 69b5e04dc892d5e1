"""Per-route policies: each module holds its config schema and its ASGI handler.

A policy module exposes ``wrap(app, route, config, runtime) -> app``: it
returns ``app`` itself when the route does not use it, or an ASGI callable
that runs the policy and then ``app``. ``CHAIN`` is the fixed order a request
meets them in (outermost first). ``runtime`` is state that outlives a config
reload (throttle storage, counters), keyed by the policy's name.
"""

from __future__ import annotations

import importlib
from typing import Any

CHAIN: tuple[str, ...] = ("auth", "throttle", "split")


class Runtime(dict):
    """State that survives a config reload; a policy keeps its own under its name."""


def build_chain(app: Any, route: Any, config: Any, runtime: Runtime) -> Any:
    for name in reversed(CHAIN):
        module = importlib.import_module(f"gateway.policies.{name}")
        app = module.wrap(app, route, config, runtime)
    return app
