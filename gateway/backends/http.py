"""``kind = "http"``: a stack on its own servers, reached through a pooled httpx client.

The upstream gets the request as a proxy forwards it (RFC 9110 7.6.1): the
path below the route's prefix, ``X-Forwarded-Prefix``/``-For``/``-Proto``/``-Host``
set by the gateway alone, no hop-by-hop header, none of the backend's
``drop_headers``. Bodies stream both ways.
"""

from __future__ import annotations

import re
from typing import AsyncIterator, Literal

from pydantic import Field, field_validator

from gateway import headers as H
from gateway.context import DEFAULT_MAX_BODY_SIZE, SCOPE_KEY
from gateway.backends.base import Backend
from gateway.backends.wsgi import ClientDisconnected
from gateway.errors import GatewayError
from gateway.paths import encode_path
from gateway.schema import Schema
from gateway.types import Receive, Scope, Send

# Set on the way out by httpx (from the URL and the body) or by the gateway below.
_SET_HERE = frozenset({b"host", b"content-length"})
# httpx adds these to every request unless told otherwise; a proxy adds none of them.
_CLIENT_DEFAULTS = ("accept", "accept-encoding", "user-agent")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+$")


class HTTPBackendConfig(Schema):
    kind: Literal["http"]
    url: str
    """Base URL of the upstream, e.g. ``http://10.0.0.5:8001``."""
    timeout: float = Field(30.0, gt=0)
    """Seconds to connect, and between bytes of the response."""
    max_connections: int = Field(100, ge=1)
    """Size of the connection pool; requests beyond it wait for ``timeout``."""
    drop_headers: list[str] = []
    """More client headers this upstream never gets (any case), beside the ones dropped on every route."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        import httpx  # here and below, not at the top: a config without an http backend never loads it

        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
            raise ValueError('must be an http(s) base URL such as "http://127.0.0.1:8001"')
        return value.rstrip("/")

    @field_validator("drop_headers")
    @classmethod
    def _drop_headers(cls, value: list[str]) -> list[str]:
        names = [name.strip().lower() for name in value]
        bad = [given for given, name in zip(value, names) if not _TOKEN.match(name)]
        if bad:
            raise ValueError(f"not a header name: {', '.join(repr(b) for b in bad)} (e.g. \"X-Debug\")")
        return names


class HTTPBackend(Backend):
    kind = "http"

    def __init__(self, name: str, config: HTTPBackendConfig) -> None:
        super().__init__(name, config)
        import httpx

        self.client = httpx.AsyncClient(
            base_url=config.url,
            timeout=httpx.Timeout(config.timeout),
            limits=httpx.Limits(max_connections=config.max_connections),
            follow_redirects=False,
        )
        for name in _CLIENT_DEFAULTS:
            del self.client.headers[name]
        self.drop = frozenset(name.encode() for name in config.drop_headers)

    async def shutdown(self) -> None:
        await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import httpx

        root_path = scope.get("root_path", "")
        path = scope["path"][len(root_path) :] or "/"
        # Headers the client's Connection names go (RFC 9110 7.6.1), but not those the gateway itself set.
        drop = (H.hop_by_hop(scope["headers"]) - H.GATEWAY_SET) | _SET_HERE | self.drop
        headers = [(name, value) for name, value in scope["headers"] if name not in drop]
        length = _body_length(scope)
        if length is not None:
            headers.append((b"content-length", length))
        client = scope.get("client")
        if client:
            headers.append((H.X_FORWARDED_FOR, client[0].encode()))
        headers.append((H.X_FORWARDED_PROTO, scope.get("scheme", "http").encode()))
        host = H.get(scope["headers"], b"host")
        if host is not None:
            headers.append((H.X_FORWARDED_HOST, host))
        if root_path:
            headers.append((H.X_FORWARDED_PREFIX, encode_path(root_path)))
        query = scope.get("query_string", b"")
        target = httpx.URL(self.config.url + encode_path(path).decode("ascii"), query=query or None)
        ctx = scope.get(SCOPE_KEY)
        limit = ctx.max_body_size if ctx is not None else DEFAULT_MAX_BODY_SIZE
        body = _request_body(receive, limit) if _has_body(scope) else None
        request = self.client.build_request(scope["method"], target, headers=headers, content=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            raise GatewayError(504, "backend_timeout", f'Backend "{self.name}" did not answer in time.') from None
        except httpx.TransportError as exc:
            raise GatewayError(502, "backend_unavailable", f'Backend "{self.name}" could not be reached: {type(exc).__name__}.') from None
        try:
            raw = response.headers.raw
            hop = H.hop_by_hop(raw)
            out = [(name, value) for name, value in ((k.lower(), v) for k, v in raw) if name not in hop]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


def _body_length(scope: Scope) -> bytes | None:
    """The client's Content-Length, to frame the body upstream the same way (``None``: chunked or no body)."""
    length = None
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            length = value
    return length if length not in (None, b"0") else None


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value != b"0"
        if name == b"transfer-encoding":
            return True
    return False


async def _request_body(receive: Receive, limit: int) -> AsyncIterator[bytes]:
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("client disconnected during the request body")  # nobody to answer
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, "body_too_large", f"The request body exceeds the limit of {limit} bytes.")
            yield chunk
        if not message.get("more_body", False):
            return
