"""Signing keys fetched from an identity provider: ``jwks_url``, or OpenID Connect discovery.

One ``RemoteKeys`` per issuer and worker process. Nothing is fetched, and no
task or connection made, until the worker's event loop runs (workers fork
from a preloaded parent). Keys are cached for the ``Cache-Control`` max-age
within the issuer's bounds, refreshed in the background before they expire,
and refreshed when a token names an unknown ``kid`` (at most once per
``refresh_min_interval``). One fetch serves every waiter. While the provider
is down, the keys last fetched keep working (docs/auth.md, "OpenID Connect").
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlsplit

import jwt
from jwt import PyJWK

from gateway import metrics

if TYPE_CHECKING:
    import httpx  # imported where used: a config without remote keys never loads it

logger = logging.getLogger("stackgate.auth")

WELL_KNOWN = "/.well-known/openid-configuration"
MAX_DOCUMENT_BYTES = 1 << 20
DEFAULT_TTL = 300.0
"""Seconds keys are kept when the provider sends no ``Cache-Control`` max-age (then clamped to the bounds)."""
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Waits between background retries while the provider cannot be reached."""

#: Public-key algorithms by key type (and curve): what a key without an ``alg`` may verify.
RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
CURVE_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "Ed25519": "EdDSA", "Ed448": "EdDSA"}

