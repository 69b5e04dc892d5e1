"""Authentication and authorization, shared by every backend: the ``auth`` policy.

Config (see docs/auth.md)::

    [auth]
    default = "required"           # routes without `auth`: "required" | "optional" | "none"

    [auth.failure_rates]           # failed attempts allowed before a 429
    address = ["30/minute", "300/hour"]
    address_identity = ["10/minute", "60/hour"]

    [auth.jwt.corp]                # bearer tokens of one issuer
    issuer = "https://id.example.com"
    algorithms = ["RS256"]
    jwks_file = "keys/corp.jwks.json"

    [consumers.alice]
    roles = ["user"]
    api_keys = ["sha256:<hex>"]    # `stackgate keys new alice`
    password = "$argon2id$..."     # `stackgate password alice`

    [[routes]]
    auth = "required"
    roles = ["user"]               # any one of them grants access

Modules: ``schema`` (the config tables), ``apikey``, ``bearer`` and ``basic``
(one per scheme), ``guard`` (failed attempts counted, and refused with a 429
beyond ``[auth.failure_rates]``), ``handler`` (the ASGI policy and
``authenticate`` for the gateway's own endpoints).
"""

from gateway.policies.auth.handler import Authenticator, authenticate, authenticator_for, require, wrap
from gateway.policies.auth.identity import BadCredentials, Identity
from gateway.policies.auth.schema import AuthSettings, ConsumerConfig, JwtIssuerConfig, RouteAuthFields, check, resolve

__all__ = [
    "AuthSettings",
    "Authenticator",
    "BadCredentials",
    "ConsumerConfig",
    "Identity",
    "JwtIssuerConfig",
    "RouteAuthFields",
    "authenticate",
    "authenticator_for",
    "check",
    "require",
    "resolve",
    "wrap",
]
