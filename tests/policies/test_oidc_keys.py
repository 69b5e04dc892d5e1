"""Remote signing keys (gateway.policies.auth.jwks): parsing, cache bounds, single flight, rate limit;
and token introspection (gateway.policies.auth.introspection): shared calls, caches, failures.

The fetching tests ask the real OpenID provider of tests/oidc on loopback.
"""

from __future__ import annotations

import asyncio
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pydantic import SecretStr

from gateway.policies.auth import jwks
from gateway.policies.auth.identity import BadCredentials
from gateway.policies.auth.introspection import Introspector
from gateway.policies.auth.schema import JwtIssuerConfig
from tests.oidc import CLIENTS, OidcProvider, unavailable
from tests.services import free_port


def public_jwk(key, **extra) -> dict:
    if isinstance(key, rsa.RSAPrivateKey):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        data = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())
    else:
        data = jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key())
    return {**json.loads(data), **extra}


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
P256 = ec.generate_private_key(ec.SECP256R1())
P384 = ec.generate_private_key(ec.SECP384R1())
ED = ed25519.Ed25519PrivateKey.generate()


@pytest.mark.parametrize(
    "entries, algorithms, expected",
    [
        ([public_jwk(RSA, kid="r")], None, {"r": ["RS256"]}),
        ([public_jwk(RSA, kid="r")], ("RS256", "PS256", "ES256"), {"r": ["RS256", "PS256"]}),
        ([public_jwk(RSA, kid="r", alg="PS384")], None, {"r": ["PS384"]}),
        ([public_jwk(RSA, kid="r", alg="PS384")], ("RS256",), {}),
        ([public_jwk(P256, kid="e"), public_jwk(P384, kid="f")], None, {"e": ["ES256"], "f": ["ES384"]}),
        ([public_jwk(P256, kid="e", alg="ES384")], None, {}),  # the curve decides, not a mislabelled alg
        ([public_jwk(ED, kid="d")], None, {"d": ["EdDSA"]}),
        ([public_jwk(RSA, kid="r", alg="HS256")], None, {}),  # never an HMAC algorithm for a public key
        ([{"kty": "oct", "kid": "s", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}], None, {}),
        ([public_jwk(RSA, kid="r", use="enc")], None, {}),
        ([{**public_jwk(RSA, kid="r"), "d": "private"}], None, {}),
        ([public_jwk(RSA, kid="r"), {"kty": "XYZ", "kid": "x"}, "junk"], None, {"r": ["RS256"]}),
    ],
    ids=[
        "rsa-default-rs256", "rsa-configured-algs", "rsa-own-alg", "rsa-own-alg-not-allowed", "ec-by-curve",
        "ec-mislabelled", "okp-eddsa", "rsa-labelled-hs256", "oct-skipped", "enc-skipped", "private-skipped", "unknown-skipped",
    ],
)
def test_prepare_keys(entries, algorithms, expected):
    if not expected:
        with pytest.raises(ValueError, match="holds no signing key"):
            jwks.prepare_keys({"keys": entries}, algorithms)
        return
    keys = jwks.prepare_keys({"keys": entries}, algorithms)
    assert {kid: sorted(algs) for kid, algs in keys.items()} == {kid: sorted(algs) for kid, algs in expected.items()}


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, 300), ("", 300), ("public, max-age=120", 120), ("max-age=5", 60), ("max-age=999999", 3600),
        ("no-store", 60), ("no-cache, max-age=900", 60), ('max-age="600"', 600), ("s-maxage=10", 300),
    ],
)
def test_cache_control_within_bounds(header, expected):
    assert jwks.cache_seconds(header, 60, 3600) == expected


def issuer_config(url: str, **extra) -> JwtIssuerConfig:
    return JwtIssuerConfig(issuer="http://127.0.0.1", jwks_url=url, **extra)


class Counted(jwks.RemoteKeys):
    """RemoteKeys that counts its requests to the provider."""

    gets = 0

    async def _get(self, url, what):
        self.gets += 1
        return await super()._get(url, what)


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    server = OidcProvider(tmp_path_factory.mktemp("oidc-keys") / "provider.log").start()
    yield server
    server.stop()


def test_one_fetch_serves_every_waiter(provider):
    async def scenario():
        keys = Counted("t", issuer_config(provider.issuer + "/jwks", refresh_min_interval=0))
        found = await asyncio.gather(*(keys.keyset(kid) for kid in ["nope"] * 20))
        known = next(iter(keys.keys))
        assert found == [None] * 20 and keys.gets == 1 and await keys.keyset(known)
        await keys.aclose()

    asyncio.run(scenario())


def test_unknown_kids_fetch_at_most_once_per_interval(provider):
    async def scenario():
        limited = Counted("t", issuer_config(provider.issuer + "/jwks", refresh_min_interval=3600))
        assert await limited.keyset("made-up-1") is None and limited.gets == 1
        for n in range(20):
            assert await limited.keyset(f"made-up-{n + 2}") is None
        assert limited.gets == 1
        eager = Counted("t", issuer_config(provider.issuer + "/jwks", refresh_min_interval=0))
        for n in range(3):
            assert await eager.keyset(f"made-up-{n}") is None
        assert eager.gets == 3
        await limited.aclose()
        await eager.aclose()

    asyncio.run(scenario())


