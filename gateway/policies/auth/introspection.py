"""Opaque access tokens, checked at the issuer's RFC 7662 introspection endpoint.

One ``Introspector`` per issuer and worker process. The gateway authenticates
as a client of the provider (``client_secret_basic``). An active token's
answer is cached until its ``exp`` and at most ``cache_ttl``; an inactive one
for ``negative_ttl``. Concurrent requests with one token share one call. A
provider that cannot answer is a 401 for the token, never a 500 (docs/auth.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import quote


from gateway import metrics
from gateway.policies.auth.identity import BadCredentials

if TYPE_CHECKING:
    import httpx  # imported where used: a config without remote keys never loads it

logger = logging.getLogger("stackgate.auth")

ERR_INACTIVE = "The bearer token is not valid: its issuer says it is not active (expired, revoked or unknown)."
ERR_UNAVAILABLE = "The bearer token could not be checked: its issuer's introspection endpoint did not answer; try again later."
ERR_NO_ENDPOINT = "The bearer token could not be checked: its issuer's introspection endpoint is not known yet; try again later."
MAX_ANSWER_BYTES = 64 * 1024


class Introspector:
    """Asks one issuer about opaque tokens, and remembers the answers for a while."""

    def __init__(self, name: str, issuer: str, config: Any, endpoint: Callable[[], Optional[str]], leeway: float = 0.0) -> None:
        self.name = name
        self.issuer = issuer
        self.leeway = leeway
        self.config = config
        self._endpoint = endpoint  # the configured URL, or the one discovery found
        secret = config.client_secret.get_secret_value()
        # RFC 6749 §2.3.1: the client id and secret are form-encoded before Basic's base64.
        import httpx

        self.auth = httpx.BasicAuth(quote(config.client_id, safe=""), quote(secret, safe=""))
        self.cache: OrderedDict[bytes, tuple[float, Optional[dict[str, Any]]]] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future] = {}
        self._pid: Optional[int] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._client: Optional[httpx.AsyncClient] = None

    def _attach(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._pid != os.getpid():
            self._pid, self._loop = os.getpid(), loop
            import httpx

            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout), follow_redirects=False, trust_env=False)
            self._pending = {}
        return self._client

    async def claims(self, token: str) -> dict[str, Any]:
        """The active token's claims (``sub``, ``scope``, ...); BadCredentials when it is not active or cannot be checked."""
        client = self._attach()
        key = hashlib.sha256(token.encode("ascii")).digest()
        now = time.monotonic()
        cached = self.cache.get(key)
        if cached is not None:
            if cached[0] > now:
                metrics.INTROSPECTIONS.labels(self.name, "cached").inc()
                if cached[1] is None:
                    raise BadCredentials(ERR_INACTIVE)
                return cached[1]
            del self.cache[key]
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.get_running_loop().create_task(self._ask_safely(client, key, token))
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        claims = await asyncio.shield(pending)
        if claims is None:
            raise BadCredentials(ERR_INACTIVE)
        return claims

    async def _ask_safely(self, client: httpx.AsyncClient, key: bytes, token: str) -> Optional[dict[str, Any]]:
        try:
            return await self._ask(client, key, token)
        except BadCredentials:
            raise
        except Exception:  # a surprise must cost a 401, never a 500
            logger.exception("auth.jwt.%s: introspection failed", self.name)
            metrics.INTROSPECTIONS.labels(self.name, "error").inc()
            raise BadCredentials(ERR_UNAVAILABLE) from None

    async def _ask(self, client: httpx.AsyncClient, key: bytes, token: str) -> Optional[dict[str, Any]]:
        endpoint = self._endpoint()
        if endpoint is None:
            metrics.INTROSPECTIONS.labels(self.name, "error").inc()
            raise BadCredentials(ERR_NO_ENDPOINT)
        import httpx

        try:
            response = await client.post(
                endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                auth=self.auth,
                headers={"accept": "application/json"},
            )
            answer = response.json() if response.status_code == 200 and len(response.content) <= MAX_ANSWER_BYTES else None
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("auth.jwt.%s: introspection at %s failed: %s: %s", self.name, endpoint, type(exc).__name__, exc)
            metrics.INTROSPECTIONS.labels(self.name, "error").inc()
            raise BadCredentials(ERR_UNAVAILABLE) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
            logger.warning("auth.jwt.%s: introspection at %s answered HTTP %s without an RFC 7662 answer", self.name, endpoint, response.status_code)
            metrics.INTROSPECTIONS.labels(self.name, "error").inc()
            raise BadCredentials(ERR_UNAVAILABLE)
        now_wall, now = time.time(), time.monotonic()
        claims = answer if answer["active"] and self._acceptable(answer, now_wall) else None
        if claims is None:
            metrics.INTROSPECTIONS.labels(self.name, "inactive").inc()
            self._remember(key, now + self.config.negative_ttl, None)
            return None
        metrics.INTROSPECTIONS.labels(self.name, "active").inc()
        ttl = float(self.config.cache_ttl)
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and not isinstance(exp, bool):
            ttl = min(ttl, exp - now_wall)
        if ttl > 0:
            self._remember(key, now + ttl, claims)
        return claims

    def _acceptable(self, answer: dict[str, Any], now: float) -> bool:
        """An active answer still checked here: the issuer, the time window, not a refresh token."""
        leeway = self.leeway
        iss = answer.get("iss")
        if iss is not None and iss != self.issuer:
            return False
        exp, nbf = answer.get("exp"), answer.get("nbf")
        if isinstance(exp, (int, float)) and exp + leeway <= now:
            return False
        if isinstance(nbf, (int, float)) and nbf - leeway > now:
            return False
        return answer.get("token_type") not in ("refresh_token", "urn:ietf:params:oauth:token-type:refresh_token")

    def _remember(self, key: bytes, until: float, claims: Optional[dict[str, Any]]) -> None:
        if self.config.cache_size <= 0:
            return
        self.cache[key] = (until, claims)
        self.cache.move_to_end(key)
        while len(self.cache) > self.config.cache_size:
            self.cache.popitem(last=False)
