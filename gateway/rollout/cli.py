"""``stackgate rollout status|pause|resume|promote|abort``, and what ``stackgate check`` and ``stackgate routes`` say of rollouts.

The verbs read the config to find the plan and its state store, and act on
the store directly (Redis, or the file beside the config), by compare-and-set:
from any host that can reach the store, with no credentials for the admin API.
Every worker follows within a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional

from gateway.rollout import engine
from gateway.rollout.admin import planned_routes
from gateway.rollout.manager import describe, operate
from gateway.rollout.store import StoreError, store_for


def check_report(config: Any) -> list[str]:
    """One line per rollout route: what serving this config will do to the running rollout."""
    routes = planned_routes(config)
    if not routes:
        return []
    store = store_for(config)
    index = {route.label: i for i, route in enumerate(config.routes)}
    lines = []
    for label, route in routes.items():
        where = f"{config.source}: routes[{index[label]}].rollout"
        try:
            state = store.load(label)
        except StoreError as exc:
            lines.append(f"{where}: cannot read the rollout state ({exc}); the plan applies when the gateway reaches it")
            continue
        source = next(name for name in route.split if name != route.rollout.target)
        _, _, words = engine.apply_plan(state, route.rollout, label, source, time.time())
        lines.append(f"{where}: {words} [{store.where}]")
    return lines


def weights_in_force(config: Any) -> dict[str, tuple[Optional[dict[str, float]], str]]:
    """For ``stackgate routes``: per rollout route, the weights its stored state sets, and a note that says whose.

    The weights are None when no rollout of the plan's target is stored yet, or when the store cannot
    be read: the caller shows the config's. The store is read as ``rollout status`` reads it, and
    nothing is written (no state, no lock file).
    """
    routes = planned_routes(config)
    if not routes:
        return {}
    store = store_for(config)
    out: dict[str, tuple[Optional[dict[str, float]], str]] = {}
    failure = None  # one unreachable store: said for every route, tried once
    for label, route in routes.items():
        if failure is None:
            try:
                item = describe(store, route)
            except StoreError as exc:
                failure = f"rollout state unknown, config weights shown; the store cannot be read: {exc}"
        if failure is not None:
            out[label] = (None, failure)
        elif item["status"] == "not_started":
            first = f"{route.rollout.percent(0):g} % on {route.rollout.target}"
            out[label] = (None, f"rollout not started: config weights; serving this config starts it at {first}")
        else:
            where = f'step {item["step"] + 1} of {len(item["plan"]["steps"])}, ' if item["step"] >= 0 else ""
            weights = engine.weights(item, item["target"], item["source"])
            out[label] = (weights, f'rollout: {where}{item["status"]}')
    return out


def add_parser(verbs: Any, default_config: str) -> None:
    rollout = verbs.add_parser(
        "rollout",
        help="show or steer the gated rollouts of split routes (status, pause, resume, promote, abort)",
        description="Acts on the rollout state store the config names (Redis of [throttle] storage, else "
        "NAME.rollout.json beside the config); every gateway worker and host follows within a second.",
    )
    rollout.add_argument("action", choices=["status", *engine.ACTIONS])
    rollout.add_argument("route", nargs="?", help="the route's name or prefix (default: the only route with a rollout)")
    rollout.add_argument("--config", default=os.environ.get("STACKGATE_CONFIG", default_config), help="config file (default: ./config.toml)")
    rollout.add_argument("--to-last", action="store_true", help="promote: go to the last step (100 %%) instead of the next one")
    rollout.add_argument("--json", action="store_true", help="status: print JSON")


def run(args: argparse.Namespace, config: Any) -> int:
    routes = planned_routes(config)
    if not routes:
        print(f"{config.source}: no route has a rollout plan", file=sys.stderr)
        return 2
    if args.route is None:
        if len(routes) > 1 and args.action != "status":
            print(f"{config.source}: name the route: {', '.join(sorted(routes))}", file=sys.stderr)
            return 2
        chosen = list(routes.values()) if args.action == "status" else [next(iter(routes.values()))]
    else:
        match = [r for r in routes.values() if args.route in (r.label, r.prefix)]
        if not match:
            print(f'{config.source}: no rollout on route "{args.route}"; routes with one: {", ".join(sorted(routes))}', file=sys.stderr)
            return 2
        chosen = match
    store = store_for(config)
    try:
        if args.action == "status":
            described = [describe(store, route) for route in chosen]
            if args.json:
                print(json.dumps(described, indent=2))
            else:
                for item in described:
                    print(_status_line(item))
            return 0
        route = chosen[0]
        state = operate(store, route.label, route.rollout, args.action, full=args.to_last, who="cli:" + _user(), log=False)
    except engine.RefusedAction as exc:
        print(f"{route.label}: cannot {args.action}: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"{config.source}: the rollout state store cannot be reached: {exc}", file=sys.stderr)
        return 1
    print(_status_line(describe(store, route)))
    return 0


def _status_line(item: dict) -> str:
    line = f'{item["route"]}: {item["status"]} at {item["percent"]:g} % on {item["target"]} (from {item["source"]})'
    if item["step"] >= 0:
        line += f', step {item["step"] + 1} of {len(item["plan"]["steps"])}, {item.get("window_seconds", 0):g} s in the step'
    figures = item.get("figures")
    if figures:
        line += f', target {figures["target"]["requests"]} requests'
    if item.get("waiting_for"):
        line += f'; waiting for {item["waiting_for"]}'
    failure = item.get("last_failure")
    if failure:
        line += f'; last failure {failure["time"]}: {failure["reason"]}'
    return line


def _user() -> str:
    try:
        return os.getlogin()
    except OSError:
        return str(os.getuid())
