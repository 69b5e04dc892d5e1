"""Authentication and authorization, shared by every backend: the ``auth`` policy (docs/auth.md).

Modules: ``schema`` (the config tables), ``apikey``, ``bearer`` and ``basic``
(one per scheme), ``guard`` (failed attempts counted, and refused with a 429
beyond ``[auth.failure_rates]``), ``handler`` (the ASGI policy and
``authenticate`` for the gateway's own endpoints), ``jwks`` (keys fetched from an
OpenID provider) and ``introspection`` (opaque tokens, RFC 7662).
"""

from gateway.policies.auth.handler import Authenticator, authenticate, authenticator_for, readiness, require, start_fetching, wrap
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
    "readiness",
    "require",
    "resolve",
    "start_fetching",
    "wrap",
]
