"""One Redis round trip per rate for the sliding-window counter: limits' own scripts, pipelined.

limits' strategy needs two round trips for what a throttled response needs:
``hit`` (the acquire script), then ``get_window_stats`` (the window script)
for the ``RateLimit`` header. Both are limits' registered Lua scripts; sent
in one pipeline they run back to back on the server, in that order, with
half the round trips and half the client-side command handling. The
acquire stays atomic, as it was.

Only limits' ``RedisStorage`` through redis-py with the sliding-window
counter takes this path (``PipelinedSlidingWindow.for_limiter`` says which).
A Redis that lost the scripts (restarted: NOSCRIPT) is answered through the
strategy itself, which loads them again.
"""

from __future__ import annotations

import time
from math import floor, inf
from typing import Any, Optional

import limits
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.exceptions import NoScriptError


class PipelinedSlidingWindow:
    def __init__(self, storage: Any, strategy: SlidingWindowCounterRateLimiter) -> None:
        self.storage = storage
        self.strategy = strategy
        self.bridge = storage.bridge

    @classmethod
    def for_limiter(cls, storage: Any, strategy: Any) -> Optional["PipelinedSlidingWindow"]:
        bridge = getattr(storage, "bridge", None)
        if not isinstance(strategy, SlidingWindowCounterRateLimiter) or type(bridge).__name__ != "RedispyBridge":
            return None
        if not all(hasattr(bridge, name) for name in ("lua_acquire_sliding_window", "lua_sliding_window", "prefixed_key")):
            return None  # a limits release laid out differently: the strategy's own two round trips
        return cls(storage, strategy)

    async def hit(self, item: limits.RateLimitItem, *identifiers: str) -> tuple[bool, float, int]:
        """Spend one of ``item``; returns (allowed, reset time, remaining) as limits computes them."""
        key = item.key_for(*identifiers)
        keys = [
            self.bridge.prefixed_key(self.storage._previous_window_key(key)),
            self.bridge.prefixed_key(self.storage._current_window_key(key)),
        ]
        expiry = item.get_expiry()
        pipe = self.bridge.get_connection().pipeline(transaction=False)
        pipe.evalsha(self.bridge.lua_acquire_sliding_window.sha, 2, *keys, item.amount, expiry, 1)
        pipe.evalsha(self.bridge.lua_sliding_window.sha, 2, *keys, expiry)
        acquired, window = await pipe.execute(raise_on_error=False)
        if isinstance(acquired, Exception):
            if not isinstance(acquired, NoScriptError):
                raise acquired
            # Neither script ran: the strategy spends it and loads the scripts again.
            allowed = await self.strategy.hit(item, *identifiers)
            reset, remaining = await self.strategy.get_window_stats(item, *identifiers)
            return allowed, reset, remaining
        if isinstance(window, Exception):
            reset, remaining = await self.strategy.get_window_stats(item, *identifiers)
            return bool(acquired), reset, remaining
        reset, remaining = self._stats(item, window)
        return bool(acquired), reset, remaining

    def _stats(self, item: limits.RateLimitItem, window: list) -> tuple[float, int]:
        """limits' ``SlidingWindowCounterRateLimiter.get_window_stats`` on the script's answer."""
        previous_count = int(window[0] or 0)
        previous_expires_in = max(0.0, float(window[1] or 0)) / 1000
        current_count = int(window[2] or 0)
        current_expires_in = max(0.0, float(window[3] or 0)) / 1000
        weighted = self.strategy._weighted_count(item, previous_count, previous_expires_in, current_count)
        remaining = max(0, item.amount - floor(weighted))
        now = time.time()
        if not (previous_count or current_count):
            return now, remaining
        expiry = item.get_expiry()
        previous_reset_in = previous_expires_in % (expiry / previous_count) if previous_count else inf
        current_reset_in = current_expires_in % expiry if current_count else inf
        return now + min(previous_reset_in, current_reset_in), remaining
