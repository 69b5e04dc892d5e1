"""The sliding-window counter on Redis in one round trip per request, concurrent requests in one pipeline.

One script takes every rate of a request and answers the verdict with the
window state; calls that arrive while one is on the wire go out together (no
MULTI/EXEC). Keys, expiry and counting are limits' own, so limits' strategy
can run beside it. Rates are taken in order; the first that refuses stops the
request (the ones before it have counted it).

Behind Sentinel or in a Cluster the script goes through redis-py's client one
call per request; in a Cluster every key of a request carries one hash tag
(policy and client), so the script's keys share a slot.
"""
# Why (limits' two script calls per rate): docs/performance.md#the-redis-throttle

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Optional

import limits
from redis.exceptions import NoScriptError, ResponseError

from gateway.storage import WindowState

SCRIPT = """
-- KEYS: previous, current window key of each rate; ARGV: cost, then limit and expiry (s) of each rate.
-- Returns, space-separated (one string parses faster than an array), allowed (1/0), previous count,
-- previous TTL (ms), current count and current TTL (ms) of each rate taken, stopping after the first
-- that refuses.
local cost = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS / 2 do
  local previous_key, current_key = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[2 * i])
  local expiry = tonumber(ARGV[2 * i + 1]) * 1000
  local current_ttl = tonumber(redis.call('pttl', current_key))
  if current_ttl > 0 and current_ttl < expiry then
    -- the current window has ended: it becomes the previous one
    redis.call('rename', current_key, previous_key)
    redis.call('set', current_key, 0, 'PX', current_ttl + expiry)
  end
  local previous_count = tonumber(redis.call('get', previous_key)) or 0
  local previous_ttl = math.max(tonumber(redis.call('pttl', previous_key)), 0)
  local current_count = tonumber(redis.call('get', current_key))
  current_ttl = math.max(tonumber(redis.call('pttl', current_key)), 0)
  local allowed = cost <= limit
    and math.floor(previous_count * previous_ttl / expiry) + (current_count or 0) + cost <= limit
  if allowed then
    if current_count then
      current_count = redis.call('incrby', current_key, cost)
    else
      redis.call('set', current_key, cost, 'PX', expiry * 2)
      current_count, current_ttl = cost, expiry * 2
    end
  end
  table.insert(out, allowed and 1 or 0)
  table.insert(out, previous_count)
  table.insert(out, previous_ttl)
  table.insert(out, current_count or 0)
  table.insert(out, current_ttl)
  if not allowed then
    break
  end
end
return table.concat(out, ' ')
"""


CLIENT_DEADLINE_TRIES = 10
"""Through redis-py's client (Sentinel, Cluster), a call may take this many timeouts: its retries included."""


def window_state(item: limits.RateLimitItem, allowed: int, previous_count: int, previous_ttl_ms: int,
                 current_count: int, current_ttl_ms: int, now: float) -> WindowState:
    """limits' ``SlidingWindowCounterRateLimiter.get_window_stats``, from the script's numbers."""
    expiry = item.get_expiry()
    previous_ttl = previous_ttl_ms / 1000
    weighted = previous_count * previous_ttl / expiry + current_count
    remaining = max(0, item.amount - math.floor(weighted))
    if not (previous_count or current_count):
        return WindowState(bool(allowed), remaining, now)
    previous_reset = previous_ttl % (expiry / previous_count) if previous_count else math.inf
    # A window just begun has 2 × expiry to live: it ends in one expiry, not in 0 (limits reads it a moment later).
    current_reset = ((current_ttl_ms / 1000) % expiry or expiry) if current_count else math.inf
    return WindowState(bool(allowed), remaining, now + min(previous_reset, current_reset))


def pack_arguments(*args: str | int) -> tuple[int, bytes]:
    """RESP bulk strings of ``args`` (what redis-py's ``pack_command`` makes, minus its generic work)."""
    body = []
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else b"%d" % arg
        body.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return len(args), b"".join(body)


