"""A/B routing: weights, stickiness, overrides, X-Served-By, shadow comparison."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from gateway.config import ConfigError, parse_config
from gateway.policies.split import choose
from tests.fixtures import wsgi_apps
from tests.users import USERS, consumers_toml

CONFIG = """
[split]
override_roles = ["tester"]
mirror_process = false  # shadows in this process, so the recorder sees them
mirror_noise_share = 0  # no random noise checks: the copies counted below are the mirror's own

[backends.a]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_a"

[backends.b]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_b"

[[routes]]
prefix = "/ab"
split = { a = 90, b = 10 }
auth = "optional"

[[routes]]
prefix = "/hidden"
split = { a = 50, b = 50 }
auth = "optional"
hide_served_by = true

[[routes]]
prefix = "/mirrored"
split = { a = 50, b = 50 }
auth = "optional"
mirror = true
mirror_ignore = ["served_at"]
""" + consumers_toml()


@pytest.fixture
def client(gateway_client):
    return gateway_client(CONFIG)


def test_weights_hold_over_ten_thousand_consumers():
    weights = [(b"django", 90.0), (b"flask", 10.0)]
    chosen = [choose(b"todos", f"c:user{i}".encode(), weights) for i in range(10_000)]
    share = chosen.count(b"flask") / len(chosen)
    assert 0.08 <= share <= 0.12


def test_a_weight_change_moves_only_who_must_move():
    keys = [f"c:user{i}".encode() for i in range(10_000)]
    before = [choose(b"r", k, [(b"django", 90.0), (b"flask", 10.0)]) for k in keys]
    after = [choose(b"r", k, [(b"django", 80.0), (b"flask", 20.0)]) for k in keys]
    moved = [(x, y) for x, y in zip(before, after) if x != y]
    assert all(x == b"django" and y == b"flask" for x, y in moved)
    assert 0.08 <= len(moved) / len(keys) <= 0.12


async def test_anonymous_clients_get_a_sticky_cookie(client):
    served = []
    for _ in range(400):
        client.cookies.clear()
        response = await client.get("/ab/x")
        assert response.status_code == 200
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("stackgate_variant=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        served.append(response.headers["x-served-by"])
        again = [(await client.get("/ab/x")).headers["x-served-by"] for _ in range(3)]
        assert again == [served[-1]] * 3
    assert 0.04 <= served.count("b") / len(served) <= 0.18


async def test_consumers_are_sticky_without_cookies(client):
    for name in ("alice", "bob", "admin"):
        seen = {(await client.get("/ab/x", headers=USERS[name].headers())).headers["x-served-by"] for _ in range(10)}
        assert len(seen) == 1
        response = await client.get("/ab/x", headers=USERS[name].headers())
        assert "set-cookie" not in response.headers


async def test_override_only_for_the_tester_role(client):
    tester = {**USERS["tester"].headers()}
    for wanted in ("a", "b"):
        response = await client.get("/ab/x", headers={**tester, "X-Stackgate-Backend": wanted})
        assert response.headers["x-served-by"] == wanted
    alice = USERS["alice"].headers()
    natural = (await client.get("/ab/x", headers=alice)).headers["x-served-by"]
    other = "b" if natural == "a" else "a"
    forced = await client.get("/ab/x", headers={**alice, "X-Stackgate-Backend": other})
    assert forced.headers["x-served-by"] == natural
    unknown = await client.get("/ab/x", headers={**tester, "X-Stackgate-Backend": "nope"})
    assert unknown.status_code == 200


async def test_override_header_never_reaches_the_backend(client):
    await client.get("/ab/x", headers={**USERS["tester"].headers(), "X-Stackgate-Backend": "a"})
    assert wsgi_apps.RECORDED


async def test_served_by_can_be_hidden(client):
    response = await client.get("/hidden/x")
    assert response.status_code == 200 and "x-served-by" not in response.headers


async def wait_for_mirror(client, route="/mirrored", count=1, attempts=100, errors=0):
    admin = USERS["admin"].headers()
    for _ in range(attempts):
        data = (await client.get("/_stackgate/mirror", headers=admin)).json()
        stats = data.get(route)
        if stats and stats["matches"] + stats["mismatches"] >= count and stats["errors"] >= errors:
            return stats
        await asyncio.sleep(0.02)
    raise AssertionError(f"no mirror result: {data}")


async def test_mirror_compares_gets_and_never_repeats_writes(client):
    alice = USERS["alice"].headers()
    post = await client.post("/mirrored/items", headers=alice, json={"x": 1})
    assert post.status_code == 200
    await asyncio.sleep(0.2)
    assert [r["method"] for r in wsgi_apps.RECORDED].count("POST") == 1

    ok = await client.get("/mirrored/same", headers=alice)
    stats = await wait_for_mirror(client)
    assert stats["matches"] == 1 and stats["mismatches"] == 0
    assert ok.json()["path"] == "/same"
    served = {r["backend"] for r in wsgi_apps.RECORDED if r["method"] == "GET"}
    assert served == {"a", "b"}, "the copy went to the other backend"
    assert all(r["remote_user"] == "alice" for r in wsgi_apps.RECORDED if r["method"] == "GET")


async def test_mirror_reports_a_difference_with_its_diff(client):
    alice = USERS["alice"].headers()
    response = await client.get("/mirrored/differ", headers=alice)
    assert response.status_code == 200
    stats = await wait_for_mirror(client)
    assert stats["mismatches"] == 1
    mismatch = stats["recent_mismatches"][0]
    served, other = response.headers["x-served-by"], ({"a", "b"} - {response.headers["x-served-by"]}).pop()
    assert mismatch["served_by"] == served and mismatch["compared_with"] == other
    assert f'-  "value": "{served}"' in mismatch["diff"] and f'+  "value": "{other}"' in mismatch["diff"]
    assert mismatch["path"] == "/mirrored/differ" and mismatch["identity"] == "alice"
    assert mismatch["request_id"] == response.headers["x-request-id"]


async def test_mirror_status_difference(client):
    await client.get("/mirrored/missing", headers=USERS["alice"].headers())
    stats = await wait_for_mirror(client)
    assert stats["mismatches"] == 1
    assert sorted(stats["recent_mismatches"][0]["status"]) == [200, 404]


async def test_mirror_endpoint_needs_the_admin_role(client):
    assert (await client.get("/_stackgate/mirror")).status_code == 401
    assert (await client.get("/_stackgate/mirror", headers=USERS["alice"].headers())).status_code == 403


@pytest.mark.parametrize(
    "route, message",
    [
        ('split = { a = 90, zzz = 10 }', 'routes[0].split: unknown backend "zzz"'),
        ('split = { a = 90, b = -1 }', 'routes[0].split: the weight of "b" must be a whole number, 0 (drained) or more'),
        ('split = { a = 0, b = 0 }', "routes[0].split: needs at least one positive weight"),
        ('split = { a = 100 }', "routes[0].split: needs at least two backends"),
        ('backend = "a"\nsplit = { a = 1, b = 1 }', 'routes[0]: give either "backend" or "split", not both'),
        ('mirror = true\nbackend = "a"', 'routes[0].mirror: needs "split"'),
    ],
)
def test_bad_split_config(route, message):
    text = f'[backends.a]\nkind = "wsgi"\napp = "a:b"\n[backends.b]\nkind = "wsgi"\napp = "a:c"\n[[routes]]\nprefix = "/x"\nauth = "none"\n{route}\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text.encode(), "c.toml", {})
    assert any(p.startswith(f"c.toml: {message}") for p in info.value.problems), info.value.problems


SPLIT_BACKENDS = '[backends.a]\nkind = "wsgi"\napp = "a:b"\n[backends.b]\nkind = "wsgi"\napp = "a:c"\n'


def test_a_zero_weight_is_accepted_with_mirror():
    text = SPLIT_BACKENDS + '[[routes]]\nprefix = "/x"\nauth = "none"\nsplit = { a = 0, b = 100 }\nmirror = true\n'
    assert parse_config(text.encode(), "c.toml", {}).routes[0].split == {"a": 0, "b": 100}


def test_a_bad_split_is_its_one_problem_not_mirrors_too():
    text = SPLIT_BACKENDS + '[[routes]]\nprefix = "/x"\nauth = "none"\nsplit = { a = -5, b = 100 }\nmirror = true\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text.encode(), "c.toml", {})
    assert info.value.problems == ['c.toml: routes[0].split: the weight of "a" must be a whole number, 0 (drained) or more']


def test_a_zero_weight_is_never_chosen_and_moves_only_its_own_clients():
    keys = [f"c:user{i}".encode() for i in range(10_000)]
    before = [choose(b"r", k, [(b"a", 50.0), (b"b", 30.0), (b"c", 20.0)]) for k in keys]
    after = [choose(b"r", k, [(b"a", 0.0), (b"b", 30.0), (b"c", 20.0)]) for k in keys]
    assert b"a" not in after
    assert all(x == y for x, y in zip(before, after) if x != b"a"), "a client of b or c moved"
    assert 0.55 <= after.count(b"b") / len(after) <= 0.65
    first = [choose(b"r", k, [(b"a", 0.0), (b"b", 1.0)]) for k in keys[:1000]]  # the drained one listed first
    assert set(first) == {b"b"}


DRAINED = CONFIG.replace("split = { a = 50, b = 50 }\nauth = \"optional\"\nmirror = true", "split = { a = 0, b = 100 }\nauth = \"optional\"\nmirror = true") + """
[[routes]]
prefix = "/drained"
split = { a = 0, b = 1 }
auth = "optional"
"""


async def test_a_drained_backend_serves_no_client_but_is_still_mirrored_to(gateway_client):
    assert DRAINED != CONFIG
    client = gateway_client(DRAINED)
    served = []
    for _ in range(200):
        client.cookies.clear()
        served.append((await client.get("/drained/x")).headers["x-served-by"])
    assert set(served) == {"b"}, "a drained backend served a client"
    wsgi_apps.RECORDED.clear()
    served = []
    for i in range(40):  # anonymous clients, then consumers; one copy at a time, so none is skipped
        client.cookies.clear()
        headers = USERS[("alice", "bob", "admin")[i % 3]].headers() if i >= 30 else {}
        response = await client.get("/mirrored/same", headers=headers)
        assert response.status_code == 200
        served.append(response.headers["x-served-by"])
        await wait_for_mirror(client, count=len(served), attempts=400)
    assert set(served) == {"b"}, "a drained backend served a client"
    stats = await wait_for_mirror(client, count=len(served))
    assert (stats["matches"], stats["skipped"], stats["errors"]) == (len(served), 0, 0)
    gets = [r["backend"] for r in wsgi_apps.RECORDED if r["method"] == "GET"]
    assert gets.count("a") == gets.count("b") == len(served), "every request was copied to the drained backend"


async def test_mirror_in_its_own_process_compares_too(gateway_client):
    client = gateway_client(CONFIG.replace("mirror_process = false", "mirror_process = true"))
    alice = USERS["alice"].headers()
    try:
        await client.get("/mirrored/same", headers=alice)
        stats = await wait_for_mirror(client, count=1, attempts=400)
        assert stats["matches"] == 1
        await client.get("/mirrored/differ", headers=alice)
        stats = await wait_for_mirror(client, count=2, attempts=400)
        assert stats["mismatches"] == 1 and '"value"' in stats["recent_mismatches"][0]["diff"]
        served = [r["backend"] for r in wsgi_apps.RECORDED]
        assert len(served) == 2, "the copies ran in the other process, not here"
    finally:
        client.gateway.services.shadow_process.close()


async def test_a_burst_of_gets_is_compared_in_full_not_sampled(gateway_client):
    """Copies wait their turn for the shadow process (started before the first request); none is dropped."""
    client = gateway_client(CONFIG.replace("mirror_process = false", "mirror_process = true"))
    alice = USERS["alice"].headers()
    process = client.gateway.services.shadow_process
    try:
        await process.warm()
        for _ in range(20):
            assert (await client.get("/mirrored/same", headers=alice)).status_code == 200
        await client.get("/mirrored/differ", headers=alice)
        stats = await wait_for_mirror(client, count=21, attempts=400)
        assert (stats["matches"], stats["mismatches"], stats["skipped"]) == (20, 1, 0)
    finally:
        process.close()


async def test_the_shadow_process_is_replaced_when_it_dies(gateway_client):
    client = gateway_client(CONFIG.replace("mirror_process = false", "mirror_process = true"))
    alice = USERS["alice"].headers()
    process = client.gateway.services.shadow_process
    try:
        await process.warm()
        dead = process.proc
        os.kill(dead.pid, signal.SIGKILL)
        for _ in range(200):  # the gateway notices (the socket closes) without a copy in flight
            if process.proc is dead and process._writer is None:
                break
            await asyncio.sleep(0.01)
        await client.get("/mirrored/same", headers=alice)
        stats = await wait_for_mirror(client, count=1, attempts=400)
        assert (stats["matches"], stats["errors"]) == (1, 0)  # the next copy ran in a new process
        assert process.proc is not dead and process.pid is not None
    finally:
        process.close()
