"""Header names the gateway owns. One list, used on every route.

Client-sent copies of gateway-set headers are removed before any backend sees
a request, in every spelling: names are compared lower-case, and *every*
header whose name contains ``_`` is dropped, because WSGI servers (and
a2wsgi) fold ``X_Remote_User`` and ``X-Remote-User`` into the same
``HTTP_X_REMOTE_USER`` key — nginx drops them by default for the same reason.
"""

from __future__ import annotations

REQUEST_ID = b"x-request-id"
API_VERSION = b"x-api-version"
CONSUMER_ID = b"x-consumer-id"
CONSUMER_ROLES = b"x-consumer-roles"
AUTH_SCHEME = b"x-auth-scheme"
SERVED_BY = b"x-served-by"
BACKEND_OVERRIDE = b"x-stackgate-backend"
AUTHORIZATION = b"authorization"
API_KEY = b"x-api-key"
WWW_AUTHENTICATE = b"www-authenticate"

#: Credentials the gateway checks; removed before the backend unless a route forwards them.
CREDENTIALS = frozenset({AUTHORIZATION, API_KEY})

#: Headers only the gateway may set on the way to a backend.
GATEWAY_SET = frozenset(
    {
        REQUEST_ID,
        API_VERSION,
        CONSUMER_ID,
        CONSUMER_ROLES,
        AUTH_SCHEME,
        b"x-remote-user",
        b"remote-user",
        b"x-forwarded-user",
        b"x-authenticated-user",
        b"x-forwarded-prefix",
    }
)

#: Method-override headers: a backend honouring one would serve another method than the one authorised.
METHOD_OVERRIDE = frozenset({b"x-http-method-override", b"x-http-method", b"x-method-override"})

#: What a proxy says about the client. The gateway has already resolved it (``[gateway].trusted_proxies``)
#: into the client address and scheme a backend gets; a client-sent copy would only contradict that.
FORWARDED = frozenset({b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port", b"x-real-ip"})

STRIPPED = GATEWAY_SET | METHOD_OVERRIDE | FORWARDED | {BACKEND_OVERRIDE}


def inbound(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's headers minus everything the gateway owns (and underscore aliases)."""
    return [(name, value) for name, value in headers if name not in STRIPPED and b"_" not in name]


def get(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None