class RedisWindow:
    """Sliding-window-counter hits on one limits Redis storage (its client, pool and key prefix)."""

    def __init__(self, storage: Any, timeout: float, direct: bool = True, one_slot: bool = False,
                 in_flight: int = 64, queue_timeout: float = 10.0) -> None:
        self.storage = storage
        self.direct = direct
        """Pipeline on the window's own connection to the one server; False: through the client (Sentinel, Cluster)."""
        self.one_slot = one_slot
        """Name every key of a request with one hash tag (Cluster)."""
        self._in_flight = asyncio.Semaphore(in_flight)
        self.queue_timeout = queue_timeout
        """Through the client: calls beyond ``in_flight`` wait, up to this long, rather than fail on a full pool
        (a burst of the worker's own is not Redis down)."""
        self.timeout = timeout
        """Seconds a round trip may take before the connection counts as failed."""
        self.client = storage.bridge.get_connection()
        self.sha: Optional[str] = None
        self._queue: list[tuple[tuple[int, bytes], asyncio.Future]] = []
        self._connection: Any = None
        """The window's own connection (not the pool's): one pipeline is on the wire at a time."""
        self._sending: Optional[asyncio.Task] = None
        self.round_trips = 0
        """Pipelines (or single calls) sent: fewer than calls once requests overlap."""
        self._layouts: dict[int, tuple] = {}
        self._head = (None, b"")
        """The packed ``EVALSHA sha`` for the script's sha."""

    def keys(self, item: limits.RateLimitItem, namespace: str, key: str) -> tuple[str, str]:
        """The rate's previous and current window keys for a client: limits' own names."""
        head, tail = self._key_parts(item)
        current = f"{head}{namespace}/{key}{tail}"
        return current + "/-1", current

    def _key_parts(self, item: limits.RateLimitItem) -> tuple[str, str]:
        """What comes before and after ``namespace/key`` in the rate's current window key."""
        prefix = self.storage.bridge.prefixed_key("")
        if self.one_slot:  # one hash tag for every key of a request (Cluster)
            return prefix + "{", "}/" + item.key_for()
        whole = item.key_for("\0")  # limits' key with a marker where the identifiers go
        before, _, after = whole.partition("\0")
        return f"{prefix}{{{before}", f"{after}}}"

    def _layout(self, items: tuple[limits.RateLimitItem, ...]) -> tuple[list[tuple[str, str]], bytes, bytes]:
        """For these rates (a policy's, the same tuple each request): each one's key parts, then the packed
        key count and the packed amounts and expiries, which do not change from request to request."""
        cached = self._layouts.get(id(items))
        if cached is None or cached[0] is not items:
            parts = [self._key_parts(item) for item in items]
            count = pack_arguments(2 * len(items))[1]
            rates = pack_arguments(*[n for item in items for n in (item.amount, item.get_expiry())])[1]
            if len(self._layouts) >= 1024:  # rates built per request by someone: keep it bounded
                self._layouts.clear()
            cached = self._layouts[id(items)] = (items, parts, count, rates)
        return cached[1], cached[2], cached[3]

    async def hit(self, items: tuple[limits.RateLimitItem, ...], namespace: str, key: str,
                  cost: int = 1) -> list[WindowState]:
        """Take ``cost`` from each rate in turn; the states of the rates taken, the last one refusing if any did."""
        parts, count, rates = self._layout(items)
        keys: list[str] = []
        for head, tail in parts:
            current = f"{head}{namespace}/{key}{tail}"
            keys += (current + "/-1", current)
        if self.direct:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            argc, packed_keys = pack_arguments(*keys, cost)
            self._queue.append(((1 + argc + 2 * len(items), count + packed_keys + rates), future))
            if self._sending is None:
                self._sending = loop.create_task(self._send())
            reply = await future
        else:
            args: list[Any] = [cost]
            for item in items:
                args += (item.amount, item.get_expiry())
            reply = await self._through_client(keys, args)
        now = time.time()
        return [window_state(item, *reply[i * 5:i * 5 + 5], now) for i, item in enumerate(items[:len(reply) // 5])]

    async def _through_client(self, keys: list[str], args: list[Any]) -> list[int]:
        """One EVALSHA through redis-py's client: it finds the primary (Sentinel) or the slot's node (Cluster)."""
        async with asyncio.timeout(self.queue_timeout):
            await self._in_flight.acquire()
        try:
            return await self._evalsha_through_client(keys, args)
        finally:
            self._in_flight.release()

    async def _evalsha_through_client(self, keys: list[str], args: list[Any]) -> list[int]:
        self.round_trips += 1
        # The client's socket timeouts bound each try; the deadline over the call is loose on purpose:
        # one as short as a try cancels redis-py's recovery (a new slot map, the new primary) midway,
        # at every call, and it never recovers.
        async with asyncio.timeout(self.timeout * CLIENT_DEADLINE_TRIES):
            if self.sha is None:
                self.sha = await self.client.script_load(SCRIPT)
            try:
                reply = await self.client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:  # a promoted replica, a node that joined: it has not seen the script
                self.sha = await self.client.script_load(SCRIPT)
                reply = await self.client.evalsha(self.sha, len(keys), *keys, *args)
        return [int(n) for n in reply.split()]

    async def aclose(self) -> None:
        """Close the window's connection (it opens again if hit once more)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect()

    async def _send(self) -> None:
        """Send what is queued, one pipeline at a time, until nothing is (in its own task: no request's cancel stops it)."""
        batch: list[tuple[tuple[int, bytes], asyncio.Future]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    replies = await self._run([call for call, _ in batch])
                except Exception as exc:  # the connection failed: every call of the batch hears it
                    replies = [exc] * len(batch)
                for (_, future), reply in zip(batch, replies):
                    if future.done():  # its request has gone (cancelled)
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except BaseException:  # this task was cancelled (the loop is closing): nobody waits forever
            for _, future in batch + self._queue:
                future.cancel()
            self._queue = []
            raise
        finally:
            self._sending = None

    async def _run(self, calls: list[tuple[int, bytes]]) -> list[Any]:
        if self.sha is None:
            self.sha = await self.client.script_load(SCRIPT)
        replies = await self._evalsha(calls)
        if any(isinstance(r, NoScriptError) for r in replies):  # the server lost its scripts (restart, SCRIPT FLUSH)
            self.sha = await self.client.script_load(SCRIPT)
            again = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            for i, reply in zip(again, await self._evalsha([calls[i] for i in again])):
                replies[i] = reply
        return replies

    async def _evalsha(self, calls: list[tuple[int, bytes]]) -> list[Any]:
        """One write of every call, then their replies in order; a connection that fails is dropped."""
        self.round_trips += 1
        connection = self._connection
        if connection is None:  # connected on first use, again after a failure
            pool = self.client.connection_pool
            # No per-read timeout (redis-py makes a task per write for it): one deadline for the round trip.
            connection = self._connection = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
        if self._head[0] != self.sha:
            self._head = (self.sha, b"$7\r\nEVALSHA\r\n" + pack_arguments(self.sha)[1])
        head = self._head[1]
        try:
            async with asyncio.timeout(self.timeout):
                await connection.send_packed_command(
                    [b"*%d\r\n%s%s" % (argc + 2, head, body) for argc, body in calls], check_health=False
                )
                replies: list[Any] = []
                for _ in calls:
                    try:
                        replies.append(await connection.read_response())
                    except ResponseError as exc:  # the server's answer to this call (NOSCRIPT, ...), not the connection's
                        replies.append(exc)
        except BaseException:
            self._connection = None
            await connection.disconnect(nowait=True)
            raise
        return [r if isinstance(r, ResponseError) else [int(n) for n in r.split()] for r in replies]
