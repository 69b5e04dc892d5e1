"""The auth policy's config: ``[auth]``, ``[auth.jwt.NAME]``, ``[consumers.NAME]``, route keys.

Everything a request will need is checked here, once: key hashes and password
hashes are recognised (never plaintext), JWKS files are read and every key is
prepared for the algorithms its issuer allows, and ``check`` cross-checks the
tables against each other and against the routes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Optional

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationInfo, field_validator, model_validator

from gateway.policies.auth import apikey, basic, bearer, jwks
from gateway.policies.auth.identity import ROLE
from gateway.policies.throttle import parse_rate
from gateway.schema import Schema, format_loc

MODES = ("required", "optional", "none")
#: Scheme name (as in ``auth_schemes`` and ``X-Auth-Scheme``) -> how a client sends it.
SCHEMES = {
    "jwt": "Authorization: Bearer <token>",
    "basic": "Authorization: Basic <base64 of user:password>",
    "api-key": "X-API-Key: <key>",
}

_REALM = re.compile(r'^[\x20-\x7e]{1,64}$')
ERR_MODE = 'must be "required", "optional" or "none"'
ERR_SCHEME = 'must be "api-key", "jwt" or "basic"'
ERR_ROLE = (
    '"{role}" is not a role name: 1-64 letters, digits, "_", ".", ":" or "-", starting with a letter or digit'
)
ERR_KEY_HASH = (
    'must be "sha256:<64 hex digits>", the hash of an API key, never the key itself; '
    "make a key and its line with `stackgate keys new {name}`"
)
ERR_PASSWORD_HASH = (
    'must be an argon2 hash ("$argon2id$...") or a bcrypt hash ("$2b$..."), never a plain password; '
    "make one with `stackgate password {name}`"
)


def _mode(value: str) -> str:
    if value not in MODES:
        raise ValueError(ERR_MODE)
    return value


def _scheme(value: str) -> str:
    if value not in SCHEMES:
        raise ValueError(ERR_SCHEME)
    return value


def _role(value: str) -> str:
    if not ROLE.match(value):
        raise ValueError(ERR_ROLE.format(role=value))
    return value


def _consumer_name(info: ValidationInfo) -> str:
    return (info.context or {}).get("name", "NAME")


def _key_hash(value: str, info: ValidationInfo) -> str:
    normalised = apikey.parse_hash(value)
    if normalised is None:
        raise ValueError(ERR_KEY_HASH.format(name=_consumer_name(info)))
    return normalised


def _password_hash(value: str, info: ValidationInfo) -> str:
    if not basic.is_password_hash(value):
        raise ValueError(ERR_PASSWORD_HASH.format(name=_consumer_name(info)))
    return value


def _rate(value: str) -> str:
    parse_rate(value)
    return value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Mode = Annotated[str, AfterValidator(_mode)]
SchemeName = Annotated[str, AfterValidator(_scheme)]
Role = Annotated[str, AfterValidator(_role)]
KeyHash = Annotated[str, AfterValidator(_key_hash)]
PasswordHash = Annotated[str, AfterValidator(_password_hash)]
Rate = Annotated[str, AfterValidator(_rate)]
Rates = Annotated[list[Rate], BeforeValidator(_one_or_many)]


class FailureRates(Schema):
    """The ``[auth.failure_rates]`` table: failed authentications allowed before a 429.

    Counted in ``[throttle] storage`` (one worker's memory, or Redis across
    workers and hosts). An empty list turns that counter off.
    """

    address: Rates = ["30/minute", "300/hour"]
    """Failures from one client address (an IPv6 client: its /64), whatever identity they claim."""
    address_identity: Rates = ["10/minute", "60/hour"]
    """Failures from one client address for one claimed identity (Basic user name, API key, token subject)."""


class IntrospectionConfig(Schema):
    """``[auth.jwt.NAME.introspection]``: opaque access tokens checked at the issuer (RFC 7662)."""

    endpoint: Optional[str] = None
    """The introspection endpoint; default: ``introspection_endpoint`` of the discovery document (needs ``discovery = true``)."""
    client_id: str = Field(min_length=1)
    """The gateway's client id at the provider (a client allowed to introspect)."""
    client_secret: SecretStr
    """Its client secret; write ``"${ENV_VAR}"``, never the secret."""
    cache_ttl: float = Field(300, ge=0, le=3600)
    """Seconds an active token's answer is remembered at most (never past the token's ``exp``; 0: never)."""
    negative_ttl: float = Field(10, ge=0, le=300)
    """Seconds an inactive token's answer is remembered (0: never): a revoked token is refused from the cache."""
    cache_size: int = Field(10_000, ge=0, le=1_000_000)
    """Answers remembered at most per worker (least recently stored dropped first)."""
    timeout: float = Field(5, gt=0, le=60)
    """Seconds to wait for the endpoint; past it the token gets a 401."""


