"""Header names the gateway owns. One list, used on every route.

Client-sent copies of gateway-set headers are removed before any backend sees
a request, in every spelling: names are compared lower-case, and *every*
header whose name contains ``_`` is dropped, because WSGI servers (and
a2wsgi) fold ``X_Remote_User`` and ``X-Remote-User`` into the same
``HTTP_X_REMOTE_USER`` key — nginx drops them by default for the same reason.

So are headers that tell a backend framework another target, scheme, host or
client than the one the gateway matched and authorised (``TARGET_REWRITE``,
``FORWARDED``, every ``X-Forwarded-*``), and, on the way to and from a remote
upstream, the hop-by-hop headers (``HOP_BY_HOP``, ``hop_by_hop``).
"""

from __future__ import annotations

from typing import Iterable, Optional

REQUEST_ID = b"x-request-id"
API_VERSION = b"x-api-version"
CONSUMER_ID = b"x-consumer-id"
CONSUMER_ROLES = b"x-consumer-roles"
AUTH_SCHEME = b"x-auth-scheme"
SERVED_BY = b"x-served-by"
BACKEND_OVERRIDE = b"x-stackgate-backend"
HOST = b"host"
CONTENT_LENGTH = b"content-length"
AUTHORIZATION = b"authorization"
API_KEY = b"x-api-key"
WWW_AUTHENTICATE = b"www-authenticate"
CONNECTION = b"connection"
ACCEPT_ENCODING = b"accept-encoding"
TRACEPARENT = b"traceparent"
"""W3C trace context (``[telemetry]``): the gateway's own replaces the client's on the way to a backend."""
TRACESTATE = b"tracestate"

#: What the gateway tells a remote ``http`` upstream about the request, from what it resolved.
X_FORWARDED_FOR = b"x-forwarded-for"
X_FORWARDED_PROTO = b"x-forwarded-proto"
X_FORWARDED_HOST = b"x-forwarded-host"
X_FORWARDED_PREFIX = b"x-forwarded-prefix"
FORWARDED_PREFIX = b"x-forwarded-"

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
        X_FORWARDED_PREFIX,
    }
)

#: Method-override headers: a backend honouring one would serve another method than the one authorised.
METHOD_OVERRIDE = frozenset({b"x-http-method-override", b"x-http-method", b"x-method-override"})

#: What a proxy says about the client. The gateway has already resolved it (``[gateway].trusted_proxies``)
#: into the client address and scheme a backend gets; a client-sent copy would only contradict that.
#: Every ``X-Forwarded-*`` header goes too (``FORWARDED_PREFIX``), whatever follows the dash.
FORWARDED = frozenset(
    {
        b"forwarded",
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
        b"x-forwarded-port",
        b"x-real-ip",
        b"x-client-ip",
        b"x-cluster-client-ip",
        b"true-client-ip",
        b"x-original-for",
    }
)

#: Headers with which a framework or its middleware takes another path, prefix, scheme or host than
#: the request's own: the gateway matched and authorised the request line and ``Host``, so a backend
#: must route on those (Symfony/Zend ``X-Original-URL``/``X-Rewrite-URL``, CVE-2018-14773; IIS ARR;
#: Envoy; ASP.NET Core's ``X-Original-*``; the Flask ``ReverseProxied`` recipe's ``X-Script-Name``/
#: ``X-Scheme``; Rack's and gunicorn's scheme headers). Every ``X-Forwarded-*`` (``-Uri``, ``-Path``,
#: ``-Ssl``, ``-Scheme``, ``-Protocol``, ``-Server``, ...) is dropped by its prefix as well.
TARGET_REWRITE = frozenset(
    {
        b"x-original-url",
        b"x-rewrite-url",
        b"x-original-uri",
        b"x-original-path",
        b"x-envoy-original-path",
        b"x-envoy-original-url",
        b"x-request-uri",
        b"x-request-url",
        b"x-script-name",
        b"x-original-prefix",
        b"x-scheme",
        b"x-url-scheme",
        b"front-end-https",
        b"x-arr-ssl",
        b"x-original-proto",
        b"x-host",
        b"x-original-host",
        b"x-real-host",
        b"x-http-host-override",
    }
)

STRIPPED = GATEWAY_SET | METHOD_OVERRIDE | FORWARDED | TARGET_REWRITE | {BACKEND_OVERRIDE}

#: Hop-by-hop headers (RFC 9110 7.6.1, plus the obsolete ``Keep-Alive`` and ``Proxy-Connection``):
#: meaningful for one connection only, so a proxy removes them, and every header ``Connection`` names.
HOP_BY_HOP = frozenset(
    {
        CONNECTION,
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def dropped(name: bytes) -> bool:
    """Whether ``inbound`` removes a client-sent header of this (lower-case) name."""
    return name in STRIPPED or b"_" in name or name.startswith(FORWARDED_PREFIX)


def inbound(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's headers minus everything the gateway owns (and underscore aliases)."""
    return [(name, value) for name, value in headers if not dropped(name)]


def forwarded(headers: list[tuple[bytes, bytes]], host: bytes) -> tuple[list[tuple[bytes, bytes]], Optional[bytes], Optional[bytes]]:
    """One pass over the client's headers for a backend: ``inbound`` with ``host`` as the one Host
    header first, and the values of ``Content-Length`` and ``X-Stackgate-Backend`` (dropped) as seen."""
    kept = [(HOST, host)]
    length = override = None
    for name, value in headers:
        if name in STRIPPED or b"_" in name or name.startswith(FORWARDED_PREFIX):
            if name == BACKEND_OVERRIDE and override is None:
                override = value
        elif name == HOST:
            continue
        else:
            if name == CONTENT_LENGTH and length is None:
                length = value
            kept.append((name, value))
    return kept, length, override


def hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """``HOP_BY_HOP`` plus every header named in the ``Connection`` headers (lower-cased)."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == CONNECTION
        for token in value.split(b",")
    }
    named.discard(b"")
    return HOP_BY_HOP | named


def get(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None
