"""Throttling with the ``limits`` library: exact on one worker, many workers and many hosts.

A policy (``[throttle.policies.NAME]``, README) is one quota shared by every
route naming it, keyed by consumer id, or by client address for anonymous
clients (IPv6 by its /64). Rates are counted in order and the first that
refuses ends the request: a 429 with ``Retry-After``; throttled responses carry
``RateLimit-Policy`` and ``RateLimit``. On Redis the default strategy takes one
script call per request (``gateway.storage.redis_window``); ``redis+sentinel://``
and ``redis+cluster://`` storages keep one script per request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal, Optional

import limits
from limits.aio import strategies
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisSentinelStorage, RedisStorage, Storage
from pydantic import Field, field_validator

from gateway import metrics
from gateway.context import SCOPE_KEY, RequestContext, Services
from gateway.errors import GatewayError
from gateway.storage import WindowState
from gateway.schema import Schema
from gateway.types import Receive, Scope, Send

logger = logging.getLogger("stackgate.throttle")

RATE_FORM = 'must be a rate such as "100/minute", "10/second", "5000/day" or "30/hour"'
STRATEGIES = {
    "sliding-window-counter": strategies.SlidingWindowCounterRateLimiter,
    "moving-window": strategies.MovingWindowRateLimiter,
    "fixed-window": strategies.FixedWindowRateLimiter,
}
STORE_RETRY_SECONDS = 1.0
REDIS_TIMEOUT_SECONDS = 0.5
"""The default ``store_timeout``: how long Redis may take to connect or to answer before it counts as unreachable."""
REDIS_MAX_CONNECTIONS = 64
"""Connections to Redis per worker; a request finding all busy waits for one."""
REDIS_POOL_WAIT_SECONDS = 10.0
"""How long a request waits for one of those connections. All of them busy is the worker's own
burst, not Redis down (that is the command timeout's to tell): it must not open the throttle."""


REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://", "redis+sentinel://", "redis+cluster://")
STORAGE_FORM = ('must be "memory://" or a Redis URL such as "redis://127.0.0.1:6379/0", '
                '"redis+sentinel://127.0.0.1:26379/mymaster" or "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"')


def parse_rate(value: str) -> limits.RateLimitItem:
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(RATE_FORM)
    try:
        items = limits.parse_many(value)
    except ValueError:
        raise ValueError(RATE_FORM) from None
    if len(items) != 1 or items[0].amount < 1:
        raise ValueError(RATE_FORM)
    return items[0]


def _rates(values: list[str]) -> list[str]:
    if not values:
        raise ValueError("must list at least one rate")
    for value in values:
        parse_rate(value)
    return values


class ThrottlePolicyConfig(Schema):
    """One ``[throttle.policies.NAME]`` table."""

    rates: list[str]
    """Rates for authenticated consumers, DRF style ("100/minute"); all must hold."""
    anonymous: Optional[list[str]] = None
    """Rates for clients without identity (keyed by IP); default: ``rates``."""
    roles: dict[str, list[str]] = {}
    """Role -> rates; the first role (in this table's order) the consumer has wins."""
    consumers: dict[str, list[str]] = {}
    """Consumer id -> rates; wins over ``roles``."""

    @field_validator("rates")
    @classmethod
    def _check_rates(cls, value: list[str]) -> list[str]:
        return _rates(value)

    @field_validator("anonymous")
    @classmethod
    def _anonymous(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        return None if value is None else _rates(value)

    @field_validator("roles", "consumers")
    @classmethod
    def _overrides(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for rates in value.values():
            _rates(rates)
        return value


class ThrottleSettings(Schema):
    """The ``[throttle]`` table."""

    storage: str = "memory://"
    """``memory://`` (one process), ``redis://host:port/db`` / ``rediss://…`` (shared),
    ``redis+sentinel://host:port,host:port/SERVICE`` or ``redis+cluster://host:port,host:port``."""
    strategy: Literal["sliding-window-counter", "moving-window", "fixed-window"] = "sliding-window-counter"
    """How windows are counted (see the limits library)."""
    on_store_error: Literal["allow", "deny"] = "allow"
    """What happens to requests while the storage cannot be reached."""
    store_timeout: float = Field(REDIS_TIMEOUT_SECONDS, ge=0.05, le=30)
    """Redis only: seconds to connect or to answer a call before the storage counts as unreachable."""
    max_keys: int = Field(100_000, ge=100)
    """Memory storage only: counters kept at most; the soonest-expiring are dropped beyond."""
    key_prefix: str = "stackgate"
    """Prefix of every key in a shared storage."""
    policies: dict[str, ThrottlePolicyConfig] = {}

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if value != "memory://" and not value.startswith(REDIS_SCHEMES):
            raise ValueError(STORAGE_FORM)
        if value.startswith(("redis+sentinel://", "redis+cluster://")):
            scheme, _, rest = value.partition("://")
            hosts, _, path = rest.rpartition("@")[2].partition("/")
            if not hosts or any(not h.rpartition(":")[2].isdigit() for h in hosts.split(",")):
                raise ValueError(f"{scheme}:// needs host:port[,host:port...]: {STORAGE_FORM}")
            if scheme == "redis+sentinel" and not path.strip("/"):
                raise ValueError("redis+sentinel:// needs the service name after the hosts: redis+sentinel://host:26379/mymaster")
        return value


class RouteThrottleFields(Schema):
    """Route-level keys of the throttle policy."""

    throttle: Optional[str] = None
    """Name of a ``[throttle.policies.NAME]`` table applied to this route."""


_WRAPPED = (
    "incr", "get", "get_expiry", "check", "reset", "clear",
    "acquire_entry", "get_moving_window",
    "acquire_sliding_window_entry", "get_sliding_window", "clear_sliding_window",
)
"""The methods limits wraps in its error translator (``limits.aio.storage.base._wrap_errors``)."""


try:  # limits' own (private) wrapper; without it, nothing is peeled and all still works
    from limits.aio.storage.base import _wrap_errors

    _WRAPPER_CODE: Any = _wrap_errors(lambda: None).__code__  # type: ignore[arg-type]
except (ImportError, AttributeError, TypeError):  # pragma: no cover - another limits release
    _WRAPPER_CODE = None


def _is_error_wrapper(fn: Any) -> bool:
    return getattr(fn, "__code__", None) is _WRAPPER_CODE and hasattr(fn, "__wrapped__")


def _peel_error_wrappers(cls: type, keep: bool) -> None:
    """Peel limits' error wrappers off ``cls``'s storage methods, keeping one (``keep``) or none.

    limits wraps each storage method again for every subclass and every mixin
    (``__init_subclass__``), so one hit on the memory storage ran through ten
    nested wrapper coroutines. The memory storage raises nothing to translate,
    so it keeps none; Redis keeps one, so its errors still arrive as
    ``limits.errors.StorageError``.
    """
    for name in _WRAPPED:
        fn = getattr(cls, name, None)
        if fn is None or not _is_error_wrapper(fn):
            continue
        while _is_error_wrapper(fn.__wrapped__):
            fn = fn.__wrapped__
        setattr(cls, name, fn if keep else fn.__wrapped__)


class BoundedMemoryStorage(MemoryStorage):
    """limits' memory storage with a cap on keys and a scan at most once a second.

    Upstream rescans every key whenever its last scan finished, so many keys
    cost CPU on every request; and nothing bounds the number of keys.
    """

    def __init__(self, max_keys: int) -> None:
        super().__init__("async+memory://")
        self.max_keys = max_keys
        self._last_scan = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:  # name-mangled upstream hook
        now = time.monotonic()
        if now - self._last_scan >= 1.0 or len(self.storage) + len(self.events) > self.max_keys:
            self._last_scan = now
            await self._MemoryStorage__expire_events()
            self._evict()

    def _evict(self) -> None:
        excess = len(self.expirations) - self.max_keys
        if excess > 0:
            for key, _ in sorted(self.expirations.items(), key=lambda kv: kv[1])[:excess]:
                self.storage.pop(key, None)
                self.expirations.pop(key, None)
                self.locks.pop(key, None)
        excess = len(self.events) - self.max_keys
        if excess > 0:
            for key in sorted(self.events, key=lambda k: self.events[k][0].expiry if self.events[k] else 0)[:excess]:
                self.events.pop(key, None)
                self.locks.pop(key, None)


_peel_error_wrappers(BoundedMemoryStorage, keep=False)


class _RedisStorage(RedisStorage):
    """limits' Redis storage with one error wrapper per method instead of several."""


_peel_error_wrappers(_RedisStorage, keep=True)


class _RedisSentinelStorage(RedisSentinelStorage):
    """limits' Sentinel storage (the primary found through the sentinels), one error wrapper per method."""


class _RedisClusterStorage(RedisClusterStorage):
    """limits' Cluster storage (redis-py's cluster client), one error wrapper per method."""


_peel_error_wrappers(_RedisSentinelStorage, keep=True)
_peel_error_wrappers(_RedisClusterStorage, keep=True)


def build_storage(settings: ThrottleSettings) -> Storage:
    if settings.storage == "memory://":
        return BoundedMemoryStorage(settings.max_keys)
    timeouts = dict(socket_timeout=settings.store_timeout, socket_connect_timeout=settings.store_timeout)
    if settings.storage.startswith("redis+sentinel://"):
        # Writes go to the primary only (a replica's count lags it): use_replicas off.
        return _RedisSentinelStorage(
            "async+" + settings.storage, implementation="redispy", key_prefix=settings.key_prefix,
            wrap_exceptions=True, use_replicas=False, sentinel_kwargs=timeouts, **timeouts,
        )
    if settings.storage.startswith("redis+cluster://"):
        return _RedisClusterStorage(
            "async+" + settings.storage, implementation="redispy", key_prefix=settings.key_prefix,
            wrap_exceptions=True, **timeouts,
        )
    import redis.asyncio  # here: a config without Redis never loads redis-py

    # redis-py's default pool raises once 100 commands are in flight, which would read as an outage
    # (and open the throttle for a second) under a burst: a blocking pool makes the burst wait instead.
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        settings.storage.replace("redis+unix://", "unix://", 1),
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=REDIS_POOL_WAIT_SECONDS,
        **timeouts,
    )
    return _RedisStorage(
        "async+" + settings.storage,
        implementation="redispy",
        key_prefix=settings.key_prefix,
        wrap_exceptions=True,
        connection_pool=pool,
    )


def storage_key(settings: ThrottleSettings) -> tuple:
    """The settings a limiter is built from: while they stay the same, a reload keeps it (and its counts)."""
    return (settings.storage, settings.strategy, settings.max_keys, settings.key_prefix, settings.store_timeout)


class Limiter:
    """One storage and strategy, kept across reloads while the storage settings stay the same."""

    def __init__(self, settings: ThrottleSettings) -> None:
        self.settings_key = storage_key(settings)
        self.storage = build_storage(settings)
        self.strategy = STRATEGIES[settings.strategy](self.storage)
        one_trip = isinstance(self.storage, RedisStorage) and settings.strategy == "sliding-window-counter"
        if one_trip:
            from gateway.storage.redis_window import RedisWindow
        direct = not isinstance(self.storage, (RedisSentinelStorage, RedisClusterStorage))
        self.window = (
            RedisWindow(self.storage, settings.store_timeout, direct=direct, one_slot=isinstance(self.storage, RedisClusterStorage),
                        in_flight=REDIS_MAX_CONNECTIONS, queue_timeout=REDIS_POOL_WAIT_SECONDS)
            if one_trip else None
        )
        """Redis with the sliding window counter: one script per request (``redis_window``), not limits' two."""
        self.down_until = 0.0
        self.store_errors = 0

    async def hit(self, items: tuple[limits.RateLimitItem, ...], namespace: str, key: str) -> list[WindowState]:
        """Count a request against each rate in turn, stopping at the first that refuses."""
        if self.window is not None:  # Redis, sliding window counter: one round trip for all the rates
            return await self.window.hit(items, namespace, key)
        states = []
        for item in items:
            allowed = await self.strategy.hit(item, namespace, key)
            reset, remaining = await self.strategy.get_window_stats(item, namespace, key)
            states.append(WindowState(allowed, remaining, reset))
            if not allowed:
                break
        return states

    async def aclose(self) -> None:
        """Close what the storage holds open (Redis: its pool and the window's connection); never raises."""
        try:
            if self.window is not None:
                await self.window.aclose()
            if isinstance(self.storage, RedisClusterStorage):
                await self.storage.bridge.get_connection().aclose()
            elif isinstance(self.storage, RedisStorage):
                await self.storage.bridge.get_connection().connection_pool.disconnect()
        except Exception as exc:  # closing a connection to a server that is gone: nothing left to do
            logger.debug("closing the throttle storage: %s", exc)

    async def healthy(self) -> bool:
        try:
            return bool(await self.storage.check())
        except Exception:
            return False


@dataclass(frozen=True)
class _RateSet:
    items: tuple[limits.RateLimitItem, ...]
    names: tuple[bytes, ...]
    policy_header: bytes


def _rate_set(policy: str, rates: list[str]) -> _RateSet:
    items = tuple(parse_rate(r) for r in rates)
    names = tuple(f'"{policy}-{i}"'.encode() for i in range(len(items)))
    header = ", ".join(f"{name.decode()};q={item.amount};w={item.get_expiry()}" for name, item in zip(names, items))
    return _RateSet(items, names, header.encode())


def client_key(scope: Scope) -> str:
    client = scope.get("client")
    host = client[0] if client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "ip:" + host
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return "ip:" + str(address.ipv4_mapped)
        return "ip6:" + str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)
    return "ip:" + str(address)


class Throttle:
    """The ASGI handler of one route's throttle policy."""

    def __init__(self, app: Any, name: str, config: ThrottlePolicyConfig, limiter: Limiter, on_store_error: str) -> None:
        self.app = app
        self.name = name
        self.limiter = limiter
        self.deny_on_error = on_store_error == "deny"
        self.default = _rate_set(name, config.rates)
        self.anonymous = _rate_set(name, config.anonymous) if config.anonymous else self.default
        self.roles = [(role, _rate_set(name, rates)) for role, rates in config.roles.items()]
        self.consumers = {consumer: _rate_set(name, rates) for consumer, rates in config.consumers.items()}

    def _select(self, scope: Scope) -> tuple[_RateSet, str]:
        ctx: RequestContext = scope[SCOPE_KEY]
        identity = ctx.identity
        if not identity:
            return self.anonymous, client_key(scope)
        chosen = self.consumers.get(identity)
        if chosen is None:
            roles = ctx.roles
            chosen = next((rates for role, rates in self.roles if role in roles), self.default)
        return chosen, "c:" + identity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rates, key = self._select(scope)
        headers = await self._check(rates, key)
        if headers is None:  # storage down and configured to allow: the policy holds, its state is unknown
            headers = [(b"ratelimit-policy", rates.policy_header)]
        scope[SCOPE_KEY].response_headers.extend(headers)
        await self.app(scope, receive, send)

    async def _check(self, rates: _RateSet, key: str) -> Optional[list[tuple[bytes, bytes]]]:
        limiter = self.limiter
        if limiter.down_until > time.monotonic():
            return self._store_unavailable()
        try:
            states = await limiter.hit(rates.items, self.name, key)
        except Exception as exc:
            limiter.store_errors += 1
            metrics.THROTTLE_STORE_ERRORS.labels(self.name).inc()
            limiter.down_until = time.monotonic() + STORE_RETRY_SECONDS
            logger.warning("throttle storage failed: %s; %s requests for %s s", str(exc) or type(exc).__name__, "denying" if self.deny_on_error else "allowing", STORE_RETRY_SECONDS)
            return self._store_unavailable()

        now = time.time()
        headers = [
            (b"ratelimit-policy", rates.policy_header),
            (b"ratelimit", b", ".join(b"%s;r=%d;t=%d" % (n, s.remaining, max(0, math.ceil(s.reset - now))) for n, s in zip(rates.names, states))),
        ]
        if not states[-1].allowed:
            retry_after = str(max(1, math.ceil(states[-1].reset - now))).encode()
            raise GatewayError(
                429,
                "rate_limited",
                f"Rate limit exceeded; retry in {retry_after.decode()} seconds.",
                [*headers, (b"retry-after", retry_after)],
            )
        return headers

    def _store_unavailable(self) -> None:
        if self.deny_on_error:
            raise GatewayError(
                503,
                "throttle_unavailable",
                "The rate-limit store is unavailable; retry shortly.",
                [(b"retry-after", b"1")],
            )
        return None


def limiter_for(settings: ThrottleSettings, services: Services) -> Limiter:
    """The process's limiter: reused across reloads unless the storage settings changed."""
    limiter: Optional[Limiter] = services.throttle
    if limiter is None or limiter.settings_key != storage_key(settings):
        if limiter is not None:
            _close_later(limiter)
        limiter = services.throttle = Limiter(settings)
    return limiter


RETIRED_GRACE_SECONDS = 30.0
"""How long a limiter replaced by a reload stays open for the requests that still hold it."""


def _close_later(limiter: Limiter) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # built outside a loop (startup, a check): nothing of it was opened yet
        return
    loop.call_later(RETIRED_GRACE_SECONDS, _start_closing, loop, limiter)


_closing: set[asyncio.Task] = set()
"""The closing tasks, held until done: the loop keeps only weak references to tasks."""


def _start_closing(loop: asyncio.AbstractEventLoop, limiter: Limiter) -> None:
    task = loop.create_task(limiter.aclose())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def wrap(app: Any, route: Any, config: Any, services: Services) -> Any:
    name = getattr(route, "throttle", None)
    if name is None:
        return app
    settings: ThrottleSettings = config.throttle
    return Throttle(app, name, settings.policies[name], limiter_for(settings, services), settings.on_store_error)
