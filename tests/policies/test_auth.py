"""The auth policy through the in-process gateway: API keys, JWT bearer tokens, HTTP Basic.

Every refusal is checked for its status, the JSON error shape, the
``WWW-Authenticate`` challenge (401) and — the point — that nothing reached
the backend (``wsgi_apps.RECORDED == []``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import argon2
import bcrypt
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.config import parse_config
from gateway.errors import GatewayError
from gateway.policies.auth import Identity, authenticate, basic, require
from gateway.policies.auth.apikey import hash_key, new_key
from tests.fixtures import wsgi_apps

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-for-hs256-0123456789abcdef"
HS_ISS = "https://hs.example"
RS_ISS = "https://rs.example"
KC_ISS = "https://sso.example/realms/corp"
AUDIENCE = "stackgate-tests"
# One header per scheme (a browser reads one challenge per header); httpx joins them with ", ".
CHALLENGE_HEADERS = ['Bearer realm="stackgate"', 'Basic realm="stackgate"', 'ApiKey realm="stackgate", header="X-API-Key"']
ALL_CHALLENGES = ", ".join(CHALLENGE_HEADERS)

KEYS = {name: new_key() for name in ("alice", "bob", "tester", "admin")}
PASSWORDS = {"alice": "alice-pw", "tester": "tester-pw"}
# Cheap hashes keep the tests fast; both kinds are the real formats.
ALICE_BCRYPT = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(rounds=4)).decode()
TESTER_ARGON2 = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("tester-pw")
UNKNOWN_KEY = new_key()


@dataclass
class Keys:
    rsa: Any
    ec: Any
    other_rsa: Any
    jwks_file: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    folder = tmp_path_factory.mktemp("jwks")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs_jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rs1", "use": "sig"}
    ec_jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec1"}
    path = folder / "rs.jwks.json"
    path.write_text(json.dumps({"keys": [rs_jwk, ec_jwk]}))
    return Keys(rsa_key, ec_key, other, path)


def config_text(keys: Keys) -> str:
    return f"""
[auth]
roles = ["auditor"]

[auth.jwt.hs]
issuer = "{HS_ISS}"
algorithms = ["HS256"]
secret = "${{TEST_JWT_SECRET}}"
audience = "{AUDIENCE}"
leeway = 30

[auth.jwt.rs]
issuer = "{RS_ISS}"
algorithms = ["RS256", "ES256"]
jwks_file = "{keys.jwks_file}"
roles_claim = "groups"

[auth.jwt.keycloak]
issuer = "{KC_ISS}"
algorithms = ["RS256"]
jwks_file = "{keys.jwks_file}"
roles_claim = "realm_access.roles"

[consumers.alice]
roles = ["user"]
api_keys = ["{hash_key(KEYS['alice'])}"]
password = "{ALICE_BCRYPT}"

[consumers.bob]
roles = ["user"]
api_keys = ["{hash_key(KEYS['bob'])}"]

[consumers.tester]
roles = ["user", "tester"]
api_keys = ["{hash_key(KEYS['tester'])}"]
password = "{TESTER_ARGON2}"

[consumers.admin]
roles = ["admin", "user"]
api_keys = ["{hash_key(KEYS['admin'])}"]

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
threads = 4

[[routes]]
prefix = "/v1"
backend = "rec"
roles = ["user"]

[[routes]]
prefix = "/admin-only"
backend = "rec"
auth = "required"
roles = ["admin"]

[[routes]]
prefix = "/audit"
backend = "rec"
roles = ["auditor"]

[[routes]]
prefix = "/opt"
backend = "rec"
auth = "optional"

[[routes]]
prefix = "/open"
backend = "rec"
auth = "none"

[[routes]]
prefix = "/fwd"
backend = "rec"
forward_credentials = true

