"""Throttling shared through a real Redis: many workers, many gateway processes, outages."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.services import GatewayProcess, base_env

CONFIG = """
[throttle]
storage = "{redis}"
key_prefix = "{prefix}"
on_store_error = "{on_error}"

[throttle.policies.standard]
rates = ["50/minute"]

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[[routes]]
prefix = "/api"
backend = "rec"
auth = "none"
throttle = "standard"
"""


def start(tmp_path, redis_server, on_error="allow", processes=1, workers=1):
    config = tmp_path / f"config-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(CONFIG.format(redis=redis_server.url, prefix=uuid.uuid4().hex, on_error=on_error))
    env = base_env(STACKGATE_DATA_DIR=str(tmp_path))
    return [GatewayProcess(config, env, workers=workers).start() for _ in range(processes)]


async def burst(urls: list[str], total: int) -> list[int]:
    limits = httpx.Limits(max_connections=total)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        responses = await asyncio.gather(*(client.get(urls[i % len(urls)] + "/api/x") for i in range(total)))
    return [r.status_code for r in responses]


async def test_limit_holds_across_two_processes_of_two_workers(tmp_path, redis_server):
    servers = start(tmp_path, redis_server, processes=2, workers=2)
    try:
        statuses = await burst([s.url for s in servers], 200)
    finally:
        for s in servers:
            s.stop()
    assert statuses.count(200) == 50, statuses
    assert statuses.count(429) == 150


@pytest.mark.parametrize("on_error, during", [("allow", 200), ("deny", 503)])
def test_redis_outage_and_recovery(tmp_path, redis_server, on_error, during):
    (server,) = start(tmp_path, redis_server, on_error=on_error)
    try:
        before = httpx.get(server.url + "/api/x")
        assert before.status_code == 200 and "ratelimit" in before.headers
        redis_server.stop()
        with ThreadPoolExecutor(10) as pool:  # a concurrent burst meets the outage too
            outage = list(pool.map(lambda _: httpx.get(server.url + "/api/x", timeout=10), range(20)))
        assert [r.status_code for r in outage] == [during] * 20
        if during == 200:  # the policy is still announced; its state is unknown while the store is down
            assert all("ratelimit-policy" in r.headers and "ratelimit" not in r.headers for r in outage)
        if during == 503:
            assert outage[0].json()["error"]["code"] == "throttle_unavailable"
            assert outage[0].headers["retry-after"] == "1"
        ready = httpx.get(server.url + "/_stackgate/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["throttle_store"]["ok"] is False
        redis_server.start()
        deadline = time.monotonic() + 10
        while True:
            response = httpx.get(server.url + "/api/x")
            if "ratelimit" in response.headers:
                break
            assert time.monotonic() < deadline, "the gateway did not return to Redis"
            time.sleep(0.2)
        assert response.status_code == 200
        assert httpx.get(server.url + "/_stackgate/ready").status_code == 200
        metrics = httpx.get(server.url + "/_stackgate/metrics").text
        assert "stackgate_throttle_store_errors_total" in metrics
    finally:
        if redis_server.proc is None:
            redis_server.start()
        server.stop()