ERR_URL_SCHEME = 'must be an https:// URL (http:// only for a loopback host, or with allow_insecure_http = true)'
ERR_URL_FORM = "must be an absolute http(s) URL with a host, and no user name, password or fragment"
_CACHE_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_CACHE_NO_STORE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$)", re.IGNORECASE)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(value: str, allow_insecure_http: bool) -> str:
    """A URL the gateway may fetch keys or ask about tokens from; ValueError with the rule otherwise."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError:
        raise ValueError(ERR_URL_FORM) from None
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password or parts.fragment:
        raise ValueError(ERR_URL_FORM)
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(host):
        raise ValueError(ERR_URL_SCHEME)
    return value


def cache_seconds(cache_control: Optional[str], low: float, high: float) -> float:
    """How long to keep what was fetched: its ``max-age`` (or ``DEFAULT_TTL``), within ``[low, high]``."""
    ttl = DEFAULT_TTL
    if cache_control:
        if _CACHE_NO_STORE.search(cache_control):
            ttl = 0.0
        else:
            match = _CACHE_MAX_AGE.search(cache_control)
            if match:
                ttl = float(match.group(1))
    return max(low, min(high, ttl))


def prepare_keys(data: Any, algorithms: Optional[tuple[str, ...]]) -> dict[Optional[str], dict[str, Any]]:
    """A fetched JWKS -> kid -> alg -> key, for signing keys and the algorithms each may verify.

    A key verifies its own ``alg`` when it names one, else what its type allows:
    RSA the RS*/PS* algorithms configured (RS256 when none are), EC and OKP the
    one algorithm of their curve. Symmetric keys, private keys, encryption keys
    and keys PyJWT cannot read are skipped: a provider's set may hold them.
    """
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError('not a JSON Web Key Set: expected {"keys": [...]}')
    keys: dict[Optional[str], dict[str, Any]] = {}
    for jwk in entries:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or "d" in jwk:
            continue
        kty, kid = jwk.get("kty"), jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        if kty == "RSA":
            candidates: tuple[str, ...] = tuple(a for a in (algorithms or ("RS256",)) if a in RSA_ALGS)
        elif kty in ("EC", "OKP") and jwk.get("crv") in CURVE_ALGS:
            candidates = (CURVE_ALGS[jwk["crv"]],)
        else:
            continue  # "oct" (never a public key) and unknown types
        named = jwk.get("alg")
        if named is not None:
            candidates = (named,) if named in candidates or (named in RSA_ALGS and kty == "RSA") else ()
        if algorithms is not None:
            candidates = tuple(a for a in candidates if a in algorithms)
        prepared: dict[str, Any] = {}
        for alg in candidates:
            try:
                key = PyJWK(jwk, algorithm=alg)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                continue
            if key.Algorithm.check_key_length(key.key):  # e.g. RSA under 2048 bits
                continue
            prepared[alg] = key.key
        if prepared and kid not in keys:
            keys[kid] = prepared
    if not keys:
        raise ValueError("holds no signing key for the allowed algorithms")
    if None in keys and len(keys) > 1:
        del keys[None]  # a key without a kid cannot be chosen among several
    return keys


class FetchError(Exception):
    """The provider could not be reached, or answered with something unusable; the message says which."""


class RemoteKeys:
    """One issuer's remote keys in this worker: the cache, its refresh, and its state for readiness."""

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.issuer = config.issuer
        self.discovery = config.discovery
        self.jwks_url: Optional[str] = config.jwks_url
        self.algorithms = tuple(config.algorithms) if config.algorithms else None
        self.min_ttl = config.keys_min_ttl
        self.max_ttl = config.keys_max_ttl
        self.refresh_min_interval = config.refresh_min_interval
        self.timeout = config.fetch_timeout
        self.allow_insecure_http = config.allow_insecure_http
        self.keys: dict[Optional[str], dict[str, Any]] = {}
        self.fetched_at: Optional[float] = None  # wall clock, for readiness and the age metric
        self.last_attempt: float = float("-inf")  # monotonic
        self._next_fetch: float = 0.0  # monotonic: when the background refresher fetches again
        self.last_error: Optional[str] = None
        self.failures = 0
        self.introspection_endpoint: Optional[str] = None
        self._pid: Optional[int] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._client: Optional[httpx.AsyncClient] = None
        self._inflight: Optional[asyncio.Task] = None
        self._refresher: Optional[asyncio.Task] = None
        self._wake: Optional[asyncio.Event] = None
        self.retired = False  # a reload replaced its settings: no more background refreshes
        metrics.before_scrape(self.report_age)

    # -- this worker's loop --------------------------------------------------

    def _attach(self) -> None:
        """Bind to the running loop of this process (after a fork, or in a new loop: start afresh)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._pid == os.getpid():
            return
        self._pid, self._loop = os.getpid(), loop
        import httpx

        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), follow_redirects=False, trust_env=False)
        self._inflight = None
        self._wake = asyncio.Event()
        self._refresher = None
        if not self.retired:
            self._refresher = loop.create_task(self._refresh_forever(), name=f"stackgate-jwks-{self.name}")

    def start(self) -> None:
        """Begin fetching in the background (at worker startup); never waits, never fails."""
        self._attach()

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._loop = self._client = self._refresher = self._inflight = None

    def retire(self) -> None:
        """Stop refreshing in the background (requests still holding the old config fetch on demand)."""
        self.retired = True
        metrics.forget_before_scrape(self.report_age)
        if self._wake is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    @property
    def client(self) -> httpx.AsyncClient:
        self._attach()
        assert self._client is not None
        return self._client

    # -- what requests ask ---------------------------------------------------

    async def keyset(self, kid: Optional[str]) -> Optional[dict[str, Any]]:
        """The keys of ``kid`` (by algorithm), fetching once more when it is unknown and the rate allows."""
        self._attach()
        found = self._pick(kid)
        if found is not None:
            return found
        if time.monotonic() - self.last_attempt < self.refresh_min_interval and self._inflight is None:
            metrics.JWKS_FETCHES.labels(self.name, "limited").inc()
            return None
        try:
            await self.refresh()
        except FetchError:
            pass  # counted and logged; the token gets its 401
        return self._pick(kid)

    def _pick(self, kid: Optional[str]) -> Optional[dict[str, Any]]:
        keys = self.keys
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        return keys.get(kid) if isinstance(kid, str) else None

    async def refresh(self) -> None:
        """Fetch now, or wait for the fetch under way: one fetch serves every waiter."""
        self._attach()
        task = self._inflight
        if task is None:
            task = self._inflight = asyncio.get_running_loop().create_task(self._fetch())
            task.add_done_callback(self._fetched)
        await asyncio.shield(task)

    def _fetched(self, task: asyncio.Task) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: the waiters saw it
        if self._wake is not None:
            self._wake.set()

    async def _fetch(self) -> None:
        self.last_attempt = time.monotonic()
        try:
            url = self.jwks_url if not self.discovery else await self._discover()
            body, headers = await self._get(url, "the JWKS")
            try:
                keys = prepare_keys(body, self.algorithms)
            except ValueError as exc:
                raise _invalid(f"the JWKS at {url} {exc}") from None
        except Exception as exc:
            if not isinstance(exc, FetchError):  # a surprise must cost a 401, never a 500
                logger.exception("auth.jwt.%s: fetching keys failed", self.name)
                exc = _invalid(f"fetching the keys failed: {type(exc).__name__}")
            self.failures += 1
            self.last_error = str(exc)
            outcome = "invalid" if getattr(exc, "invalid", False) else "error"
            metrics.JWKS_FETCHES.labels(self.name, outcome).inc()
            logger.warning("auth.jwt.%s: keys not fetched: %s", self.name, exc)
            if self.discovery:
                self.jwks_url = None  # discover again next time: the provider may have moved its keys
            self._next_fetch = time.monotonic() + RETRY_SECONDS[min(self.failures, len(RETRY_SECONDS)) - 1]
            raise exc from None
        ttl = cache_seconds(headers.get("cache-control"), self.min_ttl, self.max_ttl)
        self.keys, self.fetched_at, self.failures, self.last_error = keys, time.time(), 0, None
        self._next_fetch = time.monotonic() + max(1.0, ttl * 0.8)  # before they expire
        metrics.JWKS_FETCHES.labels(self.name, "ok").inc()
        metrics.JWKS_KEYS.labels(self.name).set(len(keys))
        self.report_age()
        logger.info("auth.jwt.%s: %d signing keys fetched from %s, kept %.0f s", self.name, len(keys), url, ttl)

    async def _discover(self) -> str:
        if self.jwks_url is not None:
            return self.jwks_url
        url = self.issuer.rstrip("/") + WELL_KNOWN
        document, _ = await self._get(url, "the discovery document")
        if not isinstance(document, dict):
            raise _invalid(f"the discovery document at {url} is not a JSON object")
        if document.get("issuer") != self.issuer:
            raise _invalid(f'the discovery document at {url} names the issuer {document.get("issuer")!r}, not {self.issuer!r}')
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise _invalid(f'the discovery document at {url} has no "jwks_uri"')
        introspection = document.get("introspection_endpoint")
        try:
            check_url(jwks_uri, self.allow_insecure_http)
            if isinstance(introspection, str):
                self.introspection_endpoint = check_url(introspection, self.allow_insecure_http)
        except ValueError as exc:
            raise _invalid(f"the discovery document at {url} names an endpoint that {exc}") from None
        self.jwks_url = jwks_uri
        return jwks_uri

    async def _get(self, url: str, what: str) -> tuple[Any, httpx.Headers]:
        import httpx

        try:
            async with self.client.stream("GET", url, headers={"accept": "application/json"}) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise _invalid(f"{what} at {url} is larger than {MAX_DOCUMENT_BYTES} bytes")
        except httpx.TimeoutException:
            raise FetchError(f"{what} at {url}: no answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{what} at {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise FetchError(f"{what} at {url}: HTTP {response.status_code}")
        try:
            return json.loads(body), response.headers
        except ValueError:
            raise _invalid(f"{what} at {url} is not JSON") from None

    # -- background refresh --------------------------------------------------

    async def _refresh_forever(self) -> None:
        """Fetch at startup, then again before the keys expire; retry with backoff while it fails."""
        assert self._wake is not None
        while not self.retired:
            if time.monotonic() >= self._next_fetch:
                try:
                    await self.refresh()
                except FetchError:
                    pass
                except Exception:  # the refresher must outlive any surprise
                    logger.exception("auth.jwt.%s: key refresh failed", self.name)
            self._wake.clear()  # set when any fetch ends (one for an unknown kid too): plan again from it
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.5, self._next_fetch - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    # -- state ---------------------------------------------------------------

    def age(self) -> Optional[float]:
        return None if self.fetched_at is None else max(0.0, time.time() - self.fetched_at)

    def report_age(self) -> None:
        age = self.age()
        if age is not None:
            metrics.JWKS_KEY_AGE.labels(self.name).set(age)

    def readiness(self) -> dict[str, Any]:
        """Not ready before the first successful fetch; after it ready, with a warning while fetches fail."""
        self._attach()
        check: dict[str, Any] = {"ok": self.fetched_at is not None, "issuer": self.issuer, "keys": len(self.keys)}
        age = self.age()
        if age is not None:
            check["age_seconds"] = round(age, 1)
        if self.fetched_at is None:
            check["error"] = self.last_error or "the signing keys are being fetched"
        elif self.last_error is not None:
            check["warning"] = f"the last fetch failed ({self.last_error}); the keys fetched {age:.0f} s ago are in use"
        return check


def _invalid(message: str) -> FetchError:
    error = FetchError(message)
    error.invalid = True  # type: ignore[attr-defined]
    return error


_REMOTE: dict[tuple, RemoteKeys] = {}


def remote_keys(name: str, config: Any) -> RemoteKeys:
    """The process's ``RemoteKeys`` for an issuer: shared by the configs a reload swaps in while its keys stay the same."""
    key = (
        name, config.issuer, config.jwks_url, config.discovery, tuple(config.algorithms or ()), config.keys_min_ttl,
        config.keys_max_ttl, config.refresh_min_interval, config.fetch_timeout, config.allow_insecure_http,
    )
    found = _REMOTE.get(key)
    if found is None:
        for old_key, old in list(_REMOTE.items()):
            if old_key[0] == name:  # the issuer's settings changed: its old keys stop refreshing
                old.retire()
                del _REMOTE[old_key]
        found = _REMOTE[key] = RemoteKeys(name, config)
    return found