[[routes]]
prefix = "/keys-only"
backend = "rec"
auth_schemes = ["api-key"]
"""


ENV = {"TEST_JWT_SECRET": SECRET}


@pytest.fixture
def client(gateway_client, keys):
    return gateway_client(config_text(keys), environ=ENV)


# --- credentials -------------------------------------------------------------


def api_key(name: str) -> list[tuple[str, str]]:
    return [("X-API-Key", KEYS[name])]


def basic_auth(user: str, password: str) -> list[tuple[str, str]]:
    return [("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())]


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", "Bearer " + token)]


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": HS_ISS, "aud": AUDIENCE, "sub": "carol", "exp": now + 300, "iat": now}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs_token(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def rs_token(keys: Keys, key: Any = None, kid: str = "rs1", alg: str = "RS256", **overrides: Any) -> str:
    body = claims(**{"iss": RS_ISS, "aud": None, **overrides})
    return jwt.encode(body, key or keys.rsa, algorithm=alg, headers={"kid": kid})


def _segment(data: dict) -> bytes:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=")


def forged_hs256(body: dict, secret: bytes, header: dict | None = None) -> str:
    """An HS256 token signed by hand (PyJWT itself refuses a PEM as an HMAC secret)."""
    signing = _segment({"alg": "HS256", "typ": "JWT", **(header or {})}) + b"." + _segment(body)
    signature = base64.urlsafe_b64encode(hmac.new(secret, signing, hashlib.sha256).digest()).rstrip(b"=")
    return (signing + b"." + signature).decode()


def unsigned(body: dict, header: dict | None = None) -> str:
    return (_segment({"alg": "none", "typ": "JWT", **(header or {})}) + b"." + _segment(body) + b".").decode()


def tamper_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[5] != "A" else "B")
    return f"{head}.{payload}.{signature[:5]}{flipped}{signature[6:]}"


def tamper_payload(token: str, **changes: Any) -> str:
    head, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    return f"{head}.{_segment(body).decode()}.{signature}"


def public_pem(keys: Keys) -> bytes:
    return keys.rsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- assertions --------------------------------------------------------------


def assert_refused(response, status: int, message: str | None = None, challenge: str | None = ALL_CHALLENGES) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == status
    assert error["code"] == {401: "unauthorized", 403: "forbidden"}[status]
    assert error["request_id"] == response.headers["x-request-id"]
    if message is not None:
        assert message in error["message"], error["message"]
    if status == 401:
        assert response.headers["www-authenticate"] == challenge
    else:
        assert "www-authenticate" not in response.headers
    assert wsgi_apps.RECORDED == [], "a refused request reached the backend"
    return error


def seen_headers(response) -> dict[str, str]:
    return response.json()["headers"]


# --- refusals: a table ---------------------------------------------------------

Case = Callable[[Keys], list[tuple[str, str]]]

SPOOFED = [
    ("X-Consumer-Id", "admin"),
    ("x_consumer_id", "admin"),
    ("X-Consumer-Roles", "admin"),
    ("X_Consumer_Roles", "admin"),
    ("X-Auth-Scheme", "api-key"),
    ("X-Remote-User", "admin"),
    ("X_Remote_User", "admin"),
    ("Remote-User", "admin"),
    ("Remote_User", "admin"),
]

REFUSALS: list[tuple[str, str, Case, int, str]] = [
    # id, path, headers, status, message fragment
    ("missing", "/v1/x", lambda k: [], 401, "Credentials are required: send Authorization: Bearer <token>"),
    ("spoofed-identity-headers", "/v1/x", lambda k: SPOOFED, 401, "Credentials are required"),
    ("spoofed-identity-headers-grant-no-role", "/admin-only/x", lambda k: SPOOFED + api_key("alice"), 403, '"admin"'),
    ("malformed-bearer", "/v1/x", lambda k: bearer("not.a.jwt"), 401, "it is not a well-formed JWT"),
    ("empty-bearer", "/v1/x", lambda k: [("Authorization", "Bearer")], 401, "not a well-formed JWT"),
    ("unknown-scheme", "/v1/x", lambda k: [("Authorization", "Digest username=alice")], 401, "Unsupported Authorization scheme"),
    ("expired", "/v1/x", lambda k: bearer(hs_token(exp=int(time.time()) - 120)), 401, "it has expired"),
    ("expired-rs", "/v1/x", lambda k: bearer(rs_token(k, exp=int(time.time()) - 5)), 401, "it has expired"),
    ("not-yet-valid", "/v1/x", lambda k: bearer(hs_token(nbf=int(time.time()) + 600)), 401, "it is not valid yet"),
    ("wrong-audience", "/v1/x", lambda k: bearer(hs_token(aud="someone-else")), 401, '"aud" claim does not name'),
    ("missing-audience", "/v1/x", lambda k: bearer(hs_token(aud=None)), 401, 'the "aud" claim is missing'),
    ("aud-without-configured-audience", "/v1/x", lambda k: bearer(rs_token(k, aud="x")), 401, '"aud" claim'),
    ("missing-exp", "/v1/x", lambda k: bearer(hs_token(exp=None)), 401, 'the "exp" claim is missing'),
    ("wrong-issuer", "/v1/x", lambda k: bearer(hs_token(iss="https://evil.example")), 401, "names no configured issuer"),
    ("missing-issuer", "/v1/x", lambda k: bearer(hs_token(iss=None)), 401, "names no configured issuer"),
    ("alg-none", "/v1/x", lambda k: bearer(unsigned(claims(sub="admin"))), 401, '"alg" is not allowed'),
    ("alg-none-rs", "/v1/x", lambda k: bearer(unsigned(claims(iss=RS_ISS, aud=None), {"kid": "rs1"})), 401, '"alg" is not allowed'),
    (
        "hs-rs-key-confusion",
        "/v1/x",
        lambda k: bearer(forged_hs256(claims(iss=RS_ISS, aud=None, sub="admin"), public_pem(k), {"kid": "rs1"})),
        401,
        '"alg" is not allowed',
    ),
    ("rs-token-naming-hs-issuer", "/v1/x", lambda k: bearer(rs_token(k, iss=HS_ISS, aud=AUDIENCE)), 401, '"alg" is not allowed'),
    ("es256-token-with-rsa-kid", "/v1/x", lambda k: bearer(rs_token(k, key=k.ec, kid="rs1", alg="ES256")), 401, "does not fit the key"),
    ("tampered-signature", "/v1/x", lambda k: bearer(tamper_signature(rs_token(k))), 401, "signature does not verify"),
    ("tampered-payload", "/v1/x", lambda k: bearer(tamper_payload(hs_token(sub="alice"), sub="admin")), 401, "signature does not verify"),
    ("tampered-roles", "/admin-only/x", lambda k: bearer(tamper_payload(rs_token(k), groups=["admin"])), 401, "signature does not verify"),
    ("wrong-hs-secret", "/v1/x", lambda k: bearer(jwt.encode(claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256")), 401, "signature"),
    ("unknown-kid", "/v1/x", lambda k: bearer(rs_token(k, key=k.other_rsa, kid="nope")), 401, '"kid" names no key'),
    ("other-key-known-kid", "/v1/x", lambda k: bearer(rs_token(k, key=k.other_rsa)), 401, "signature does not verify"),
    ("identity-with-crlf", "/v1/x", lambda k: bearer(hs_token(sub="alice\r\nX-Consumer-Id: admin")), 401, '"sub" claim must be'),
    ("identity-missing", "/v1/x", lambda k: bearer(hs_token(sub=None, roles=["user"])), 401, '"sub" claim must be'),
    ("identity-not-a-string", "/v1/x", lambda k: bearer(hs_token(sub=7, roles=["user"])), 401, '"sub" claim is not a string'),
    ("huge-token", "/v1/x", lambda k: bearer(hs_token(pad="x" * 9000)), 401, "not a well-formed JWT"),
    ("wrong-password", "/v1/x", lambda k: basic_auth("alice", "wrong"), 401, "Unknown user or wrong password."),
    ("wrong-password-argon2", "/v1/x", lambda k: basic_auth("tester", "wrong"), 401, "Unknown user or wrong password."),
    ("unknown-user", "/v1/x", lambda k: basic_auth("mallory", "alice-pw"), 401, "Unknown user or wrong password."),
    ("user-without-password", "/v1/x", lambda k: basic_auth("bob", ""), 401, "Unknown user or wrong password."),
    ("malformed-basic", "/v1/x", lambda k: [("Authorization", "Basic !!!not-base64")], 401, 'base64 of "user:password"'),
    ("basic-without-colon", "/v1/x", lambda k: [("Authorization", "Basic " + base64.b64encode(b"alice").decode())], 401, "base64"),
    ("unknown-key", "/v1/x", lambda k: [("X-API-Key", UNKNOWN_KEY)], 401, "The API key is not valid."),
    ("empty-key", "/v1/x", lambda k: [("X-API-Key", "")], 401, "The API key is not valid."),
    ("key-hash-as-key", "/v1/x", lambda k: [("X-API-Key", hash_key(KEYS["alice"]))], 401, "The API key is not valid."),
    ("two-authorization-headers", "/v1/x", lambda k: bearer(hs_token()) + basic_auth("alice", "alice-pw"), 401, "Send one credential only"),
    ("key-and-authorization", "/v1/x", lambda k: api_key("alice") + bearer(hs_token()), 401, "Send one credential only"),
    ("two-api-keys", "/v1/x", lambda k: api_key("alice") + api_key("bob"), 401, "Send one credential only"),
    ("bad-key-on-optional-route", "/opt/x", lambda k: [("X-API-Key", UNKNOWN_KEY)], 401, "The API key is not valid."),
    ("bad-token-on-optional-route", "/opt/x", lambda k: bearer(hs_token(exp=1)), 401, "it has expired"),
    ("ambiguous-on-optional-route", "/opt/x", lambda k: api_key("alice") + api_key("alice"), 401, "Send one credential only"),
    ("missing-role", "/admin-only/x", lambda k: api_key("alice"), 403, 'requires one of the roles "admin"'),
    ("missing-role-basic", "/admin-only/x", lambda k: basic_auth("alice", "alice-pw"), 403, '"admin"'),
    ("token-without-roles", "/v1/x", lambda k: bearer(hs_token(sub="carol")), 403, '"user"'),
    ("token-roles-claim-ignored-when-configured-elsewhere", "/v1/x", lambda k: bearer(rs_token(k, roles=["user"])), 403, '"user"'),
]


@pytest.mark.parametrize("path, make_headers, status, message", [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
async def test_refused_before_the_backend(client, keys, path, make_headers, status, message):
    response = await client.get(path, headers=make_headers(keys))
    assert_refused(response, status, message)


async def test_scheme_not_accepted_by_the_route(client):
    response = await client.get("/keys-only/x", headers=basic_auth("alice", "alice-pw"))
    error = assert_refused(response, 401, challenge='ApiKey realm="stackgate", header="X-API-Key"')
    assert error["message"] == "This route does not accept Basic credentials: send X-API-Key: <key>."
    response = await client.get("/keys-only/x")
    assert response.json()["error"]["message"] == "Credentials are required: send X-API-Key: <key>."


async def test_missing_credentials_message_names_every_form(client):
    error = assert_refused(await client.get("/v1/x"), 401)
    assert error["message"] == (
        "Credentials are required: send Authorization: Bearer <token>, "
        "Authorization: Basic <base64 of user:password> or X-API-Key: <key>."
    )


# --- each scheme identifies the consumer ----------------------------------------


def assert_identified(response, name: str, roles: str, scheme: str) -> dict[str, str]:
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["remote_user"] == name
    headers = seen["headers"]
    assert headers["HTTP_X_CONSUMER_ID"] == name
    assert headers["HTTP_X_CONSUMER_ROLES"] == roles
    assert headers["HTTP_X_AUTH_SCHEME"] == scheme
    return headers


async def test_api_key(client):
    headers = assert_identified(await client.get("/v1/x", headers=api_key("alice")), "alice", "user", "api-key")
    assert "HTTP_X_API_KEY" not in headers and "HTTP_AUTHORIZATION" not in headers


async def test_basic_bcrypt(client):
    headers = assert_identified(await client.get("/v1/x", headers=basic_auth("alice", "alice-pw")), "alice", "user", "basic")
    assert "HTTP_AUTHORIZATION" not in headers


async def test_basic_argon2(client):
    assert_identified(await client.get("/v1/x", headers=basic_auth("tester", "tester-pw")), "tester", "tester,user", "basic")


async def test_jwt_of_a_consumer_adds_its_roles(client):
    token = hs_token(sub="bob", roles=["auditor"])
    headers = assert_identified(await client.get("/audit/x", headers=bearer(token)), "bob", "auditor,user", "jwt")
    assert "HTTP_AUTHORIZATION" not in headers


async def test_jwt_identity_need_not_be_a_consumer(client):
    assert_identified(await client.get("/v1/x", headers=bearer(hs_token(sub="carol", roles="user auditor"))), "carol", "auditor,user", "jwt")


async def test_jwt_leeway(client):
    assert_identified(await client.get("/v1/x", headers=bearer(hs_token(sub="bob", exp=int(time.time()) - 10))), "bob", "user", "jwt")


async def test_jwt_invalid_roles_are_dropped(client):
    token = hs_token(sub="carol", roles=["user", "bad role", "x,admin", 7])
    assert_identified(await client.get("/v1/x", headers=bearer(token)), "carol", "user", "jwt")


async def test_rs256_and_es256_from_the_jwks(client, keys):
    assert_identified(await client.get("/v1/x", headers=bearer(rs_token(keys, sub="dave", groups=["user"]))), "dave", "user", "jwt")
    token = rs_token(keys, key=keys.ec, kid="ec1", alg="ES256", sub="erin", groups=["user"])
    assert_identified(await client.get("/v1/x", headers=bearer(token)), "erin", "user", "jwt")


async def test_roles_from_a_nested_claim(client, keys):
    """Keycloak's realm roles: ``roles_claim = "realm_access.roles"`` reads the nested list."""
    token = rs_token(keys, iss=KC_ISS, sub="kim", realm_access={"roles": ["user", "offline_access"]})
    assert_identified(await client.get("/v1/x", headers=bearer(token)), "kim", "offline_access,user", "jwt")
    # The same list at the top level is not where this issuer keeps roles: no role, 403.
    flat = rs_token(keys, iss=KC_ISS, sub="kim", roles=["user"])
    assert (await client.get("/v1/x", headers=bearer(flat))).status_code == 403
    # A path through something that is not an object finds nothing.
    odd = rs_token(keys, iss=KC_ISS, sub="kim", realm_access=["user"])
    assert (await client.get("/v1/x", headers=bearer(odd))).status_code == 403


