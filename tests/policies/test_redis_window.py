"""Hit and window stats in one Redis round trip: the same answers as limits' own two calls."""

from __future__ import annotations

import uuid

import limits
import redis

from gateway.policies.redis_window import PipelinedSlidingWindow
from gateway.policies.throttle import Limiter, ThrottleSettings
from tests.service_fixtures import redis_server  # noqa: F401


def limiter(url: str, strategy: str = "sliding-window-counter") -> Limiter:
    return Limiter(ThrottleSettings(storage=url, strategy=strategy, key_prefix=f"t{uuid.uuid4().hex[:8]}"))


def test_only_redis_with_the_sliding_window_counter_takes_the_pipeline(redis_server):
    assert isinstance(limiter(redis_server.url).pipelined, PipelinedSlidingWindow)
    assert limiter(redis_server.url, "moving-window").pipelined is None
    assert limiter("memory://").pipelined is None


async def test_it_answers_what_limits_answers(redis_server):
    ours = limiter(redis_server.url)
    item = limits.parse("5/minute")
    answers = [await ours.pipelined.hit(item, "policy", "alice") for _ in range(7)]
    assert [allowed for allowed, _, _ in answers] == [True] * 5 + [False] * 2
    assert [remaining for _, _, remaining in answers] == [4, 3, 2, 1, 0, 0, 0]
    reset, remaining = await ours.strategy.get_window_stats(item, "policy", "alice")
    assert remaining == 0 and abs(reset - answers[-1][1]) < 1.0
    assert not await ours.strategy.test(item, "policy", "alice")  # limits sees the same counters
    other = await ours.pipelined.hit(item, "policy", "bob")
    assert other[0] is True and other[2] == 4


async def test_a_redis_that_lost_its_scripts_is_answered_and_reloaded(redis_server):
    ours = limiter(redis_server.url)
    item = limits.parse("3/minute")
    assert (await ours.pipelined.hit(item, "policy", "carol"))[2] == 2
    redis.Redis.from_url(redis_server.url).script_flush()  # as after a restart
    assert (await ours.pipelined.hit(item, "policy", "carol"))[2] == 1  # through the strategy, which reloads
    allowed, _, remaining = await ours.pipelined.hit(item, "policy", "carol")
    assert (allowed, remaining) == (True, 0)  # pipelined again
    assert (await ours.pipelined.hit(item, "policy", "carol"))[0] is False
