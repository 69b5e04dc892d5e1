"""Throttling in one process: exact counts, headers, client keys; on the memory storage and on a real Redis."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest
import redis.asyncio

from gateway.config import ConfigError, parse_config
from gateway.policies import throttle
from gateway.policies.throttle import BoundedMemoryStorage, client_key
from tests.fixtures import wsgi_apps
from tests.users import USERS, consumers_toml

CONFIG = """
[gateway]
trusted_proxies = ["10.0.0.0/8"]

[throttle]
storage = "memory://"
strategy = "moving-window"

[throttle.policies.standard]
rates = ["50/minute"]

[throttle.policies.fast]
rates = ["2/second", "100/minute"]
roles = { tester = ["4/second"] }
consumers = { bob = ["1/second"] }

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
threads = 8

[[routes]]
prefix = "/open"
backend = "rec"
auth = "none"
throttle = "standard"
max_body_size = "1MiB"

[[routes]]
prefix = "/fast"
backend = "rec"
auth = "optional"
throttle = "fast"

[[routes]]
prefix = "/free"
backend = "rec"
auth = "none"
""" + consumers_toml()


def config_for(storage: str, strategy: str = "moving-window", redis_url: str = "") -> str:
    if storage == "memory":
        return CONFIG.replace('strategy = "moving-window"', f'strategy = "{strategy}"')
    # Redis is up in these tests: a generous store_timeout keeps a loaded machine's slow connect (a burst
    # opens up to 64 at once) from reading as an outage, which would open the throttle for a second.
    return CONFIG.replace(
        'storage = "memory://"\nstrategy = "moving-window"',
        f'storage = "{redis_url}"\nstrategy = "{strategy}"\nkey_prefix = "{uuid.uuid4().hex}"\nstore_timeout = 10',
    )


@pytest.fixture(params=["memory", "redis"])
def config(request):
    """The test config on the memory storage, and on Redis with its default (one round trip) strategy."""
    if request.param == "memory":
        return config_for("memory")
    return config_for("redis", "sliding-window-counter", request.getfixturevalue("redis_server").url)


@pytest.fixture
def client(gateway_client, config):
    return gateway_client(config)


def client_from(gateway_client, config, address):
    return gateway_client(config, client=(address, 4321))


@pytest.mark.parametrize(
    "storage, strategy",
    [("memory", "moving-window"), ("memory", "sliding-window-counter"), ("memory", "fixed-window"),
     ("redis", "moving-window"), ("redis", "sliding-window-counter"), ("redis", "fixed-window")],
)
async def test_exactly_the_limit_passes_under_concurrency(gateway_client, request, storage, strategy):
    redis_url = request.getfixturevalue("redis_server").url if storage == "redis" else ""
    client = gateway_client(config_for(storage, strategy, redis_url))
    responses = await asyncio.gather(*(client.get("/open/x") for _ in range(200)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 50
    assert statuses.count(429) == 150
    assert len(wsgi_apps.RECORDED) == 50
    window = client.gateway.services.throttle.window
    if storage == "redis" and strategy == "sliding-window-counter":
        assert window.round_trips < 100, "requests that overlap share a pipeline"
    else:
        assert window is None


async def test_a_request_that_waits_for_a_redis_connection_is_counted_not_let_through(gateway_client, request, monkeypatch, caplog):
    """Every connection of the worker's pool busy for longer than one command may take: waiting for
    one is the worker's own congestion, not Redis being down, so the request waits and is counted."""
    redis_url = request.getfixturevalue("redis_server").url
    monkeypatch.setattr(throttle, "REDIS_MAX_CONNECTIONS", 1)
    pools = []
    from_url = redis.asyncio.BlockingConnectionPool.from_url
    monkeypatch.setattr(redis.asyncio.BlockingConnectionPool, "from_url", lambda *a, **k: pools.append(from_url(*a, **k)) or pools[-1])
    client = gateway_client(config_for("redis", "moving-window", redis_url))
    assert (await client.get("/open/x")).status_code == 200
    pool = pools[-1]
    held = await pool.get_connection()  # the pool's only connection, busy for a second

    async def give_back():
        await asyncio.sleep(1.0)
        await pool.release(held)

    released = asyncio.ensure_future(give_back())
    response = await client.get("/open/x")
    await released
    assert response.status_code == 200
    assert re.fullmatch(r'"standard-0";r=48;t=\d+', response.headers["ratelimit"]), "counted as the second request"
    assert "throttle storage failed" not in caplog.text