async def test_lower_case_scheme_and_extra_spaces(client):
    response = await client.get("/v1/x", headers=[("Authorization", "bearer   " + hs_token(sub="bob"))])
    assert_identified(response, "bob", "user", "jwt")


async def test_spoofed_identity_headers_never_reach_the_backend(client):
    response = await client.get("/v1/x", headers=SPOOFED + api_key("alice"))
    headers = assert_identified(response, "alice", "user", "api-key")
    spoofable = ("HTTP_X_REMOTE_USER", "HTTP_REMOTE_USER")
    assert not [key for key in spoofable if key in headers]
    assert {k for k in headers if "CONSUMER" in k or "AUTH_SCHEME" in k} == {"HTTP_X_CONSUMER_ID", "HTTP_X_CONSUMER_ROLES", "HTTP_X_AUTH_SCHEME"}


async def test_any_listed_role_grants_access(client):
    assert_identified(await client.get("/admin-only/x", headers=api_key("admin")), "admin", "admin,user", "api-key")
    assert_identified(await client.get("/audit/x", headers=bearer(hs_token(roles=["auditor"]))), "carol", "auditor", "jwt")


async def test_forward_credentials(client):
    headers = assert_identified(await client.get("/fwd/x", headers=api_key("bob")), "bob", "user", "api-key")
    assert headers["HTTP_X_API_KEY"] == KEYS["bob"]
    token = hs_token(sub="bob")
    headers = assert_identified(await client.get("/fwd/x", headers=bearer(token)), "bob", "user", "jwt")
    assert headers["HTTP_AUTHORIZATION"] == "Bearer " + token


