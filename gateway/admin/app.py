"""``/_stackgate/...``: health, readiness, metrics, status, stats, mirror, migration, dashboard.

See docs/admin-api.md. ``health``, ``ready`` and ``metrics`` are open (probes
and scrapers); the rest needs a consumer with one of ``[gateway].admin_roles``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from starlette.routing import Route, Router

from gateway import metrics
from gateway.edge import shared_status
from gateway import openapi
from gateway.openapi import viewer
from gateway.admin.series import TrafficSeries
from gateway.context import SCOPE_KEY
from gateway.errors import GatewayError
from gateway.rollout import admin as rollout_admin
from gateway.routing import ADMIN_PREFIX
from gateway.types import Receive, Scope, Send

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
_ASSET_TYPES = {".html": b"text/html; charset=utf-8", ".css": b"text/css; charset=utf-8", ".js": b"text/javascript; charset=utf-8"}
_SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]
_PAGE_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]

_ROLLOUT_ACTIONS = ADMIN_PREFIX + "/rollouts/"
"""The one place the admin API takes a POST: operator actions on a rollout."""



def _is_rollout_action(path: str) -> bool:
    """``/_stackgate/rollouts/ROUTE/ACTION``: the one shape of path the admin API takes a POST on."""
    return path.startswith(_ROLLOUT_ACTIONS) and "/" in path[len(_ROLLOUT_ACTIONS) :].strip("/")


Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_bytes(send: Send, status: int, body: bytes, content_type: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *_SECURITY_HEADERS,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, data: Any, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send_bytes(send, status, json.dumps(data, separators=(",", ":")).encode(), b"application/json", headers)


def workers_status() -> dict[str, Any]:
    """The worker processes: with ``--workers N``, the supervisor's view (rolling restarts included)."""
    status = shared_status.workers_status()
    if status is not None:
        return status
    return {"supervisor": None, "count": 1, "pids": [os.getpid()], "generation": 1, "restarting": False,
            "restart_signal": None, "last_restart": None}


