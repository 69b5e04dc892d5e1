"""Failed authentication is rate-limited, before any password is hashed: ``[auth.failure_rates]``.

A failure counts for its client address, and for the address with the
identity it claimed; once either is spent, a 429 ``too_many_auth_failures``.
Basic is checked against the counters before the password; API keys and
tokens after (a valid one always passes). Successes never count. The counters
live in ``[throttle] storage`` (docs/auth.md, "Failed authentication").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from typing import Optional

import limits
from limits.aio.storage import MemoryStorage

from gateway import metrics
from gateway.context import Services
from gateway.errors import GatewayError
from gateway.policies.auth.identity import BadCredentials
from gateway.policies.throttle import STORE_RETRY_SECONDS, Limiter, ThrottleSettings, client_key, limiter_for, parse_rate
from gateway.types import Scope

logger = logging.getLogger("stackgate.auth")

NAMESPACE = "auth-failures"
"""The counters' namespace in the throttle's storage."""
CODE = "too_many_auth_failures"
ERR_ADDRESS = "Too many failed authentication attempts from this address; retry in {seconds} seconds."
ERR_IDENTITY = "Too many failed authentication attempts for this identity from this address; retry in {seconds} seconds."
_MESSAGES = {"address": ERR_ADDRESS, "identity": ERR_IDENTITY}
UNCLAIMED = b"-"
"""The claimed identity of credentials too malformed to name one."""


class Attempt:
    """One request's credentials on their way through the check: where from, whom they claim."""

    __slots__ = ("scope", "claimed", "counted", "_address")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.claimed: bytes = UNCLAIMED
        """``scheme:identity`` as the client claims it, unverified."""
        self.counted = False
        self._address: Optional[str] = None

    @property
    def address(self) -> str:
        if self._address is None:
            self._address = client_key(self.scope)  # the throttle's: proxies honoured, IPv6 by /64
        return self._address

    @property
    def identity_key(self) -> str:
        # Hashed: a claimed name is the client's text, of any length and alphabet.
        return self.address + "/" + hashlib.sha256(self.claimed).hexdigest()[:32]


class FailureGuard:
    """The failure counters of one config; the storage is the throttle's, shared across reloads."""

    def __init__(self, address: list[str], address_identity: list[str], throttle: ThrottleSettings) -> None:
        self.address = tuple(parse_rate(rate) for rate in address)
        self.address_identity = tuple(parse_rate(rate) for rate in address_identity)
        self.throttle = throttle
        self.deny_on_error = throttle.on_store_error == "deny"
        self.limiter: Optional[Limiter] = None
        self._pending: dict[str, int] = {}
        """Counter key -> Basic checks of this process under way for it."""

    def __bool__(self) -> bool:
        return bool(self.address or self.address_identity)

    def use(self, services: Services) -> None:
        """Count in the gateway's throttle storage (``services.throttle``), creating it if need be."""
        self.limiter = limiter_for(self.throttle, services)

    def _limiter(self) -> Limiter:
        if self.limiter is None:  # no route checks credentials: only the admin endpoints do
            self.limiter = limiter_for(self.throttle, _OWN)
        return self.limiter

    def _counters(self, attempt: Attempt) -> list[tuple[str, tuple[limits.RateLimitItem, ...], str]]:
        counters = []
        if self.address:
            counters.append(("address", self.address, attempt.address))
        if self.address_identity:
            counters.append(("identity", self.address_identity, attempt.identity_key))
        return counters

    async def admit(self, attempt: Attempt) -> None:
        """Refuse (429) an attempt whose address is out of failures already, before any costly check.

        Password checks of this process still under way count as failures until they end, so a
        burst of guesses cannot all pass here before the first of them is counted. (Nothing
        awaits between the last look at them here and ``reserve``: the look is exact.)
        """
        if not self:
            return
        limiter = self._limiter()
        if limiter.down_until > time.monotonic():
            return self._store_unavailable()
        looks = [(label, key, item) for label, items, key in self._counters(attempt) for item in items]
        stats = limiter.strategy.get_window_stats
        try:
            if isinstance(limiter.storage, MemoryStorage):
                answers = [await stats(item, NAMESPACE, key) for _, key, item in looks]
            else:  # one round trip for all, not one after another
                answers = await asyncio.gather(*(stats(item, NAMESPACE, key) for _, key, item in looks))
        except Exception as exc:
            return self._store_failed(limiter, exc)
        for (label, key, _), (reset, remaining) in zip(looks, answers):
            if remaining <= self._pending.get(key, 0):
                raise self._refused(label, reset)

    async def failed(self, attempt: Attempt) -> None:
        """Count a failure (once per attempt); 429 when it is beyond a rate."""
        if attempt.counted or not self:
            return
        attempt.counted = True
        limiter = self._limiter()
        if limiter.down_until > time.monotonic():
            return self._store_unavailable()
        try:
            for label, items, key in self._counters(attempt):
                states = await limiter.hit(items, NAMESPACE, key)
                if not states[-1].allowed:
                    raise self._refused(label, states[-1].reset)
        except GatewayError:
            raise
        except Exception as exc:
            self._store_failed(limiter, exc)

    def reserve(self, attempt: Attempt) -> "Reservation":
        """A costly check ``admit`` let through is under way: it counts as a failure until it ends."""
        keys = [key for _, _, key in self._counters(attempt)] if self else []
        for key in keys:
            self._pending[key] = self._pending.get(key, 0) + 1
        return Reservation(self, attempt, keys)

    def _release(self, keys: list[str]) -> None:
        for key in keys:
            left = self._pending[key] - 1
            if left:
                self._pending[key] = left
            else:
                del self._pending[key]

    @staticmethod
    def _refused(label: str, reset: float) -> GatewayError:
        metrics.AUTH_FAILURES_THROTTLED.labels(label).inc()
        seconds = max(1, math.ceil(reset - time.time()))
        return GatewayError(429, CODE, _MESSAGES[label].format(seconds=seconds), [(b"retry-after", str(seconds).encode())])

    def _store_failed(self, limiter: Limiter, exc: Exception) -> None:
        limiter.store_errors += 1
        metrics.THROTTLE_STORE_ERRORS.labels(NAMESPACE).inc()
        limiter.down_until = time.monotonic() + STORE_RETRY_SECONDS
        action = "denying" if self.deny_on_error else "not counting"
        logger.warning("auth failure counters: storage failed: %s; %s for %s s", exc, action, STORE_RETRY_SECONDS)
        self._store_unavailable()

    def _store_unavailable(self) -> None:
        if self.deny_on_error:  # the throttle's own answer for the same outage
            raise GatewayError(503, "throttle_unavailable", "The rate-limit store is unavailable; retry shortly.", [(b"retry-after", b"1")])


class Reservation:
    """One costly check under way (``FailureGuard.reserve``): end it with ``failed`` or ``release``."""

    __slots__ = ("guard", "attempt", "keys")

    def __init__(self, guard: FailureGuard, attempt: Attempt, keys: list[str]) -> None:
        self.guard = guard
        self.attempt = attempt
        self.keys = keys

    async def failed(self) -> None:
        """Count the failure, then end (in that order: no moment counts it neither way); 429 beyond a rate."""
        try:
            await self.guard.failed(self.attempt)
        finally:
            self.release()

    def release(self) -> None:
        """End without a failure to count (success, or no answer); only the first call counts."""
        keys, self.keys = self.keys, []
        self.guard._release(keys)


_OWN = Services()
"""The storage of a config whose routes never check credentials (only the admin endpoints do)."""
