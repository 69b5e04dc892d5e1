"""The one-round-trip sliding window on a real Redis: the same counts and windows as limits' own strategy."""

from __future__ import annotations

import asyncio
import time
import uuid

import limits
import pytest
import redis.asyncio

from gateway.policies.throttle import Limiter, ThrottleSettings


@pytest.fixture
async def limiter(redis_server):
    limiter = Limiter(ThrottleSettings(storage=redis_server.url, key_prefix=uuid.uuid4().hex))
    yield limiter
    await limiter.aclose()


def rates(*values: str) -> tuple[limits.RateLimitItem, ...]:
    return tuple(limits.parse(v) for v in values)


async def test_counts_like_limits_strategy(limiter):
    """Step by step, the script and limits' hit + get_window_stats agree on verdict and remaining."""
    items = rates("5/minute")
    ours = [await limiter.window.hit(items, "p", "ours") for _ in range(7)]
    theirs = []
    for _ in range(7):
        allowed = await limiter.strategy.hit(items[0], "p", "theirs")
        reset, remaining = await limiter.strategy.get_window_stats(items[0], "p", "theirs")
        theirs.append((allowed, remaining, reset))
    assert [(s.allowed, s.remaining) for (s,) in ours] == [(a, r) for a, r, _ in theirs]
    assert [s.allowed for (s,) in ours] == [True] * 5 + [False] * 2
    # The window ends a minute after its first hit. (limits itself says "now" when it reads the new key's
    # TTL in the same millisecond it was set: 120 s % 60 s; the script does not.)
    now = time.time()
    assert all(58 < s.reset - now <= 60 for (s,) in ours), [s.reset - now for (s,) in ours]


async def test_shares_its_windows_with_limits(limiter):
    """The keys are limits' own: hits counted either way are seen by the other."""
    item = limits.parse("10/minute")
    for _ in range(3):
        assert await limiter.strategy.hit(item, "p", "k")
    (state,) = await limiter.window.hit((item,), "p", "k")
    assert state.allowed and state.remaining == 6
    _, remaining = await limiter.strategy.get_window_stats(item, "p", "k")
    assert remaining == 6


async def test_an_ended_window_becomes_the_previous_one(limiter):
    item = limits.parse("1/second")
    assert [(await limiter.window.hit((item,), "p", "k"))[0].allowed for _ in range(2)] == [True, False]
    await asyncio.sleep(1.1)
    (state,) = await limiter.window.hit((item,), "p", "k")
    assert state.allowed, "the previous window's hit weighs less than one after it ended"
    _, remaining = await limiter.strategy.get_window_stats(item, "p", "k")
    assert remaining == state.remaining == 0


async def test_rates_are_taken_in_order_and_the_first_refusal_stops(limiter):
    items = rates("3/minute", "2/minute")
    answers = [await limiter.window.hit(items, "p", "k") for _ in range(4)]
    assert [[s.allowed for s in states] for states in answers] == [[True, True], [True, True], [True, False], [False]]
    assert [[s.remaining for s in states] for states in answers] == [[2, 1], [1, 0], [0, 0], [0]]
    stats = [await limiter.strategy.get_window_stats(item, "p", "k") for item in items]
    assert [remaining for _, remaining in stats] == [0, 0], "the refused rate did not count; the one before it did"


async def test_overlapping_requests_share_round_trips_and_the_limit_holds(limiter):
    items = rates("50/minute")
    answers = await asyncio.gather(*(limiter.window.hit(items, "p", "k") for _ in range(300)))
    assert sum(states[-1].allowed for states in answers) == 50
    assert limiter.window.round_trips <= 3


async def test_the_script_is_loaded_again_after_the_server_lost_it(limiter, redis_server):
    items = rates("10/minute")
    await limiter.window.hit(items, "p", "k")
    async with redis.asyncio.Redis.from_url(redis_server.url) as admin:
        await admin.script_flush()
    single = await limiter.window.hit(items, "p", "k")
    together = await asyncio.gather(*(limiter.window.hit(items, "p", "k") for _ in range(3)))
    assert single[0].remaining == 8
    assert sorted(states[0].remaining for states in together) == [5, 6, 7]


async def test_a_cancelled_request_does_not_fail_the_others(limiter):
    items = rates("100/minute")
    first = asyncio.ensure_future(limiter.window.hit(items, "p", "k"))
    others = [asyncio.ensure_future(limiter.window.hit(items, "p", "k")) for _ in range(5)]
    await asyncio.sleep(0)
    first.cancel()
    answers = await asyncio.gather(*others)
    assert all(states[0].allowed for states in answers)
    (state,) = await limiter.window.hit(items, "p", "k")
    assert state.remaining == 100 - 7, "the cancelled request was already on the wire: it counted"


async def test_an_unreachable_server_fails_every_waiting_call(redis_server):
    from tests.services import free_port

    limiter = Limiter(ThrottleSettings(storage=f"redis://127.0.0.1:{free_port()}/0"))
    results = await asyncio.gather(*(limiter.window.hit(rates("5/minute"), "p", "k") for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results), results
    assert limiter.window._sending is None and not limiter.window._queue
    await limiter.aclose()


def test_commands_are_packed_as_redis_py_packs_them():
    from redis.asyncio.connection import Connection

    from gateway.storage.redis_window import pack_arguments

    args = ("EVALSHA", "a" * 40, 2, "stackgate:{LIMITER/p/c:zoë/5/1/minute}/-1", "stackgate:{LIMITER/p/c:zoë/5/1/minute}", 1, 5, 60)
    argc, body = pack_arguments(*args)
    assert b"*%d\r\n" % argc + body == b"".join(Connection().pack_command(*args))


async def test_a_server_that_stops_answering_fails_the_round_trip_in_time(limiter):
    async def silent(reader, writer):  # reads until the client hangs up, never answers
        while await reader.read(1 << 16):
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stalled = Limiter(ThrottleSettings(storage=f"redis://127.0.0.1:{port}/0"))
    stalled.window.sha = "0" * 40  # past the script load: the round trip itself stalls
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await stalled.window.hit(rates("5/minute"), "p", "k")
    assert time.monotonic() - started < 2
    assert stalled.window._connection is None, "a connection that timed out is not used again"
    await stalled.aclose()
    server.close()
    await server.wait_closed()


async def test_a_limiter_replaced_by_a_reload_is_closed_after_its_grace(redis_server, monkeypatch):
    from gateway.context import Services
    from gateway.policies import throttle

    monkeypatch.setattr(throttle, "RETIRED_GRACE_SECONDS", 0.05)
    services = Services()
    old = throttle.limiter_for(ThrottleSettings(storage=redis_server.url, key_prefix="a" + uuid.uuid4().hex), services)
    await old.window.hit(rates("5/minute"), "p", "k")
    pool = old.storage.bridge.get_connection().connection_pool
    assert old.window._connection is not None and any(c.is_connected for c in pool._available_connections)
    new = throttle.limiter_for(ThrottleSettings(storage=redis_server.url, key_prefix="b" + uuid.uuid4().hex), services)
    assert new is not old and services.throttle is new
    (state,) = await old.window.hit(rates("5/minute"), "p", "k")  # a request still holding the old one
    assert state.remaining == 3
    await asyncio.sleep(0.3)
    assert old.window._connection is None, "the window's connection is closed"
    assert not any(c.is_connected for c in pool._available_connections), "and the pool's"
    await new.aclose()