class JwtIssuerConfig(Schema):
    """One ``[auth.jwt.NAME]`` table: an issuer of bearer tokens."""

    issuer: str = Field(min_length=1)
    """The ``iss`` claim of this issuer's tokens; a token is matched to its issuer by it."""
    algorithms: Optional[list[str]] = None
    """Allowed ``alg`` values: HS256/HS384/HS512 with ``secret``, RS*/PS*/ES256/ES384/ES512/EdDSA with keys.

    Required with ``secret`` and ``jwks_file``. With ``jwks_url`` or ``discovery``
    it may be left out: each fetched key then verifies the one algorithm its
    ``alg``, or its type and curve, names (RSA without ``alg``: RS256)."""
    secret: Optional[SecretStr] = None
    """HMAC key (at least 32, 48, 64 bytes for HS256, HS384, HS512); write ``"${ENV_VAR}"``, never the secret."""
    jwks_file: Optional[str] = None
    """JSON Web Key Set of public keys (path relative to the config file); a token picks its key by ``kid``."""
    allow_insecure_http: bool = False
    """Allow ``http://`` URLs for a provider that is not on loopback (tokens' keys could then be forged in transit)."""
    jwks_url: Optional[str] = None
    """URL of the provider's JSON Web Key Set, fetched by each worker and cached (``keys_*``)."""
    discovery: bool = False
    """Find the JWKS (and the introspection endpoint) in ``{issuer}/.well-known/openid-configuration``."""
    keys_min_ttl: float = Field(60, ge=1, le=86_400)
    """Seconds fetched keys are kept at least, whatever the provider's ``Cache-Control`` says."""
    keys_max_ttl: float = Field(86_400, ge=1, le=604_800)
    """Seconds fetched keys are kept at most before a refresh (default without a max-age: 300, within the bounds)."""
    refresh_min_interval: float = Field(30, ge=0, le=3600)
    """A token naming an unknown ``kid`` fetches the keys again at most once per this many seconds."""
    fetch_timeout: float = Field(5, gt=0, le=60)
    """Seconds to wait for the provider's discovery document or JWKS."""
    introspection: Optional[IntrospectionConfig] = None
    """Check opaque (non-JWT) access tokens at the provider: ``[auth.jwt.NAME.introspection]``."""
    audience: Optional[str] = None
    """When set, tokens must carry it in ``aud``; when unset, tokens carrying ``aud`` are refused."""
    leeway: float = Field(0, ge=0, le=300)
    """Seconds of clock skew allowed on ``exp`` and ``nbf``."""
    identity_claim: str = Field("sub", min_length=1)
    """Claim holding the identity (a printable ASCII string of at most 256 characters)."""
    roles_claim: str = Field("roles", min_length=1)
    """Claim holding the roles: a list of strings, or one space-separated string. A name no claim
    has is read as a dotted path into nested claims (Keycloak: ``realm_access.roles``)."""

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is None:
            return None
        if not value:
            raise ValueError(bearer.ERR_NO_ALGORITHMS)
        for alg in value:
            if alg.lower() == "none":
                raise ValueError(bearer.ERR_ALG_NONE)
            if alg not in bearer.HMAC and alg not in bearer.ASYMMETRIC:
                raise ValueError(bearer.ERR_ALG_UNKNOWN.format(alg=alg))
        return list(dict.fromkeys(value))

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: Optional[SecretStr], info: ValidationInfo) -> Optional[SecretStr]:
        if value is not None:
            bearer.check_secret(value.get_secret_value().encode("utf-8"), info.data.get("algorithms") or [])
        return value

    @field_validator("jwks_file")
    @classmethod
    def _jwks_file(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        algorithms = info.data.get("algorithms")
        if value is None or not algorithms or any(alg in bearer.HMAC for alg in algorithms):
            return value  # the model check reports the mix-up
        base = Path((info.context or {}).get("config_dir", "."))
        return bearer.load_jwks(value, base / value, algorithms)

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        return None if value is None else jwks.check_url(value, bool(info.data.get("allow_insecure_http")))

    @model_validator(mode="after")
    def _one_key_source(self) -> "JwtIssuerConfig":
        sources = [name for name in ("secret", "jwks_file", "jwks_url", "discovery") if getattr(self, name) not in (None, False)]
        if len(sources) != 1:
            raise ValueError(bearer.ERR_KEY_SOURCE)
        source = sources[0]
        if self.algorithms is None:
            if source in ("secret", "jwks_file"):
                raise ValueError(bearer.ERR_ALGORITHMS_REQUIRED)
            return self._remote_checks()
        wrong = [a for a in self.algorithms if (a in bearer.HMAC) != (source == "secret")]
        if wrong:
            if source == "secret":
                raise ValueError(bearer.ERR_SECRET_ALGS.format(alg=wrong[0]))
            raise ValueError(bearer.ERR_JWKS_ALGS.format(source="discovery" if source == "discovery" else source, alg=wrong[0]))
        return self._remote_checks()

    def _remote_checks(self) -> "JwtIssuerConfig":
        if self.discovery:
            try:
                jwks.check_url(self.issuer, self.allow_insecure_http)
            except ValueError as exc:
                raise ValueError(f'with discovery = true, "issuer" {exc}') from None
        if self.introspection is not None:
            if self.introspection.endpoint is None and not self.discovery:
                raise ValueError('[introspection] needs an "endpoint", or discovery = true to find it')
            if self.introspection.endpoint is not None:
                try:
                    jwks.check_url(self.introspection.endpoint, self.allow_insecure_http)
                except ValueError as exc:
                    raise ValueError(f"introspection.endpoint {exc}") from None
        return self


class AuthSettings(Schema):
    """The ``[auth]`` table."""

    default: Mode = "required"
    """Policy of every route that sets no ``auth``: "required", "optional" or "none"."""
    realm: str = "stackgate"
    """Realm named in the ``WWW-Authenticate`` challenges."""
    roles: list[Role] = []
    """Roles no consumer is granted but tokens may carry; routes may then require them."""
    basic_cache_ttl: float = Field(60, ge=0, le=3600)
    """Seconds a successful HTTP Basic verification is remembered (0: never remembered)."""
    basic_cache_size: int = Field(1024, ge=0, le=100_000)
    """Successful HTTP Basic verifications remembered at most (least recently used dropped first)."""
    failure_rates: FailureRates = FailureRates()
    """Failed authentications allowed per client address and per (address, claimed identity)."""
    jwt: dict[str, JwtIssuerConfig] = {}
    """Issuers of bearer tokens, by name: ``[auth.jwt.NAME]``."""

    @field_validator("realm")
    @classmethod
    def _realm(cls, value: str) -> str:
        if not _REALM.match(value) or '"' in value or "\\" in value:
            raise ValueError("must be 1-64 printable ASCII characters without quotes or backslashes")
        return value


class ConsumerConfig(Schema):
    """One ``[consumers.NAME]`` table: a known client and its credentials."""

    roles: list[Role] = []
    """Roles granted to this consumer, with any credential."""
    api_keys: list[KeyHash] = []
    """Hashes of its API keys, ``"sha256:<hex>"``, from ``stackgate keys new NAME``."""
    password: Optional[PasswordHash] = None
    """Argon2 or bcrypt hash of its HTTP Basic password, from ``stackgate password NAME``."""


class RouteAuthFields(Schema):
    """Route-level keys of the auth policy (``RouteConfig`` inherits them)."""

    auth: Optional[Mode] = None
    """"required", "optional" (anonymous allowed, bad credentials still refused) or "none"; default ``[auth] default``."""
    roles: list[Role] = []
    """Any one of these roles grants access (needs ``auth = "required"``). Empty: any authenticated client."""
    auth_schemes: Optional[list[SchemeName]] = None
    """Schemes accepted, of "api-key", "jwt", "basic". Default: every scheme the config sets up."""
    forward_credentials: bool = False
    """Pass ``Authorization`` and ``X-API-Key`` on to the backend (removed by default)."""


def effective_mode(route: Any, auth: Optional[AuthSettings]) -> str:
    return getattr(route, "auth", None) or (auth.default if auth is not None else "required")


def available_schemes(auth: Optional[AuthSettings], consumers: dict[str, ConsumerConfig]) -> tuple[str, ...]:
    """The schemes something is configured for, in challenge order."""
    configured = {
        "jwt": bool(auth is not None and auth.jwt),
        "basic": any(c.password for c in consumers.values()),
        "api-key": any(c.api_keys for c in consumers.values()),
    }
    return tuple(name for name in SCHEMES if configured[name])


_MISSING = {
    "jwt": '"jwt" is not set up: add an [auth.jwt.NAME] issuer',
    "basic": '"basic" is not set up: no consumer has a password',
    "api-key": '"api-key" is not set up: no consumer has api_keys',
}


def check(
    auth: Optional[AuthSettings],
    consumers: dict[str, ConsumerConfig],
    consumers_complete: bool,
    routes: Iterable[Optional[Any]],
    add: Callable[[tuple, str], None],
) -> None:
    """Cross-checks between ``[auth]``, ``[consumers]`` and the routes (each table validated alone before)."""

    owner: dict[str, tuple] = {}
    for name, consumer in consumers.items():
        for index, digest in enumerate(consumer.api_keys):
            loc = ("consumers", name, "api_keys", index)
            if digest in owner:
                add(loc, f"the same key hash as {format_loc(owner[digest])}; a key must belong to one consumer only")
            else:
                owner[digest] = loc
    if auth is None:
        return
    issuers: dict[str, str] = {}
    for name, issuer in auth.jwt.items():
        if issuer.issuer in issuers:
            add(("auth", "jwt", name, "issuer"), f'the same issuer as auth.jwt.{issuers[issuer.issuer]}; tokens find their issuer by "iss"')
        else:
            issuers[issuer.issuer] = name

    introspecting = [name for name, issuer in auth.jwt.items() if issuer.introspection is not None]
    for name in introspecting[1:]:
        add(
            ("auth", "jwt", name, "introspection"),
            f"only one issuer may introspect opaque tokens (auth.jwt.{introspecting[0]} does): an opaque token names no issuer",
        )

    known_roles = set(auth.roles).union(*(c.roles for c in consumers.values()))
    available = available_schemes(auth, consumers)
    for index, route in enumerate(routes):
        if route is None:
            continue
        loc = ("routes", index)
        mode = effective_mode(route, auth)
        if route.roles and mode != "required":
            add((*loc, "roles"), f'roles need auth = "required"; with auth "{mode}" a request without credentials gets through')
        if consumers_complete:
            for role in route.roles:
                if role not in known_roles:
                    add((*loc, "roles"), f'unknown role "{role}": no consumer has it; list it in [auth] roles if only tokens carry it')
        if route.auth_schemes is not None:
            if not route.auth_schemes:
                add((*loc, "auth_schemes"), "must list at least one scheme, or be left out for every configured scheme")
            for scheme in route.auth_schemes:
                if scheme not in available and consumers_complete:
                    add((*loc, "auth_schemes"), _MISSING[scheme])


def resolve(route: Any, auth: AuthSettings) -> Any:
    """The route with its effective ``auth`` (so summaries and the policy read one value)."""
    return route if route.auth is not None else route.model_copy(update={"auth": auth.default})

