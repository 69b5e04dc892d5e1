"""Per-route policies, found in one registry: the built-ins and third-party packages.

A policy is one module with a pydantic config schema and an ASGI handler
factory. Built-ins (``auth``, ``throttle``, ``split``) register themselves
here; a third-party package registers through the entry-point group
``stackgate.policies`` (the entry point's name is the route key, its value
the module). A request meets the policies in ``order`` (outermost first):
auth 100, third-party 200 unless the module sets ``ORDER``, throttle 300,
split 500 (innermost: it chooses the backend). See docs/extending.md.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Optional

from gateway import telemetry
from gateway.context import SCOPE_KEY, Services

ENTRY_POINT_GROUP = "stackgate.policies"
THIRD_PARTY_ORDER = 200
"""Where a third-party policy sits unless it sets ``ORDER``: after auth (100), before throttle (300)."""
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

Wrap = Callable[..., Any]


@dataclass(frozen=True)
class Policy:
    """One registered policy."""

    name: str
    """Its route key in config.toml (a built-in's keys come from its ``fields`` mixin instead)."""
    order: int
    """Outermost first."""
    build: Wrap
    """``build(app, route, config, services) -> app``: ``app`` itself when the route does not use it."""
    fields: Optional[type] = None
    """A built-in's route-key mixin (``auth``, ``roles``, ...)."""
    schema: Optional[type] = None
    """A third-party policy's options model: the route key ``NAME = {...}`` is validated by it."""
    source: str = ""
    """Where it came from: ``builtin`` or the entry point's value."""


def _builtin(name: str, order: int, fields: str) -> Policy:
    module = importlib.import_module(f"gateway.policies.{name}")
    return Policy(name=name, order=order, build=module.wrap, fields=getattr(module, fields), source="builtin")


class PolicyError(Exception):
    """A third-party policy that cannot be registered."""


def from_module(name: str, module: Any, source: str) -> Policy:
    """A third-party policy from its module: ``Options`` (pydantic) and ``wrap(app, options, route, services)``."""
    if not _NAME.match(name):
        raise PolicyError(f'policy "{name}" ({source}): the entry point name must be a lower-case key such as "ip_allow"')
    schema = getattr(module, "Options", None)
    wrap = getattr(module, "wrap", None)
    from pydantic import BaseModel

    if not (isinstance(schema, type) and issubclass(schema, BaseModel)) or not callable(wrap):
        raise PolicyError(
            f'policy "{name}" ({source}) must define "Options" (a pydantic model) and "wrap(app, options, route, services)"'
        )
    order = getattr(module, "ORDER", THIRD_PARTY_ORDER)

    def build(app: Any, route: Any, config: Any, services: Services) -> Any:
        options = getattr(route, name, None)
        return app if options is None else wrap(app, options, route, services)

    return Policy(name=name, order=int(order), build=build, schema=schema, source=source)


@functools.cache
def registry() -> tuple[Policy, ...]:
    """Every policy, in the order a request meets them (read once per process)."""
    policies = [
        _builtin("auth", 100, "RouteAuthFields"),
        _builtin("throttle", 300, "RouteThrottleFields"),
        _builtin("split", 500, "RouteSplitFields"),
    ]
    taken = {p.name for p in policies} | _builtin_keys(policies)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in taken:
            raise PolicyError(f'policy "{entry.name}" ({entry.value}): the name is taken by a built-in key or another policy')
        try:
            module = entry.load()
        except Exception as exc:
            raise PolicyError(f'policy "{entry.name}" ({entry.value}): cannot import it: {type(exc).__name__}: {exc}') from exc
        policies.append(from_module(entry.name, module, entry.value))
        taken.add(entry.name)
    return tuple(sorted(policies, key=lambda p: p.order))


def _builtin_keys(policies: list[Policy]) -> set[str]:
    from gateway.routing import RouteFields

    keys = set(RouteFields.model_fields)
    for policy in policies:
        if policy.fields is not None:
            keys |= set(policy.fields.model_fields)
    return keys


def build_chain(app: Any, route: Any, config: Any, services: Services) -> Any:
    """``app`` behind the route's policies, the first in order outermost."""
    traced = telemetry.policy_tracer()  # None with tracing off: the chain is exactly the policies
    for policy in reversed(registry()):
        if traced is None:
            app = policy.build(app, route, config, services)
        else:
            app = traced(policy.name, policy.build, app, route, config, services)
    return app


class WithPolicies:
    """A user route's app behind a config route's policies: ``with_policies(app, route="reports")``.

    ``route`` is a ``[[routes]]`` entry's label (its ``name``, else its prefix).
    The gateway builds the chain when it compiles a config (at start and on
    every reload), with ``app`` where the route's backend would be; a request
    then meets exactly the policies (and the body limit) that route gives.
    """

    def __init__(self, app: Any, route: str) -> None:
        self.app = app
        self.route = route

    def build(self, config: Any, services: Services) -> Any:
        route = next((r for r in config.routes if r.label == self.route), None)
        if route is None:
            known = ", ".join(sorted(f'"{r.label}"' for r in config.routes))
            raise PolicyError(f'with_policies: no [[routes]] entry named "{self.route}"; known: {known}')
        if getattr(route, "split", None):
            raise PolicyError(f'with_policies: route "{self.route}" splits among backends; name a route with one backend')
        return route, build_chain(self.app, route, config, services)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ctx = scope[SCOPE_KEY]
        route, chain = ctx.compiled.user_chains[id(self)]
        from gateway.routing import check_declared_length

        limit = route.max_body_size
        ctx.max_body_size = limit = limit if limit is not None else ctx.compiled.config.gateway.max_body_size
        check_declared_length(scope["headers"], limit)
        await chain(scope, receive, send)


def with_policies(app: Any, route: str) -> WithPolicies:
    """``app`` (any ASGI app, for a Starlette ``Route`` or ``Mount``) behind the policies of config route ``route``."""
    return WithPolicies(app, route)