def test_a_provider_down_from_the_start_fails_no_request(tmp_path):
    async def scenario():
        keys = jwks.RemoteKeys("t", issuer_config(f"http://127.0.0.1:{free_port()}/jwks", refresh_min_interval=0, fetch_timeout=2))
        assert await keys.keyset("any") is None and await keys.keyset(None) is None
        check = keys.readiness()
        assert check["ok"] is False and "the JWKS at" in check["error"] and check["keys"] == 0
        await keys.aclose()

    asyncio.run(scenario())


def test_discovery_checks_the_documents_issuer(provider):
    async def scenario():
        wrong = JwtIssuerConfig(issuer=provider.issuer + "/", discovery=True, refresh_min_interval=0)
        keys = jwks.RemoteKeys("t", wrong)
        assert await keys.keyset("x") is None
        assert "names the issuer" in keys.readiness()["error"]
        right = jwks.RemoteKeys("t", JwtIssuerConfig(issuer=provider.issuer, discovery=True))
        await right.refresh()
        assert right.keys and right.introspection_endpoint == provider.issuer + "/token/introspection"
        await keys.aclose()
        await right.aclose()

    asyncio.run(scenario())


def test_a_reload_keeps_the_cache_unless_the_key_settings_change():
    first = jwks.remote_keys("reloaded", issuer_config("https://idp.example/jwks"))
    assert jwks.remote_keys("reloaded", issuer_config("https://idp.example/jwks")) is first
    changed = jwks.remote_keys("reloaded", issuer_config("https://idp.example/jwks", keys_min_ttl=120))
    assert changed is not first and first.retired and not changed.retired


@pytest.mark.parametrize(
    "path, error",
    [("/.well-known/openid-configuration", 'not a JSON Web Key Set: expected {"keys": [...]}'), ("/no-such-page", "HTTP 404")],
    ids=["not-a-key-set", "not-found"],
)
def test_a_provider_answering_something_else_fails_no_request(provider, path, error):
    async def scenario():
        keys = jwks.RemoteKeys("t", issuer_config(provider.issuer + path, refresh_min_interval=0))
        assert await keys.keyset("any") is None
        assert error in keys.readiness()["error"]
        await keys.aclose()

    asyncio.run(scenario())


def introspection_config(provider: OidcProvider, **extra):
    from gateway.policies.auth.schema import IntrospectionConfig

    return IntrospectionConfig(
        endpoint=provider.issuer + "/token/introspection", client_id="gateway", client_secret=CLIENTS["gateway"], **extra
    )


class CountedIntrospector(Introspector):
    asked = 0

    async def _ask(self, client, key, token):
        self.asked += 1
        return await super()._ask(client, key, token)


def test_introspection_is_shared_and_cached(provider):
    token = provider.token("svc-opaque")

    async def scenario():
        config = introspection_config(provider)
        introspector = CountedIntrospector("t", provider.issuer, config, lambda: config.endpoint)
        answers = await asyncio.gather(*(introspector.claims(token) for _ in range(10)))
        assert introspector.asked == 1 and all(a["client_id"] == "svc-opaque" and a["active"] for a in answers)
        assert (await introspector.claims(token))["roles"] == ["reader"] and introspector.asked == 1  # cached
        for _ in range(3):
            with pytest.raises(BadCredentials, match="not active"):
                await introspector.claims("no-such-token-0123456789")
        assert introspector.asked == 2  # the inactive answer is cached too

    asyncio.run(scenario())


def test_introspection_without_a_cache_sees_a_revocation_at_once(provider):
    token = provider.token("svc-opaque")

    async def scenario():
        config = introspection_config(provider, cache_ttl=0)
        introspector = Introspector("t", provider.issuer, config, lambda: config.endpoint)
        assert (await introspector.claims(token))["active"]
        provider.revoke(token)
        with pytest.raises(BadCredentials, match="not active"):
            await introspector.claims(token)

    asyncio.run(scenario())


def test_introspection_with_a_wrong_client_secret_is_a_401_not_a_500(provider):
    token = provider.token("svc-opaque")

    async def scenario():
        config = introspection_config(provider).model_copy(update={"client_secret": SecretStr("wrong-secret")})
        introspector = Introspector("t", provider.issuer, config, lambda: config.endpoint)
        with pytest.raises(BadCredentials, match="did not answer"):
            await introspector.claims(token)

    asyncio.run(scenario())


def test_keys_are_refreshed_in_the_background_before_they_expire(provider):
    async def scenario():
        keys = jwks.RemoteKeys("t", issuer_config(provider.issuer + "/jwks", keys_min_ttl=1, keys_max_ttl=1))
        keys.start()
        await until(lambda: keys.keys)
        newest = provider.rotate(keep=False)[0]
        await until(lambda: newest in keys.keys)  # no request asked for it: the refresher fetched it
        assert len(keys.keys) == 1 and keys.readiness()["ok"]
        await keys.aclose()

    asyncio.run(scenario())


async def until(condition, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.05)


def test_a_provider_that_never_answers_is_given_up_on_after_the_timeout():
    import socket

    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/jwks"

        async def scenario():
            keys = jwks.RemoteKeys("t", issuer_config(url, fetch_timeout=1, refresh_min_interval=0))
            assert await keys.keyset("any") is None
            assert "no answer within 1 s" in keys.readiness()["error"]
            await keys.aclose()

        asyncio.run(scenario())