async def test_optional_route_lets_anonymous_through(client):
    response = await client.get("/opt/x", headers=SPOOFED)
    assert response.status_code == 200
    seen = response.json()
    assert seen["remote_user"] is None
    assert not [k for k in seen["headers"] if "CONSUMER" in k or "AUTH" in k or "REMOTE" in k]


async def test_optional_route_identifies_who_sends_credentials(client):
    assert_identified(await client.get("/opt/x", headers=api_key("tester")), "tester", "tester,user", "api-key")


async def test_none_route_identifies_nobody_and_strips_credentials(client):
    response = await client.get("/open/x", headers=api_key("admin") + [("X-Consumer-Id", "admin")])
    assert response.status_code == 200
    seen = response.json()
    assert seen["remote_user"] is None
    assert not [k for k in seen["headers"] if "CONSUMER" in k or k in ("HTTP_X_API_KEY", "HTTP_AUTHORIZATION")]
    response = await client.get("/open/x", headers=[("X-API-Key", "garbage")])
    assert response.status_code == 200  # "none" checks nothing, so refuses nothing


async def test_identity_travels_in_the_scope(keys):
    config = parse_config(config_text(keys).encode(), "test.toml", ENV)
    from gateway.policies.auth import wrap

    seen: dict = {}

    async def app(scope, receive, send):
        seen.update(scope)

    route = next(r for r in config.routes if r.prefix == "/v1")
    from gateway.context import SCOPE_KEY, RequestContext, Services

    policy = wrap(app, route, config, Services())
    scope = {"type": "http", "headers": [(b"x-api-key", KEYS["tester"].encode())], SCOPE_KEY: RequestContext(request_id="t")}
    await policy(scope, None, None)
    ctx = seen[SCOPE_KEY]
    assert (ctx.identity, ctx.roles, ctx.auth_scheme) == ("tester", ("tester", "user"), "api-key")