async def test_store_timeout_bounds_how_long_a_silent_redis_holds_a_request(gateway_client):
    """A Redis that accepts but never answers counts as unreachable after ``store_timeout``, not before."""
    accepted = []

    async def silent(reader, writer):
        accepted.append(writer)  # held open, never answered

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = CONFIG.replace(
        'storage = "memory://"\nstrategy = "moving-window"',
        f'storage = "redis://127.0.0.1:{port}/0"\nstore_timeout = 2\non_store_error = "deny"',
    )
    client = gateway_client(config)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        response = await asyncio.wait_for(client.get("/open/x"), 60)
    finally:
        server.close()
        for writer in accepted:
            writer.close()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "throttle_unavailable"
    assert loop.time() - started >= 1.9, "waited the configured 2 s, not the default 0.5 s"
    assert len(wsgi_apps.RECORDED) == 0


async def test_headers_follow_the_draft(client):
    first = await client.get("/open/x")
    assert first.headers["ratelimit-policy"] == '"standard-0";q=50;w=60'
    assert re.fullmatch(r'"standard-0";r=49;t=\d+', first.headers["ratelimit"])
    fast = await client.get("/fast/x")
    assert fast.headers["ratelimit-policy"] == '"fast-0";q=2;w=1, "fast-1";q=100;w=60'
    assert re.fullmatch(r'"fast-0";r=1;t=\d+, "fast-1";r=99;t=\d+', fast.headers["ratelimit"])


async def test_unthrottled_route_has_no_headers(client):
    response = await client.get("/free/x")
    assert "ratelimit" not in response.headers and "ratelimit-policy" not in response.headers


async def test_refusal_is_a_429_with_retry_after_and_then_passes(client):
    for _ in range(2):
        assert (await client.get("/fast/x")).status_code == 200
    refused = await client.get("/fast/x")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and error["status"] == 429
    assert error["request_id"] == refused.headers["x-request-id"]
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 2
    assert re.fullmatch(r'"fast-0";r=0;t=\d+', refused.headers["ratelimit"])
    await asyncio.sleep(retry_after + 0.05)
    assert (await client.get("/fast/x")).status_code == 200


async def test_consumers_have_their_own_quota_and_overrides(client):
    alice, bob, tester = (USERS[n].headers() for n in ("alice", "bob", "tester"))
    assert [(await client.get("/fast/x", headers=alice)).status_code for _ in range(3)] == [200, 200, 429]
    assert [(await client.get("/fast/x", headers=bob)).status_code for _ in range(2)] == [200, 429]
    assert [(await client.get("/fast/x", headers=tester)).status_code for _ in range(5)] == [200] * 4 + [429]
    assert [(await client.get("/fast/x")).status_code for _ in range(3)] == [200, 200, 429]


async def test_refused_by_auth_spends_no_quota(client):
    bad = {"X-API-Key": "sgk_not-a-real-key"}
    for _ in range(5):
        assert (await client.get("/fast/x", headers=bad)).status_code == 401
    alice = USERS["alice"].headers()
    assert [(await client.get("/fast/x", headers=alice)).status_code for _ in range(2)] == [200, 200]
    # The refused requests came from this client's address: its anonymous quota is whole too.
    assert [(await client.get("/fast/x")).status_code for _ in range(3)] == [200, 200, 429]


