"""A/B routing: a weighted, sticky split of one route between backends.

Sticky without shared state: the backend is chosen by weighted rendezvous
hashing of the route and the client's sticky key (the consumer id, or the
``stackgate_variant`` cookie), so every process chooses alike and a weight
change moves only the clients that must move. A weight of 0 drains a backend.
Each answer is counted by endpoint and backend for the migration report
(``gateway.shadow.endpoints``, ``gateway.shadow.report``).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from typing import Any, Optional

from pydantic import Field, ValidationInfo, field_validator

from gateway import headers as H
from gateway import metrics
from gateway.context import SCOPE_KEY, RequestContext, Services
from gateway.errors import GatewayError
from gateway.rollout.plan import RolloutPlan, check_route
from gateway.schema import Schema
from gateway.types import Receive, Scope, Send

COOKIE = "stackgate_variant"
COOKIE_MAX_AGE = 30 * 24 * 3600
_COOKIE_BYTES = COOKIE.encode() + b"="


class SplitSettings(Schema):
    """The ``[split]`` table."""

    override_roles: list[str] = []
    """Roles whose ``X-Stackgate-Backend`` header picks the backend; ignored for everyone else."""
    mirror_max_body: int = Field(1 << 20, ge=1024)
    """Responses larger than this are not compared."""
    mirror_keep: int = Field(50, ge=1, le=10_000)
    """How many recent mismatches each route keeps for ``/_stackgate/mirror``."""
    mirror_process: bool = True
    """Run shadow copies to WSGI stacks in a process of their own, at the lowest CPU priority."""
    mirror_duty_cycle: float = Field(0.2, gt=0, le=1)
    """Share of the time that process may spend running copies (it rests after each in proportion); more are skipped."""
    mirror_noise_share: float = Field(0.05, ge=0, le=1)
    """Share of mirrored requests also replayed once more on each stack to learn noise, whatever their
    outcome (pairs that differ on a field not yet settled are always checked; docs/migration.md)."""


class RouteSplitFields(Schema):
    """Route-level keys of the split policy."""

    split: Optional[dict[str, int]] = None
    """Backend name -> weight (0 drains it; one at least must be positive); replaces ``backend``."""
    mirror: bool = False
    """Send safe requests (GET, HEAD) to the backend that did not serve them too, and compare."""
    mirror_ignore: list[str] = []
    """JSON keys left out of the comparison at any depth (e.g. ``updated_at``)."""
    mirror_significant: list[str] = []
    """Fields never treated as noise: a key at any depth (``title``) or a path (``results[].title``)."""
    hide_served_by: bool = False
    """Leave out the ``X-Served-By`` response header."""
    rollout: Optional[RolloutPlan] = None
    """A gated rollout to one backend of the split (docs/rollouts.md): it sets the weights while it runs."""

    @field_validator("split")
    @classmethod
    def _split(cls, value: Optional[dict[str, int]]) -> Optional[dict[str, int]]:
        if value is not None:
            if len(value) < 2:
                raise ValueError("needs at least two backends, e.g. { django = 90, flask = 10 }")
            for name, weight in value.items():
                if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                    raise ValueError(f'the weight of "{name}" must be a whole number, 0 (drained) or more')
            if not any(value.values()):
                raise ValueError("needs at least one positive weight: with every weight 0 no backend could serve")
        return value

    @field_validator("mirror_significant")
    @classmethod
    def _mirror_significant(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not entry.strip() or entry != entry.strip():
                raise ValueError(f'"{entry}" is not a field: give a key ("title") or a path ("results[].title")')
        return value

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, value: bool, info: ValidationInfo) -> bool:
        # A "split" that failed its own check is missing from info.data: that is its problem, not mirror's.
        if value and "split" in info.data and not info.data["split"]:
            raise ValueError('needs "split": mirroring compares the backends of a split')
        return value

    @field_validator("rollout")
    @classmethod
    def _rollout(cls, value: Optional[RolloutPlan], info: ValidationInfo) -> Optional[RolloutPlan]:
        if value is not None and "split" in info.data:
            problem = check_route(_Route(info.data["split"], value))
            if problem:
                raise ValueError(problem)
        return value


class _Route:
    """What ``check_route`` reads of a route, while the route is being validated."""

    def __init__(self, split: Optional[dict[str, int]], rollout: RolloutPlan) -> None:
        self.split, self.rollout = split, rollout


def _unit(route: bytes, key: bytes, backend: bytes) -> float:
    """A uniform number in (0, 1) from the hash of (route, key, backend)."""
    digest = hashlib.blake2b(route + b"\x00" + key + b"\x00" + backend, digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


def choose(route: bytes, key: bytes, weights: list[tuple[bytes, float]]) -> bytes:
    """Weighted rendezvous hashing: the backend with the highest ``-w / ln(u)`` wins.

    A backend of weight 0 never wins (while one weight is positive), and the
    others win exactly where they did before its weight dropped to 0.
    """
    best, best_score = weights[0][0], -math.inf
    for backend, weight in weights:
        if weight <= 0:
            continue
        score = -weight / math.log(_unit(route, key, backend))
        if score > best_score:
            best, best_score = backend, score
    return best


def _cookie(headers: list[tuple[bytes, bytes]]) -> Optional[bytes]:
    for name, value in headers:
        if name == b"cookie" and _COOKIE_BYTES in value:
            for part in value.split(b";"):
                part = part.strip()
                if part.startswith(_COOKIE_BYTES):
                    token = part[len(_COOKIE_BYTES) :]
                    if 8 <= len(token) <= 64 and token.isalnum():
                        return token
    return None


class Split:
    """The ASGI handler of a split route: choose, mark, and (optionally) mirror."""

    def __init__(
        self, route: Any, backends: dict[str, Any], settings: SplitSettings, mirror: Any = None,
        endpoints: Any = None, rollout: Any = None,
    ) -> None:
        self.route_key = route.label.encode()
        self.route_label = route.label
        self.backends = {name.encode(): backends[name] for name in route.split}
        self.weights = [(name.encode(), float(weight)) for name, weight in route.split.items()]
        self.override_roles = frozenset(settings.override_roles)
        self.served_by = not route.hide_served_by
        self.mirror = mirror
        self.endpoints = endpoints
        self.rollout = rollout
        """The route's ``gateway.rollout.manager.RouteRollout``: its weights win over ``split``'s, and it counts answers."""

    def pick(self, scope: Scope) -> tuple[bytes, Optional[bytes]]:
        """(backend name, new cookie token to set or None)."""
        headers = scope["headers"]
        ctx: RequestContext = scope[SCOPE_KEY]
        if self.override_roles and self.override_roles.intersection(ctx.roles):
            wanted = ctx.override
            if wanted in self.backends:
                return wanted, None
        rollout = self.rollout
        if rollout is not None and not rollout.sticky:
            return rollout.draw(), None
        identity = ctx.identity
        weights = self.weights if rollout is None else rollout.weights
        if identity:
            return choose(self.route_key, b"c:" + identity.encode(), weights), None
        token = _cookie(headers)
        new = None
        if token is None:
            token = new = secrets.token_hex(16).encode()
        return choose(self.route_key, b"a:" + token, weights), new

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name, new_cookie = self.pick(scope)
        ctx: RequestContext = scope[SCOPE_KEY]
        headers = ctx.response_headers
        if self.served_by:
            headers.append((H.SERVED_BY, name))
        if new_cookie is not None:
            headers.append(
                (
                    b"set-cookie",
                    b"%s=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Lax" % (COOKIE.encode(), new_cookie, COOKIE_MAX_AGE),
                )
            )
        ctx.backend = name.decode()
        backend = self.backends[name]
        if self.endpoints is None and self.rollout is None:
            await self._serve(scope, receive, send, name, backend, "")
            return
        await self._observed(scope, receive, send, name, backend)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, name: bytes, backend: Any, endpoint: str) -> None:
        if self.mirror is not None and scope["method"] in ("GET", "HEAD"):
            await self.mirror(scope, receive, send, name, backend, endpoint)
            return
        await backend(scope, receive, send)

    async def _observed(self, scope: Scope, receive: Receive, send: Send, name: bytes, backend: Any) -> None:
        """Serve, counting the answer by endpoint for the migration report (``gateway.shadow.report``)
        and for the route's rollout."""
        endpoint = self.endpoints.name(scope) if self.endpoints is not None else ""
        status = 0

        async def observe(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self._serve(scope, receive, observe, name, backend, endpoint)
        except GatewayError as exc:  # answered by the edge (a backend's 503 or 504, say)
            status = status or exc.status
            raise
        except Exception:  # the edge answers 500
            status = status or 500
            raise
        except BaseException:  # cancelled (the client left before an answer): not counted
            status = status or -1
            raise
        finally:
            if status > 0:
                elapsed = time.perf_counter() - started
                if self.endpoints is not None:
                    metrics.observe_endpoint(self.route_label, endpoint, name.decode(), status, elapsed)
                if self.rollout is not None:
                    self.rollout.observe(name, status, elapsed)


def wrap(app: Any, route: Any, config: Any, services: Services) -> Any:
    """The innermost policy: a split route's handler chooses among backends instead of ``app``."""
    if not getattr(route, "split", None):
        return app
    from gateway.policies.mirror import Mirror, MirrorRegistry
    from gateway.shadow import endpoints as endpoint_names

    settings: SplitSettings = config.split
    backends = services.backends
    mirror = None
    endpoints = endpoint_names.for_route(route, backends)
    if route.mirror:
        if services.mirror is None:
            services.mirror = MirrorRegistry()
        registry = services.mirror
        stats = registry.for_route(route.label, settings.mirror_keep)
        stats.noise.configure(list(route.split), route.mirror_significant)
        process = shadow_process(services, backends, settings.mirror_duty_cycle) if settings.mirror_process else None
        mirror = Mirror(
            route, {name.encode(): backends[name] for name in route.split}, stats, settings.mirror_max_body, process,
            noise_share=settings.mirror_noise_share,
        )
    if services.endpoints is None:
        services.endpoints = {}
    services.endpoints[route.label] = endpoints
    rollout = follow_rollout(route, config, services)
    if mirror is not None:
        mirror.stats.rollout = rollout  # mirror results count toward the rollout's match-rate gate (None: no plan)
    return Split(route, backends, settings, mirror, endpoints, rollout)


def follow_rollout(route: Any, config: Any, services: Services) -> Any:
    """The route's ``RouteRollout`` when it has a ``rollout`` plan (the manager lives in the services)."""
    if getattr(route, "rollout", None) is None:
        return None
    from gateway.rollout.manager import RolloutManager

    if services.rollout is None:
        services.rollout = RolloutManager()
    return services.rollout.follow_route(route, config)


def shadow_process(services: Services, backends: dict[str, Any], duty_cycle: float) -> Any:
    """The process that runs shadow copies to WSGI backends (one per gateway process, kept across reloads)."""
    from gateway.shadow.process import ShadowProcess

    apps = {name: b.config.app for name, b in backends.items() if getattr(b, "kind", None) == "wsgi"}
    process = services.shadow_process
    if process is None or process.apps != apps:
        if process is not None:
            process.close()
        process = services.shadow_process = ShadowProcess(apps)
        process.warm_soon()  # on a reload; at start-up the lifespan warms it
    process.duty_cycle = duty_cycle  # sent with every copy: a reload changes it at once
    return process
