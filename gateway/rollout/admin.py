"""``/_stackgate/rollouts``: every rollout's state, live figures and gates; operator actions (admin role).

``GET /_stackgate/rollouts``, ``GET /_stackgate/rollouts/ROUTE`` and
``POST /_stackgate/rollouts/ROUTE/ACTION`` (``pause``, ``resume``, ``promote``
(``?to=last`` for the last step), ``abort``). See docs/rollouts.md.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from gateway.errors import GatewayError
from gateway.rollout import engine
from gateway.rollout.manager import describe, operate
from gateway.rollout.store import StoreError, store_for

NOT_FOUND = "rollout_not_found"
REFUSED = "rollout_action_refused"
UNAVAILABLE = "rollout_store_unavailable"


def planned_routes(config: Any) -> dict[str, Any]:
    """Route label -> route, for the routes with a ``rollout`` plan."""
    return {route.label: route for route in config.routes if getattr(route, "rollout", None) is not None}


def _store(gateway: Any) -> Any:
    manager = gateway.services.rollout
    return manager.store if manager is not None and manager.store is not None else store_for(gateway.compiled.config)


def _route(gateway: Any, label: str) -> Any:
    routes = planned_routes(gateway.compiled.config)
    if label not in routes:
        known = ", ".join(sorted(routes)) or "(none)"
        raise GatewayError(404, NOT_FOUND, f'No rollout on route "{label}"; routes with a rollout: {known}.')
    return routes[label]


async def listing(gateway: Any) -> dict:
    store = _store(gateway)
    routes = planned_routes(gateway.compiled.config)
    try:
        described = await asyncio.to_thread(lambda: [describe(store, route) for route in routes.values()])
    except StoreError as exc:
        raise GatewayError(503, UNAVAILABLE, f"The rollout state store cannot be read: {exc}") from None
    return {"rollouts": {item["route"]: item for item in described}}


async def one(gateway: Any, label: str) -> dict:
    route = _route(gateway, label)
    try:
        return await asyncio.to_thread(describe, _store(gateway), route)
    except StoreError as exc:
        raise GatewayError(503, UNAVAILABLE, f"The rollout state store cannot be read: {exc}") from None


async def act(gateway: Any, label: str, action: str, query: bytes, who: str) -> dict:
    if action not in engine.ACTIONS:
        raise GatewayError(404, "not_found", f'Unknown rollout action "{action}"; one of {", ".join(engine.ACTIONS)}.')
    route = _route(gateway, label)
    to = parse_qs(query.decode("latin-1")).get("to", ["next"])[0]
    if to not in ("next", "last"):
        raise GatewayError(400, "bad_request", 'The "to" parameter of promote must be "next" or "last".')
    store = _store(gateway)
    try:
        state = await asyncio.to_thread(operate, store, route.label, route.rollout, action, to == "last", who)
    except engine.RefusedAction as exc:
        raise GatewayError(409, REFUSED, f"Cannot {action} the rollout of {label}: {exc}.") from None
    except StoreError as exc:
        raise GatewayError(503, UNAVAILABLE, f"The rollout state store cannot be changed: {exc}") from None
    manager = gateway.services.rollout
    runtime = manager.routes.get(route.label) if manager is not None else None
    if runtime is not None:
        runtime.follow(state)  # this worker at once; the others within a tick
    return await one(gateway, label)
