"""Failed authentication is rate-limited before any password is hashed (``[auth.failure_rates]``).

In process, through the gateway's ASGI app: each client address is the
transport's ``client``. Password checks are counted by wrapping
``basic.verify`` (what the password pool runs), so "not hashed" is shown by
a count, not by timing.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import argon2
import bcrypt
import httpx
import jwt
import pytest
from prometheus_client import REGISTRY

from gateway.config import ConfigError, parse_config
from gateway.policies.auth import basic, guard
from gateway.policies.auth.apikey import hash_key, new_key
from tests.fixtures import wsgi_apps

SECRET = "guard-test-secret-for-hs256-0123456789"
ISS = "https://hs.example"
ALICE_KEY = new_key()
# Cheap hashes keep the tests fast; both are the real formats.
ALICE_ARGON2 = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("alice-pw")
BOB_BCRYPT = bcrypt.hashpw(b"bob-pw", bcrypt.gensalt(rounds=4)).decode()
A, B = ("10.0.0.1", 4000), ("10.0.0.2", 4000)


def config(rates: str = 'address = ["100/minute"]\naddress_identity = ["3/minute"]', extra: str = "") -> str:
    # The exact strategy: the default sliding-window counter lets a few more through right after a
    # window boundary (docs/auth.md), which would make exact counts below fail now and then.
    exact = 'strategy = "moving-window"\n'
    extra = extra.replace("[throttle]\n", "[throttle]\n" + exact) if "[throttle]\n" in extra else extra + "\n[throttle]\n" + exact
    return f"""
[auth.failure_rates]
{rates}

[auth.jwt.hs]
issuer = "{ISS}"
algorithms = ["HS256"]
secret = "{SECRET}"

[consumers.alice]
roles = ["user"]
password = "{ALICE_ARGON2}"
api_keys = ["{hash_key(ALICE_KEY)}"]

[consumers.bob]
roles = ["user"]
password = "{BOB_BCRYPT}"

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
threads = 4

[[routes]]
prefix = "/v1"
backend = "rec"

[[routes]]
prefix = "/keys-only"
backend = "rec"
auth_schemes = ["api-key"]
{extra}
"""


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def token(sub: str, secret: str = SECRET) -> dict[str, str]:
    claims = {"iss": ISS, "sub": sub, "exp": int(time.time()) + 300}
    return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The stored hashes ``basic.verify`` ran against, in order."""
    calls: list[str] = []
    real = basic.verify

    def counting(stored: str, password: bytes) -> bool:
        calls.append(stored)
        return real(stored, password)

    monkeypatch.setattr(basic, "verify", counting)
    return calls


def refused_count(limit: str) -> float:
    return REGISTRY.get_sample_value("stackgate_auth_failures_throttled_total", {"limit": limit}) or 0.0


