"""The throttle's Sentinel and Cluster storage URLs: validation, the client path, one hash slot per request."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.crc import key_slot

from gateway.policies.throttle import Limiter, ThrottleSettings, parse_rate


@pytest.mark.parametrize("url", [
    "redis+sentinel://127.0.0.1:26379/mymaster",
    "redis+sentinel://a:26379,b:26379,c:26379/mymaster",
    "redis+cluster://127.0.0.1:7000",
    "redis+cluster://a:7000,b:7001,c:7002",
])
def test_sentinel_and_cluster_urls_are_accepted(url):
    assert ThrottleSettings(storage=url).storage == url


@pytest.mark.parametrize("url, message", [
    ("redis+sentinel://127.0.0.1:26379", "redis+sentinel:// needs the service name after the hosts"),
    ("redis+sentinel://127.0.0.1/mymaster", "redis+sentinel:// needs host:port"),
    ("redis+cluster://", "redis+cluster:// needs host:port"),
    ("redis+cluster://a:7000,b", "redis+cluster:// needs host:port"),
    ("valkey+cluster://a:7000", 'must be "memory://" or a Redis URL'),
], ids=["no-service", "no-port", "no-host", "one-without-port", "other-scheme"])
def test_bad_urls_say_what_is_wrong(url, message):
    with pytest.raises(ValidationError) as caught:
        ThrottleSettings(storage=url)
    assert message in str(caught.value)


def test_sentinel_goes_through_the_client_to_the_primary():
    limiter = Limiter(ThrottleSettings(storage="redis+sentinel://127.0.0.1:26379/mymaster"))
    assert limiter.window is not None and not limiter.window.direct and not limiter.window.one_slot
    assert limiter.storage.use_replicas is False, "counts are written and read on the primary only"


def test_cluster_keys_of_one_request_share_a_slot():
    limiter = Limiter(ThrottleSettings(storage="redis+cluster://127.0.0.1:7000", key_prefix="sg"))
    window = limiter.window
    assert window is not None and not window.direct and window.one_slot
    items = [parse_rate(r) for r in ("10/second", "100/minute", "5000/day")]
    keys = [k for item in items for k in window.keys(item, "standard", "c:bob")]
    assert len(set(keys)) == 6
    assert len({key_slot(k.encode()) for k in keys}) == 1, keys


def test_one_server_keeps_limits_own_keys():
    window = Limiter(ThrottleSettings(storage="redis://127.0.0.1:6379/0", key_prefix="sg")).window
    assert window.direct and not window.one_slot
    assert window.keys(parse_rate("100/minute"), "standard", "c:bob") == (
        "sg:{LIMITER/standard/c:bob/100/1/minute}/-1", "sg:{LIMITER/standard/c:bob/100/1/minute}",
    )
