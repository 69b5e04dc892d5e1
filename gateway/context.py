"""What passes between the gateway's layers: one typed request context, one services object.

``RequestContext`` lives at ``scope[SCOPE_KEY]`` for the whole request: the
outermost layer creates it (request id, host, canonical path), the route
fills in the route and body limit, policies add the identity, the chosen
backend and response headers, and the access log reads it at the end.
Child scopes share the same object. ``Services`` holds what outlives a
config reload (backends, throttle storage, mirror counters, the shadow
process). See docs/extending.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

SCOPE_KEY = "stackgate"
"""The one scope key the gateway sets: ``scope["stackgate"]`` is the request's ``RequestContext``."""
NON_ORIGIN_FORM = "stackgate.non_origin_form"
"""Set by the HTTP protocol (``gateway.edge.protocol``) before any app runs: the target was not a path."""

DEFAULT_MAX_BODY_SIZE = 10 << 20


@dataclass(slots=True)
class RequestContext:
    """One request, as the gateway knows it. Policies read and write these fields."""

    request_id: str
    """``X-Request-ID``: the client's if well formed, else a new one."""
    started: float = 0.0
    """``time.perf_counter()`` when the request reached the gateway."""
    path: str = ""
    """The canonical path (``gateway.paths``), what routes match on."""
    host: Any = None
    """The request's one host, validated: a ``gateway.host.Host`` (``.name``, ``.value``)."""
    forwarded_host: Optional[bytes] = None
    """A trusted proxy's ``X-Forwarded-Host``, before validation."""
    route: Any = None
    """The matched config route (``gateway.routing.Route``); None before routing and for user routes."""
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    """Largest request body the backend may read (the route's, else ``gateway.max_body_size``)."""
    identity: Optional[str] = None
    """The authenticated consumer's name (``auth`` policy); None when anonymous."""
    roles: tuple[str, ...] = ()
    """Its roles, sorted."""
    auth_scheme: Optional[str] = None
    """``api-key``, ``bearer`` or ``basic``."""
    override: Optional[bytes] = None
    """The ``X-Backend-Override`` header as sent (honoured for ``split.override_roles``)."""
    backend: Optional[str] = None
    """The backend chosen for this request (``split``); None: the route's ``backend``."""
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    """Added to every answer of the request, the gateway's own errors included."""
    response_started: bool = False
    """True once the response's first message went out: an error can then only close the connection."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent in named steps, for policies that measure themselves."""
    compiled: Any = None
    """The compiled config the request was admitted with (``gateway.app.Compiled``)."""


def context(scope: Any) -> RequestContext:
    """The request's context (KeyError outside the gateway)."""
    return scope[SCOPE_KEY]


def context_or_none(scope: Any) -> Optional[RequestContext]:
    return scope.get(SCOPE_KEY)


@dataclass(slots=True)
class Services:
    """Process-wide state that survives a config reload; the gateway holds one."""

    backends: dict[str, Any] = field(default_factory=dict)
    """Backend name -> built backend (``gateway.backends``); built once per process."""
    throttle: Any = None
    """The throttle's ``Limiter`` (``gateway.policies.throttle``), created by the first route or guard that counts."""
    mirror: Any = None
    """Route label -> mirror statistics (``gateway.policies.mirror.MirrorRegistry``)."""
    endpoints: Any = None
    """Split route label -> its endpoint names (``gateway.shadow.endpoints.Endpoints``), for the migration report."""
    shadow_process: Any = None
    """The process that runs shadow requests (``gateway.shadow.process``), when configured."""
    rollout: Any = None
    """This worker's gated rollouts (``gateway.rollout.manager.RolloutManager``), when a route has a plan."""
    policies: dict[str, Any] = field(default_factory=dict)
    """Third-party policies' own state, by policy name."""