def assert_too_many(response, which: str = "identity") -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == 429 and error["code"] == "too_many_auth_failures"
    assert error["request_id"] == response.headers["x-request-id"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert f"retry in {retry_after} seconds" in error["message"]
    assert ("for this identity" in error["message"]) == (which == "identity")
    assert "www-authenticate" not in response.headers
    assert wsgi_apps.RECORDED == [], "a refused request reached the backend"
    return retry_after


# --- HTTP Basic -----------------------------------------------------------------


async def test_wrong_passwords_beyond_the_rate_get_429_and_are_never_hashed(gateway_client, hashed):
    client = gateway_client(config(), client=A)
    before = refused_count("identity")
    for _ in range(3):
        assert (await client.get("/v1/x", headers=basic_auth("alice", "wrong"))).status_code == 401
    assert len(hashed) == 3
    for _ in range(5):
        assert_too_many(await client.get("/v1/x", headers=basic_auth("alice", "guess")))
    assert len(hashed) == 3, "a refused guess was hashed"
    # the right password is not checked either, from this address, until the window frees up
    assert_too_many(await client.get("/v1/x", headers=basic_auth("alice", "alice-pw")))
    assert len(hashed) == 3
    assert refused_count("identity") - before == 6


async def test_a_remembered_success_is_not_consulted_beyond_the_rate(gateway_client, hashed):
    client = gateway_client(config(), client=A)
    assert (await client.get("/v1/x", headers=basic_auth("alice", "alice-pw"))).status_code == 200
    for _ in range(3):
        assert (await client.get("/v1/x", headers=basic_auth("alice", "wrong"))).status_code == 401
    wsgi_apps.RECORDED.clear()
    # else a cached 200 against uncached 429s would tell the right guess at full speed
    assert_too_many(await client.get("/v1/x", headers=basic_auth("alice", "alice-pw")))


async def test_the_same_user_from_another_address_still_authenticates(gateway_client, hashed):
    attacker = gateway_client(config(), client=A)
    for _ in range(3):
        assert (await attacker.get("/v1/x", headers=basic_auth("alice", "wrong"))).status_code == 401
    assert_too_many(await attacker.get("/v1/x", headers=basic_auth("alice", "wrong")))

    transport = httpx.ASGITransport(app=attacker.gateway, client=B)  # the same gateway, another address
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as owner:
        response = await owner.get("/v1/x", headers=basic_auth("alice", "alice-pw"))
        assert response.status_code == 200 and response.json()["remote_user"] == "alice"
        # and B's own failures start from zero
        assert (await owner.get("/v1/x", headers=basic_auth("alice", "typo"))).status_code == 401


async def test_unknown_user_names_are_counted_the_same(gateway_client, hashed):
    client = gateway_client(config(), client=A)
    for _ in range(3):
        assert (await client.get("/v1/x", headers=basic_auth("mallory", "guess"))).status_code == 401
    assert_too_many(await client.get("/v1/x", headers=basic_auth("mallory", "guess")))
    assert len(hashed) == 3
    # one counter per claimed name: another name from the same address has its own
    assert (await client.get("/v1/x", headers=basic_auth("alice", "wrong"))).status_code == 401


async def test_the_address_counter_covers_every_name(gateway_client, hashed):
    client = gateway_client(config('address = ["4/minute"]\naddress_identity = ["100/minute"]'), client=A)
    before = refused_count("address")
    for name in ("alice", "bob", "carol", "dave"):
        assert (await client.get("/v1/x", headers=basic_auth(name, "wrong"))).status_code == 401
    assert_too_many(await client.get("/v1/x", headers=basic_auth("erin", "wrong")), which="address")
    assert_too_many(await client.get("/v1/x", headers={"X-API-Key": new_key()}), which="address")
    assert len(hashed) == 4
    assert refused_count("address") - before == 2


async def test_successes_are_not_counted(gateway_client, hashed, monkeypatch):
    monkeypatch.setattr(basic.VerifiedCache, "hit", lambda self, key: False)  # every success hashed
    client = gateway_client(config(), client=A)
    for _ in range(6):
        assert (await client.get("/v1/x", headers=basic_auth("alice", "alice-pw"))).status_code == 200
    wsgi_apps.RECORDED.clear()
    for _ in range(3):
        assert (await client.get("/v1/x", headers=basic_auth("alice", "wrong"))).status_code == 401
    assert_too_many(await client.get("/v1/x", headers=basic_auth("alice", "wrong")))


async def test_a_burst_of_guesses_hashes_no_more_than_the_rate(gateway_client, hashed):
    client = gateway_client(config(), client=A)
    answers = await asyncio.gather(*(client.get("/v1/x", headers=basic_auth("alice", f"guess-{i}")) for i in range(12)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [401] * 3 + [429] * 9, statuses
    assert len(hashed) == 3


async def test_the_same_credentials_at_once_are_hashed_once(gateway_client, hashed):
    client = gateway_client(config(), client=A)
    answers = await asyncio.gather(*(client.get("/v1/x", headers=basic_auth("alice", "alice-pw")) for _ in range(8)))
    assert [r.status_code for r in answers] == [200] * 8
    assert len(hashed) == 1


async def test_the_window_frees_up(gateway_client, hashed):
    client = gateway_client(config('address_identity = ["2/second"]'), client=A)
    for _ in range(2):
        assert (await client.get("/v1/x", headers=basic_auth("alice", "wrong"))).status_code == 401
    assert_too_many(await client.get("/v1/x", headers=basic_auth("alice", "wrong")))
    deadline = time.monotonic() + 30
    while True:  # the sliding window frees one failure at a time
        response = await client.get("/v1/x", headers=basic_auth("alice", "alice-pw"))
        if response.status_code != 429 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert response.status_code == 200


async def test_empty_rates_turn_the_counters_off(gateway_client, hashed):
    client = gateway_client(config("address = []\naddress_identity = []"), client=A)
    for _ in range(15):
        assert (await client.get("/v1/x", headers=basic_auth("alice", "wrong"))).status_code == 401
    assert len(hashed) == 15


async def test_default_rates_are_on(gateway_client, hashed):
    client = gateway_client(config(rates=""), client=A)
    answers = [(await client.get("/v1/x", headers=basic_auth("alice", "wrong"))).status_code for _ in range(11)]
    assert answers == [401] * 10 + [429]


# --- unknown names take as long as known ones -------------------------------------


@pytest.mark.parametrize(
    "stored",
    [ALICE_ARGON2, BOB_BCRYPT, "$2a$" + BOB_BCRYPT[4:]],
    ids=["argon2", "bcrypt", "bcrypt-2a"],
)
def test_unknown_users_are_checked_against_a_hash_of_the_same_costs(stored):
    verifier = basic.BasicVerifier({"someone": stored}, 60, 10)
    dummy = verifier.unknown_user_hash
    assert dummy != stored and basic.is_password_hash(dummy)
    assert basic.cost_of(dummy) == basic.cost_of(stored)
    if stored.startswith("$argon2"):
        assert argon2.extract_parameters(dummy) == argon2.extract_parameters(stored)
    assert not basic.verify(dummy, b"")


def test_the_dummy_follows_the_costs_most_consumers_use():
    cheap = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    verifier = basic.BasicVerifier({"a": cheap.hash("1"), "b": cheap.hash("2"), "c": BOB_BCRYPT}, 60, 10)
    assert basic.cost_of(verifier.unknown_user_hash) == basic.cost_of(cheap.hash("3"))


async def test_an_unknown_name_runs_one_verification_like_a_known_one(gateway_client, hashed):
    client = gateway_client(config(), client=A)
    assert (await client.get("/v1/x", headers=basic_auth("mallory", "x"))).status_code == 401
    assert (await client.get("/v1/x", headers=basic_auth("alice", "x"))).status_code == 401
    unknown, known = hashed
    assert unknown != known and basic.cost_of(unknown) == basic.cost_of(known)


# --- bounded password checks --------------------------------------------------------


async def test_password_checks_beyond_the_pool_and_its_queue_get_503(gateway_client, monkeypatch):
    release = threading.Event()
    started = threading.Event()

    def stuck(stored: str, password: bytes) -> bool:
        started.set()
        release.wait(30)
        return False

    monkeypatch.setattr(basic, "verify", stuck)
    monkeypatch.setattr(basic, "VERIFY_QUEUE", 0)
    client = gateway_client(config('address = []\naddress_identity = []'), client=A)
    try:
        filling = [asyncio.ensure_future(client.get("/v1/x", headers=basic_auth("alice", f"one-{i}"))) for i in range(basic.VERIFY_THREADS)]
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
        deadline = time.monotonic() + 30
        while basic._in_pool < basic.VERIFY_THREADS and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        response = await client.get("/v1/x", headers=basic_auth("alice", "three"))
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "auth_busy"
        assert response.headers["retry-after"] == "1"
    finally:
        release.set()
    for task in filling:
        assert (await task).status_code == 401
    assert basic._in_pool == 0


# --- API keys and tokens ------------------------------------------------------------


async def test_bad_api_keys_beyond_the_rate_get_429_and_a_good_key_still_passes(gateway_client):
    client = gateway_client(config('address = ["3/minute"]'), client=A)
    for _ in range(3):
        assert (await client.get("/v1/x", headers={"X-API-Key": new_key()})).status_code == 401
    assert_too_many(await client.get("/v1/x", headers={"X-API-Key": new_key()}), which="address")
    # a key cannot be guessed, and checking one costs microseconds: a valid one is always taken
    assert (await client.get("/v1/x", headers={"X-API-Key": ALICE_KEY})).status_code == 200


async def test_bad_tokens_are_counted_under_their_claimed_subject(gateway_client):
    client = gateway_client(config(), client=A)
    forged = "another-secret-of-at-least-32-bytes!!"
    for _ in range(3):
        assert (await client.get("/v1/x", headers=token("admin", forged))).status_code == 401
    assert_too_many(await client.get("/v1/x", headers=token("admin", forged)))
    assert (await client.get("/v1/x", headers=token("carol", forged))).status_code == 401
    assert (await client.get("/v1/x", headers=token("admin"))).status_code == 200


async def test_credentials_a_route_does_not_take_are_not_counted(gateway_client, hashed):
    client = gateway_client(config('address = ["2/minute"]'), client=A)
    for _ in range(5):
        response = await client.get("/keys-only/x", headers=basic_auth("alice", "wrong"))
        assert response.status_code == 401 and "does not accept Basic" in response.json()["error"]["message"]
    assert hashed == []
    assert (await client.get("/v1/x", headers=basic_auth("alice", "wrong"))).status_code == 401


async def test_the_admin_endpoints_count_failures_too(gateway_client, hashed):
    client = gateway_client(config(), client=A)
    for _ in range(3):
        assert (await client.get("/_stackgate/status", headers=basic_auth("alice", "wrong"))).status_code == 401
    assert_too_many(await client.get("/_stackgate/status", headers=basic_auth("alice", "wrong")))
    assert len(hashed) == 3


# --- the storage ----------------------------------------------------------------------


async def test_counters_are_shared_through_redis(gateway_client, redis_server, hashed):
    rates = 'address_identity = ["3/minute"]'
    extra = f'\n[throttle]\nstorage = "{redis_server.url}"\nkey_prefix = "guard-{time.time_ns()}"\n'
    one = gateway_client(config(rates, extra), client=A)
    two = gateway_client(config(rates, extra), client=A)  # another gateway: another worker or host
    for client in (one, two, one):
        assert (await client.get("/v1/x", headers=basic_auth("alice", "wrong"))).status_code == 401
    assert_too_many(await two.get("/v1/x", headers=basic_auth("alice", "wrong")))
    assert len(hashed) == 3


@pytest.mark.parametrize("on_error, status", [("allow", 401), ("deny", 503)])
async def test_an_unreachable_store_follows_on_store_error(gateway_client, hashed, on_error, status):
    from tests.services import free_port

    extra = f'\n[throttle]\nstorage = "redis://127.0.0.1:{free_port()}/0"\non_store_error = "{on_error}"\n'
    client = gateway_client(config(extra=extra), client=A)
    for _ in range(5):
        response = await client.get("/v1/x", headers=basic_auth("alice", "wrong"))
        assert response.status_code == status, response.text
    if on_error == "deny":
        assert response.json()["error"]["code"] == "throttle_unavailable" and response.headers["retry-after"] == "1"
        assert hashed == []
    assert (await client.get("/v1/x", headers={"X-API-Key": ALICE_KEY})).status_code == 200


# --- config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rates, message",
    [
        ('address = ["lots"]', 'test.toml: auth.failure_rates.address[0]: must be a rate such as "100/minute"'),
        ('address_identity = ["10/minute", "0/hour"]', "test.toml: auth.failure_rates.address_identity[1]: must be a rate"),
        ('identity = ["10/minute"]', "test.toml: auth.failure_rates.identity: unknown key"),
        ("address = 30", "test.toml: auth.failure_rates.address: "),
    ],
    ids=["not-a-rate", "zero", "unknown-key", "not-a-list"],
)
def test_bad_rates_are_config_errors(rates, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(config(rates).encode(), "test.toml")
    assert message in str(caught.value), str(caught.value)


def test_a_single_rate_may_be_a_string():
    parsed = parse_config(config('address = "5/minute"').encode(), "test.toml")
    assert parsed.auth.failure_rates.address == ["5/minute"]


def test_identity_keys_never_hold_the_claimed_text():
    attempt = guard.Attempt({"client": ("10.0.0.9", 1)})
    attempt.claimed = b"basic:" + "ä\r\n".encode() * 1000
    assert attempt.identity_key.startswith("ip:10.0.0.9/") and len(attempt.identity_key) < 64
