"""``kind = "http"``: a stack on its own servers, reached through a pooled httpx client.

The upstream sees the path below the route's prefix (or the whole path when
the route keeps its prefix) and learns the prefix from ``X-Forwarded-Prefix``,
the client from ``X-Forwarded-For``/``-Proto``/``-Host``. Bodies stream both
ways.
"""

from __future__ import annotations

from typing import AsyncIterator, Literal

import httpx
from pydantic import Field, field_validator

from gateway.backends.base import Backend
from gateway.backends.wsgi import ClientDisconnected
from gateway.errors import GatewayError
from gateway.paths import encode_path
from gateway.schema import Schema
from gateway.types import Receive, Scope, Send

# Hop-by-hop headers (RFC 9110 7.6.1) and those httpx sets itself.
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)


class HTTPBackendConfig(Schema):
    kind: Literal["http"]
    url: str
    """Base URL of the upstream, e.g. ``http://10.0.0.5:8001``."""
    timeout: float = Field(30.0, gt=0)
    """Seconds to connect, and between bytes of the response."""
    max_connections: int = Field(100, ge=1)
    """Size of the connection pool; requests beyond it wait for ``timeout``."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
            raise ValueError('must be an http(s) base URL such as "http://127.0.0.1:8001"')
        return value.rstrip("/")


class HTTPBackend(Backend):
    kind = "http"

    def __init__(self, name: str, config: HTTPBackendConfig) -> None:
        super().__init__(name, config)
        self.client = httpx.AsyncClient(
            base_url=config.url,
            timeout=httpx.Timeout(config.timeout),
            limits=httpx.Limits(max_connections=config.max_connections),
            follow_redirects=False,
        )

    async def shutdown(self) -> None:
        await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        root_path = scope.get("root_path", "")
        path = scope["path"][len(root_path) :] or "/"
        headers = [(name, value) for name, value in scope["headers"] if name not in _HOP]
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", client[0].encode()))
        headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        for name, value in scope["headers"]:
            if name == b"host":
                headers.append((b"x-forwarded-host", value))
                break
        if root_path:
            headers.append((b"x-forwarded-prefix", encode_path(root_path)))
        target = httpx.URL(
            self.config.url + encode_path(path).decode("ascii"),
            query=scope.get("query_string", b""),
        )
        limit = scope.get("stackgate.max_body_size", 10 << 20)
        body = _request_body(receive, limit) if _has_body(scope) else None
        request = self.client.build_request(scope["method"], target, headers=headers, content=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            raise GatewayError(504, "backend_timeout", f'Backend "{self.name}" did not answer in time.') from None
        except httpx.TransportError as exc:
            raise GatewayError(502, "backend_unavailable", f'Backend "{self.name}" could not be reached: {type(exc).__name__}.') from None
        try:
            out = [
                (k.lower(), v) for k, v in response.headers.raw if k.lower() not in _HOP or k.lower() == b"content-length"
            ]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


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