# --- HTTP Basic: off the loop, remembered briefly ---------------------------------


async def test_basic_success_is_cached_and_failures_are_not(client, monkeypatch):
    calls = []
    real = basic.verify

    def counting(stored, password):
        calls.append(password)
        return real(stored, password)

    monkeypatch.setattr(basic, "verify", counting)
    for _ in range(3):
        assert (await client.get("/v1/x", headers=basic_auth("tester", "tester-pw"))).status_code == 200
    assert calls == [b"tester-pw"]
    for _ in range(2):
        assert (await client.get("/v1/x", headers=basic_auth("tester", "nope"))).status_code == 401
    assert calls == [b"tester-pw", b"nope", b"nope"]


def test_cache_is_bounded_and_expires(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(basic.time, "monotonic", lambda: now[0])
    cache = basic.VerifiedCache(ttl=60, size=2)
    keys = [cache.key("alice", "$hash", f"pw{i}".encode()) for i in range(3)]
    for key in keys:
        cache.add(key)
    assert len(cache) == 2 and not cache.hit(keys[0]) and cache.hit(keys[2])
    now[0] += 61
    assert not cache.hit(keys[2])
    assert cache.key("alice", "$hash", b"pw") != cache.key("alice", "$other-hash", b"pw")
    assert b"pw" not in repr(cache.key("alice", "$hash", b"pw")).encode()


def test_cache_disabled_with_zero_ttl():
    cache = basic.VerifiedCache(ttl=0, size=100)
    key = cache.key("alice", "$hash", b"pw")
    cache.add(key)
    assert not cache.hit(key)


# --- for the gateway's own endpoints -------------------------------------------------


async def test_authenticate_and_require(keys):
    config = parse_config(config_text(keys).encode(), "test.toml", ENV)

    def scope(*headers: tuple[str, str]) -> dict:
        return {"type": "http", "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}

    assert await authenticate(scope(), config) is None
    identity = await authenticate(scope(*api_key("admin")), config)
    assert identity == Identity("admin", frozenset({"admin", "user"}), "api-key")
    assert (await require(scope(*basic_auth("tester", "tester-pw")), config, ["tester"])).name == "tester"
    with pytest.raises(GatewayError) as refused:
        await authenticate(scope(("X-API-Key", UNKNOWN_KEY)), config)
    assert refused.value.status == 401 and refused.value.headers == [(b"www-authenticate", c.encode()) for c in CHALLENGE_HEADERS]
    with pytest.raises(GatewayError) as refused:
        await require(scope(), config, ["admin"])
    assert refused.value.status == 401
    with pytest.raises(GatewayError) as refused:
        await require(scope(*api_key("alice")), config, ["admin"])
    assert (refused.value.status, refused.value.code) == (403, "forbidden")


# --- the CLI's credentials round-trip ---------------------------------------------------


def stackgate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], input=stdin, capture_output=True, text=True, cwd=ROOT)