class AdminApp:
    """The ``/_stackgate`` endpoints: a Starlette ``Router`` of ``Route``s, dispatched by the gateway's edge.

    It sits outside user middleware and ``[gateway] allowed_hosts``; its errors
    are ``GatewayError``s in the one JSON shape. ``gateway`` is read for state
    only (the compiled config, services, reloader status).
    """

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.series = TrafficSeries()
        open_ = {
            "/health": self.health, "/ready": self.ready, "/metrics": self.metrics,
            "/openapi.json": self.openapi, "/docs": self.docs, "/docs/{name:path}": self.docs,
        }
        protected = {"/": self.dashboard, "/status": self.status, "/stats": self.stats, "/mirror": self.mirror}
        protected["/migration"] = self.migration  # docs/migration.md
        routes = [Route(path, _endpoint(fn), methods=["GET", "HEAD"]) for path, fn in open_.items()]
        routes += [Route(path, _endpoint(fn, self._require_admin), methods=["GET", "HEAD"]) for path, fn in protected.items()]
        routes.append(Route("/dashboard/{name:path}", _endpoint(self.asset, self._require_admin), methods=["GET", "HEAD"]))
        routes += self._rollout_routes()
        self.router = Router(routes, redirect_slashes=False, default=_not_found)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        if scope["method"] not in ("GET", "HEAD") and not (scope["method"] == "POST" and _is_rollout_action(path)):
            raise GatewayError(405, "method_not_allowed", f'Method "{scope["method"]}" not allowed.', [(b"allow", b"GET, HEAD")])
        sub = dict(scope)
        sub["path"] = path if path != ADMIN_PREFIX else ADMIN_PREFIX + "/"
        sub["root_path"] = ADMIN_PREFIX
        sub.pop("router", None)
        await self.router(sub, receive, send)

    # --- gated rollouts (gateway.rollout.admin) ---------------------------------------------------
    def _rollout_routes(self) -> list[Route]:
        guard = self._require_admin
        return [
            Route("/rollouts", _endpoint(self.rollouts, guard), methods=["GET", "HEAD"]),
            Route("/rollouts/{route:path}/{action}", _endpoint(self.rollout_action, guard), methods=["POST"]),
            Route("/rollouts/{route:path}", _endpoint(self.rollout, guard), methods=["GET", "HEAD"]),
        ]

    async def rollouts(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, await rollout_admin.listing(self.gateway))

    async def rollout(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, await rollout_admin.one(self.gateway, scope["path_params"]["route"]))

    async def rollout_action(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        who = "admin:" + (scope[SCOPE_KEY].identity or "-")
        await send_json(send, 200, await rollout_admin.act(self.gateway, params["route"], params["action"], scope.get("query_string", b""), who))

    async def _require_admin(self, scope: Scope) -> None:
        await self.gateway.require_admin(scope)

    async def health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"status": "ok", "config_version": self.gateway.compiled.config.digest, "worker": os.getpid()})

    async def ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        checks = await self.gateway.readiness()
        ok = all(check["ok"] for check in checks.values())
        await send_json(send, 200 if ok else 503, {"status": "ready" if ok else "not_ready", "checks": checks})

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, metrics.exposition(), metrics.CONTENT_TYPE)

    async def openapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, await openapi.document(self.gateway.compiled.config), b"application/json")

    async def docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, content_type, headers = viewer.asset(scope["path"][len(ADMIN_PREFIX) + len("/docs") :])
        await send_bytes(send, 200, body, content_type, headers)

    async def status(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, {**self.gateway.status(), "workers": workers_status()})

    async def mirror(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, self.gateway.mirror_stats())

    async def migration(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The migration report; ``?format=json`` answers it as a file to download."""
        from urllib.parse import parse_qs

        from gateway.shadow.report import migration_report

        gateway = self.gateway
        rollouts: dict[str, Any] = {}
        planned = rollout_admin.planned_routes(gateway.compiled.config)
        if planned:
            try:
                rollouts = (await rollout_admin.listing(gateway))["rollouts"]
            except GatewayError as exc:  # the state store is down: the report still answers, and says so
                rollouts = {label: {"error": exc.message} for label in planned}
        report = migration_report(gateway.compiled.config, gateway.services, rollouts)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        headers = []
        if query.get("format") == ["json"]:
            stamp = report["generated_at"].replace(":", "").replace("-", "")
            headers.append((b"content-disposition", f'attachment; filename="stackgate-migration-{stamp}.json"'.encode()))
        await send_json(send, 200, report, headers)

    async def stats(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        self.series.sample()
        data = {
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": gateway.status(),
            "routes": gateway.route_summary(),
            "backends": {name: {"kind": b.kind, **b.stats()} for name, b in gateway.backends.items()},
            "totals": metrics.totals(),
            "series": self.series.as_dict(),
            "mirror": gateway.mirror_stats(),
        }
        await send_json(send, 200, data)

    async def dashboard(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._file(send, DASHBOARD_DIR / "index.html")

    async def asset(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path"].rsplit("/", 1)[1]
        if name not in {p.name for p in DASHBOARD_DIR.iterdir()} or name.startswith("."):
            raise GatewayError(404, "not_found", "Not found.")
        await self._file(send, DASHBOARD_DIR / name)

    async def _file(self, send: Send, path: Path) -> None:
        try:
            body = path.read_bytes()
        except OSError:
            raise GatewayError(404, "not_found", "Not found.") from None
        await send_bytes(send, 200, body, _ASSET_TYPES.get(path.suffix, b"application/octet-stream"), _PAGE_HEADERS)


def _endpoint(fn: Endpoint, guard: Optional[Callable[[Scope], Awaitable[None]]] = None) -> Endpoint:
    """An ASGI endpoint for ``Route`` (a class instance, so Starlette passes the raw scope), behind ``guard``."""
    return _Endpoint(fn, guard)


class _Endpoint:
    def __init__(self, fn: Endpoint, guard: Optional[Callable[[Scope], Awaitable[None]]]) -> None:
        self.fn = fn
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.guard is not None:
            await self.guard(scope)
        await self.fn(scope, receive, send)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    raise GatewayError(404, "not_found", f"No gateway endpoint at {scope['path']}.")