async def test_the_gateways_own_errors_on_a_throttled_route_carry_the_headers(client):
    async def chunks():
        yield b"x" * 600_000
        yield b"x" * 600_000

    response = await client.post("/open/upload", content=chunks(), headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
    assert response.headers["ratelimit-policy"] == '"standard-0";q=50;w=60'
    assert re.fullmatch(r'"standard-0";r=49;t=\d+', response.headers["ratelimit"])


async def test_forwarded_for_from_an_untrusted_peer_changes_nothing(gateway_client, config):
    c = client_from(gateway_client, config, "192.0.2.10")
    codes = [(await c.get("/fast/x", headers={"X-Forwarded-For": f"198.51.100.{i}"})).status_code for i in range(3)]
    assert codes == [200, 200, 429]


async def test_forwarded_for_from_a_trusted_proxy_keys_on_the_client(gateway_client, config):
    c = client_from(gateway_client, config, "10.1.2.3")
    one = [(await c.get("/fast/x", headers={"X-Forwarded-For": "203.0.113.7, 10.9.9.9"})).status_code for _ in range(3)]
    other = [(await c.get("/fast/x", headers={"X-Forwarded-For": "203.0.113.8"})).status_code for _ in range(2)]
    spoofed = await c.get("/fast/x", headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.7"})
    assert one == [200, 200, 429]
    assert other == [200, 200]
    assert spoofed.status_code == 429, "the left-most entry is the client's to forge; the right-most untrusted one counts"


def test_ipv6_clients_are_keyed_by_their_64():
    a = client_key({"client": ("2001:db8:1:2:aaaa::1", 1)})
    b = client_key({"client": ("2001:db8:1:2:bbbb::9", 1)})
    c = client_key({"client": ("2001:db8:1:3::1", 1)})
    assert a == b != c
    assert client_key({"client": ("::ffff:192.0.2.1", 1)}) == client_key({"client": ("192.0.2.1", 2)})


async def test_memory_storage_stays_bounded():
    from limits import parse
    from limits.aio.strategies import SlidingWindowCounterRateLimiter

    storage = BoundedMemoryStorage(max_keys=1000)
    limiter = SlidingWindowCounterRateLimiter(storage)
    item = parse("10/minute")
    for i in range(20_000):
        await limiter.hit(item, "p", f"ip:{i}")
    assert len(storage.storage) <= 1000 + 2
    assert len(storage.expirations) <= 1000 + 2


@pytest.mark.parametrize(
    "table, message",
    [
        ('[throttle.policies.p]\nrates = ["100/fortnight"]', 'throttle.policies.p.rates: must be a rate such as "100/minute"'),
        ('[throttle.policies.p]\nrates = []', "throttle.policies.p.rates: must list at least one rate"),
        ('[throttle]\nstorage = "mongodb://x"', 'throttle.storage: must be "memory://" or a Redis URL'),
        ('[throttle]\non_store_error = "maybe"', "throttle.on_store_error"),
        ('[throttle]\nstore_timeout = 0', "throttle.store_timeout: Input should be greater than or equal to 0.05"),
        ('[throttle.policies.p]\nrates = ["1/second"]\nroles = { x = ["abc"] }', "throttle.policies.p.roles"),
    ],
)
def test_bad_throttle_config(table, message):
    text = table + '\n[backends.b]\nkind = "wsgi"\napp = "a:b"\n[[routes]]\nprefix = "/x"\nbackend = "b"\nauth = "none"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text.encode(), "c.toml", {})
    assert any(p.startswith(f"c.toml: {message}") for p in info.value.problems), info.value.problems


def test_route_naming_an_unknown_policy():
    text = '[backends.b]\nkind = "wsgi"\napp = "a:b"\n[[routes]]\nprefix = "/x"\nbackend = "b"\nauth = "none"\nthrottle = "nope"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text.encode(), "c.toml", {})
    assert 'c.toml: routes[0].throttle: unknown throttle policy "nope"; known: (none)' in info.value.problems