ROUND_TRIP = """
[consumers.zoe]
roles = ["user"]
{lines}

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[[routes]]
prefix = "/v1"
backend = "rec"
roles = ["user"]
"""


async def test_keys_new_round_trip(gateway_client):
    result = stackgate("keys", "new", "zoe")
    assert result.returncode == 0, result.stderr
    key, line = result.stdout.splitlines()
    assert key.startswith("sgk_") and len(key) == 47
    assert line == f'api_keys = ["{hash_key(key)}"]   # in [consumers.zoe]'
    assert "shown only this once" in result.stderr
    client = gateway_client(ROUND_TRIP.format(lines=line))
    assert_identified(await client.get("/v1/x", headers=[("X-API-Key", key)]), "zoe", "user", "api-key")
    assert stackgate("keys", "new", "zoe").stdout.splitlines()[0] != key


async def test_password_round_trip(gateway_client):
    result = stackgate("password", "zoe", stdin="correct horse battery staple\n")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith('password = "$argon2id$') and line.endswith('"   # in [consumers.zoe]')
    assert "correct horse" not in result.stdout
    client = gateway_client(ROUND_TRIP.format(lines=line))
    assert_identified(await client.get("/v1/x", headers=basic_auth("zoe", "correct horse battery staple")), "zoe", "user", "basic")
    assert (await client.get("/v1/x", headers=basic_auth("zoe", "correct horse"))).status_code == 401


def test_password_refuses_an_empty_one():
    result = stackgate("password", "zoe", stdin="\n")
    assert result.returncode == 1 and result.stdout == ""


@pytest.mark.parametrize("verb", [("keys", "new"), ("password",)])
def test_consumer_names_are_checked(verb):
    result = stackgate(*verb, "not a name", stdin="pw\n")
    assert result.returncode == 2
    assert '"not a name" is not a consumer name' in result.stderr
