"""The auth policy's handler: who is calling (authenticate), may they (authorize).

At most one credential per request (``X-API-Key`` or ``Authorization``). The
identity travels in the scope (``RequestContext``) and as gateway-set headers (``X-Consumer-Id``,
``X-Consumer-Roles``, ``X-Auth-Scheme``); the credential is removed unless the
route sets ``forward_credentials``. Failures go through ``guard`` first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from gateway import headers as H
from gateway.context import SCOPE_KEY, RequestContext, Services
from gateway.errors import GatewayError
from gateway.policies.auth import apikey, basic, bearer
from gateway.policies.auth.guard import Attempt, FailureGuard
from gateway.policies.auth.identity import BadCredentials, Identity
from gateway.policies.auth.schema import SCHEMES, available_schemes, effective_mode
from gateway.types import Receive, Scope, Send

ERR_MISSING = "Credentials are required: send {forms}."
ERR_AMBIGUOUS = "Send one credential only: one Authorization header or one X-API-Key header, never several or both."
ERR_SCHEME_UNKNOWN = "Unsupported Authorization scheme: send {forms}."
ERR_SCHEME_REFUSED = "This route does not accept {scheme} credentials: send {forms}."
ERR_FORBIDDEN = "This route requires one of the roles {roles}; the credentials given carry none of them."

_CHALLENGES = {
    "jwt": 'Bearer realm="{realm}"',
    "basic": 'Basic realm="{realm}"',
    "api-key": 'ApiKey realm="{realm}", header="X-API-Key"',
}
_AUTHORIZATION_SCHEMES = {b"bearer": "jwt", b"basic": "basic"}
_SCHEME_LABELS = {"jwt": "Bearer", "basic": "Basic", "api-key": "API key"}
_NO_SCHEMES = "credentials of a kind the gateway is configured for (it has none)"


class SchemeRefused(BadCredentials):
    """Credentials of a scheme the route does not take: never tried, so not a failure to count."""


def _either(forms: list[str]) -> str:
    return forms[0] if len(forms) == 1 else ", ".join(forms[:-1]) + " or " + forms[-1]


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """What one route demands, compiled once: its mode, roles, schemes and answers."""

    mode: str
    roles: frozenset[str]
    schemes: frozenset[str]
    forward_credentials: bool
    challenge: tuple[tuple[bytes, bytes], ...]
    forms: str

    def unauthorized(self, message: str) -> GatewayError:
        return GatewayError(401, "unauthorized", message, self.challenge)


def forbidden(roles: Iterable[str]) -> GatewayError:
    return GatewayError(403, "forbidden", ERR_FORBIDDEN.format(roles=", ".join(f'"{role}"' for role in sorted(roles))))


class Authenticator:
    """Everything credentials are checked against, built once per config."""

    def __init__(self, config: Any) -> None:
        consumers = config.consumers
        self.realm = config.auth.realm
        self.roles = {name: frozenset(consumer.roles) for name, consumer in consumers.items()}
        self.keys = apikey.KeyIndex((digest, name) for name, consumer in consumers.items() for digest in consumer.api_keys)
        self.issuers = bearer.Issuers(config.auth.jwt)
        self.basic = basic.BasicVerifier(
            {name: consumer.password for name, consumer in consumers.items() if consumer.password},
            config.auth.basic_cache_ttl,
            config.auth.basic_cache_size,
        )
        rates = config.auth.failure_rates
        self.guard = FailureGuard(rates.address, rates.address_identity, config.throttle)
        self.available = available_schemes(config.auth, consumers)
        self.any_scheme = self.policy("required", (), None, False)

    def policy(self, mode: str, roles: Iterable[str], schemes: Optional[Iterable[str]], forward: bool) -> RoutePolicy:
        wanted = set(schemes) if schemes is not None else set(self.available)
        accepted = [name for name in SCHEMES if name in wanted and name in self.available]
        forms = [SCHEMES[name] for name in accepted]
        # One header per scheme: browsers read a single challenge per header, and must find Basic's.
        challenges = tuple((H.WWW_AUTHENTICATE, _CHALLENGES[name].format(realm=self.realm).encode()) for name in accepted)
        return RoutePolicy(
            mode=mode,
            roles=frozenset(roles),
            schemes=frozenset(accepted),
            forward_credentials=forward,
            challenge=challenges,
            forms=_either(forms) if forms else _NO_SCHEMES,
        )

    async def identify(self, scope: Scope, policy: RoutePolicy) -> Optional[Identity]:
        """The identity the request's one credential proves; None without one; BadCredentials otherwise.

        A failure is counted (``guard``); one beyond the failure rates is a 429 ``GatewayError`` instead.
        """
        attempt = Attempt(scope)
        try:
            return await self._identify(scope["headers"], policy, attempt)
        except SchemeRefused:
            raise
        except BadCredentials:
            await self.guard.failed(attempt)
            raise

    async def _identify(self, headers: Iterable[tuple[bytes, bytes]], policy: RoutePolicy, attempt: Attempt) -> Optional[Identity]:
        authorization = api_key = None
        count = 0
        for name, value in headers:
            if name == H.AUTHORIZATION:
                authorization, count = value, count + 1
            elif name == H.API_KEY:
                api_key, count = value, count + 1
        if count == 0:
            return None
        if count > 1:
            raise BadCredentials(ERR_AMBIGUOUS)
        if api_key is not None:
            self._accepts(policy, "api-key")
            attempt.claimed = b"api-key:" + api_key.strip()
            name = self.keys.consumer(api_key.strip())
            return Identity(name, self.roles[name], "api-key")
        kind, _, credentials = authorization.strip().partition(b" ")
        scheme = _AUTHORIZATION_SCHEMES.get(kind.lower())
        if scheme is None:
            raise BadCredentials(ERR_SCHEME_UNKNOWN.format(forms=policy.forms))
        self._accepts(policy, scheme)
        credentials = credentials.strip()
        if scheme == "jwt":
            try:
                name, roles = await self.issuers.identify(credentials)
            except BadCredentials:
                attempt.claimed = b"jwt:" + self.issuers.claimed(credentials)
                raise
            return Identity(name, roles | self.roles.get(name, frozenset()), "jwt")
        user, password = basic.parse(credentials)
        attempt.claimed = b"basic:" + user.encode("utf-8", "surrogatepass")
        await self.guard.admit(attempt)  # 429 before the cache and the hash once the address is out of failures
        name = await self.basic.consumer(user, password, lambda: self.guard.reserve(attempt))
        return Identity(name, self.roles[name], "basic")

    @staticmethod
    def _accepts(policy: RoutePolicy, scheme: str) -> None:
        if scheme not in policy.schemes:
            raise SchemeRefused(ERR_SCHEME_REFUSED.format(scheme=_SCHEME_LABELS[scheme], forms=policy.forms))


_BUILT: OrderedDict[int, tuple[Any, Authenticator]] = OrderedDict()
_BUILT_KEEP = 4


def authenticator_for(config: Any, services: Optional[Services] = None) -> Authenticator:
    """The config's Authenticator, built on first use and shared by its routes and the admin app.

    ``services`` (the gateway's): its failure counters use the throttle's storage there.
    """
    entry = _BUILT.get(id(config))
    if entry is not None and entry[0] is config:
        if services is not None:
            entry[1].guard.use(services)
        return entry[1]
    built = Authenticator(config)
    if services is not None:
        built.guard.use(services)
    _BUILT[id(config)] = (config, built)  # holding the config keeps its id from being reused
    while len(_BUILT) > _BUILT_KEEP:
        _BUILT.popitem(last=False)
    return built


def start_fetching(config: Any) -> None:
    """In a worker's event loop (at startup): begin fetching the issuers' remote keys, without waiting for them."""
    if config.auth is not None and any(issuer.jwks_url or issuer.discovery for issuer in config.auth.jwt.values()):
        for remote in authenticator_for(config).issuers.remote:
            remote.start()


def readiness(config: Any) -> dict[str, dict[str, Any]]:
    """``/_stackgate/ready`` checks of the issuers with remote keys, as this worker sees them (docs/auth.md)."""
    if config.auth is None or not any(issuer.jwks_url or issuer.discovery for issuer in config.auth.jwt.values()):
        return {}
    return {f"auth.jwt.{remote.name}": remote.readiness() for remote in authenticator_for(config).issuers.remote}


def _without_credentials(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name not in H.CREDENTIALS]


class Authenticate:
    """ASGI: check the credential, the roles, then call the route's app with the identity."""

    def __init__(self, app: Any, authenticator: Authenticator, policy: RoutePolicy) -> None:
        self.app = app
        self.authenticator = authenticator
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.policy
        try:
            identity = await self.authenticator.identify(scope, policy)
        except BadCredentials as exc:
            raise policy.unauthorized(exc.message) from None
        if identity is None:
            if policy.mode == "required":
                raise policy.unauthorized(ERR_MISSING.format(forms=policy.forms))
        elif not identity.has_any(policy.roles):
            raise forbidden(policy.roles)

        headers = scope["headers"] if policy.forward_credentials else _without_credentials(scope["headers"])
        if identity is not None:
            roles = tuple(sorted(identity.roles))
            ctx: RequestContext = scope[SCOPE_KEY]
            ctx.identity = identity.name
            ctx.roles = roles
            ctx.auth_scheme = identity.scheme
            headers = [
                *headers,
                (H.CONSUMER_ID, identity.name.encode("ascii")),
                (H.CONSUMER_ROLES, ",".join(roles).encode("ascii")),
                (H.AUTH_SCHEME, identity.scheme.encode("ascii")),
            ]
        scope["headers"] = headers
        await self.app(scope, receive, send)


class StripCredentials:
    """ASGI, for ``auth = "none"`` routes: the backend never sees the gateway's credentials."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["headers"] = _without_credentials(scope["headers"])
        await self.app(scope, receive, send)


async def authenticate(scope: Scope, config: Any) -> Optional[Identity]:
    """The identity a request's credentials prove, with any configured scheme.

    None when the request carries no credentials; a ``GatewayError`` (401,
    with ``WWW-Authenticate``) when they are bad or ambiguous. For the gateway's
    own endpoints; routes use the policy through ``wrap``.
    """
    authenticator = authenticator_for(config)
    try:
        return await authenticator.identify(scope, authenticator.any_scheme)
    except BadCredentials as exc:
        raise authenticator.any_scheme.unauthorized(exc.message) from None


async def require(scope: Scope, config: Any, roles: Iterable[str] = ()) -> Identity:
    """Like ``authenticate``, but 401 without credentials and 403 without one of ``roles`` (when given)."""
    authenticator = authenticator_for(config)
    identity = await authenticate(scope, config)
    policy = authenticator.any_scheme
    if identity is None:
        raise policy.unauthorized(ERR_MISSING.format(forms=policy.forms))
    wanted = frozenset(roles)
    if not identity.has_any(wanted):
        raise forbidden(wanted)
    return identity


def wrap(app: Any, route: Any, config: Any, services: Services) -> Any:
    mode = effective_mode(route, config.auth)
    if mode == "none":
        return app if route.forward_credentials else StripCredentials(app)
    authenticator = authenticator_for(config, services)
    return Authenticate(app, authenticator, authenticator.policy(mode, route.roles, route.auth_schemes, route.forward_credentials))
