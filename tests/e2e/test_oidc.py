"""OAuth 2.0 / OpenID Connect against a real provider (oidc-provider, tests/oidc) and real gateway processes.

The gateway (two workers) finds the provider's keys by discovery, and its
introspection endpoint for opaque tokens. Client-credentials tokens reach
both stacks with their identity and roles; a key rotation is picked up
without a restart; with the provider stopped, cached keys keep working and
an unknown ``kid`` gets a 401; tokens of another issuer, and HS256 tokens
signed with the provider's public key, are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Callable

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.oidc import CLIENTS, RESOURCE, OidcProvider, unavailable
from tests.services import GatewayProcess, base_env

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")

CONFIG = """
[backends.flask]
kind = "wsgi"
app = "backends.flask_site.wsgi:app"

[backends.django]
kind = "wsgi"
app = "backends.django_site.wsgi:application"
django_settings = "backends.django_site.settings"
migrate = true

[backends.echo]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[auth]
roles = ["reader"]

[auth.failure_rates]
address = []
address_identity = []

[auth.jwt.idp]
issuer = "{issuer}"
discovery = true
audience = "{resource}"
keys_min_ttl = 1
keys_max_ttl = 600
refresh_min_interval = 1
fetch_timeout = 5

[auth.jwt.idp.introspection]
client_id = "gateway"
client_secret = "${{OIDC_GATEWAY_SECRET}}"
cache_ttl = 1
negative_ttl = 1

[[routes]]
prefix = "/v1"
backend = "flask"
roles = ["reader"]

[[routes]]
prefix = "/v2"
backend = "django"
roles = ["reader"]

[[routes]]
prefix = "/echo"
backend = "echo"
"""


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oidc-provider")
    server = OidcProvider(folder / "provider.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(provider, tmp_path_factory):
    folder = tmp_path_factory.mktemp("oidc-gateway")
    config = folder / "oidc.toml"
    config.write_text(CONFIG.format(issuer=provider.issuer, resource=RESOURCE))
    env = base_env(STACKGATE_DATA_DIR=str(folder), STACKGATE_WATCH="0", OIDC_GATEWAY_SECRET=CLIENTS["gateway"])
    server = GatewayProcess(config, env, workers=2).start(timeout=60)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def logs_on_failure(request, provider, gateway):
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:  # the call's report is counted before the teardown
        print("--- provider log ---\n" + provider.log()[-6000:])
        print("--- gateway log ---\n" + gateway.log()[-12000:])


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The value of one sample on /_stackgate/metrics (0 when it is not there yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/_stackgate/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def eventually(check: Callable[[], httpx.Response], accept: Callable[[httpx.Response], bool], timeout: float = 60) -> httpx.Response:
    """Ask until ``accept`` holds for several answers in a row (each worker has its own keys)."""
    deadline = time.monotonic() + timeout
    in_a_row = 0
    response = check()
    while time.monotonic() < deadline:
        response = check()
        in_a_row = in_a_row + 1 if accept(response) else 0
        if in_a_row >= 6:  # two workers: enough answers that both have caught up
            return response
        time.sleep(0.2)
    raise AssertionError(f"no stable answer after {timeout} s; last: {response.status_code} {response.text}")


def assert_unauthorized(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == 401 and error["code"] == "unauthorized" and error["request_id"]
    assert reason in error["message"], error["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def _segment(data: dict) -> bytes:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")


def claims(provider: OidcProvider, **overrides) -> dict:
    now = int(time.time())
    return {"iss": provider.issuer, "sub": "mallory", "aud": RESOURCE, "iat": now, "exp": now + 600, "roles": ["reader"], **overrides}


def test_client_credentials_tokens_reach_both_stacks_with_identity_and_roles(provider, gateway):
    token = provider.token("svc-jwt")
    assert token.count(".") == 2  # a JWT access token
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        created = client.post("/v1/todos", json={"title": "from an OIDC client"}, headers=bearer(token))
        assert created.status_code == 201, created.text
        todo_id = created.json()["id"]
        back = client.get(f"/v2/todos/{todo_id}", headers=bearer(token))  # Django: the same owner
        assert back.status_code == 200, back.text
        assert back.json()["title"] == "from an OIDC client"
        other = client.get(f"/v2/todos/{todo_id}", headers=bearer(provider.token("svc-opaque")))
        assert other.status_code == 404, other.text  # another client is another owner
        seen = client.get("/echo/who", headers=bearer(token)).json()
        assert seen["remote_user"] == "svc-jwt"
        assert seen["headers"]["HTTP_X_CONSUMER_ID"] == "svc-jwt"
        assert seen["headers"]["HTTP_X_CONSUMER_ROLES"] == "reader"
        assert seen["headers"]["HTTP_X_AUTH_SCHEME"] == "jwt"
        assert "HTTP_AUTHORIZATION" not in seen["headers"]
        ready = eventually(lambda: client.get("/_stackgate/ready"), lambda r: r.status_code == 200)
        check = ready.json()["checks"]["auth.jwt.idp"]
        assert check["ok"] and check["keys"] >= 1 and "warning" not in check
        assert metric(client, "stackgate_jwks_fetches_total", issuer="idp", outcome="ok") >= 1
        assert metric(client, "stackgate_jwks_keys", issuer="idp") >= 1


def test_opaque_tokens_are_introspected_active_then_revoked(provider, gateway):
    token = provider.token("svc-opaque")
    assert "." not in token  # opaque
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for path in ("/v1/todos", "/v2/todos"):
            response = client.get(path, headers=bearer(token))
            assert response.status_code == 200, response.text
        seen = client.get("/echo/who", headers=bearer(token)).json()
        assert seen["remote_user"] == "svc-opaque"
        assert seen["headers"]["HTTP_X_CONSUMER_ROLES"] == "reader"
        provider.revoke(token)
        refused = eventually(lambda: client.get("/v1/todos", headers=bearer(token)), lambda r: r.status_code == 401)
        assert_unauthorized(refused, "not active")
        made_up = client.get("/v2/todos", headers=bearer("made-up-opaque-token-0123456789"))
        assert_unauthorized(made_up, "not active")


def test_a_token_of_another_issuer_is_refused(provider, gateway, tmp_path):
    other = OidcProvider(tmp_path / "other.log").start()
    try:
        token = other.token("svc-jwt")
    finally:
        other.stop()
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        assert_unauthorized(client.get("/v1/todos", headers=bearer(token)), 'its "iss" claim names no configured issuer')
        # The other provider's token, relabelled with our issuer: its kid is unknown here, and the signature is not ours.
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims(provider), key, algorithm="RS256", headers={"kid": jwt.get_unverified_header(token)["kid"]})
        assert_unauthorized(client.get("/v2/todos", headers=bearer(forged)), 'its "kid" names no key of its issuer')


def test_alg_confusion_with_the_public_key_as_hmac_secret_is_refused(provider, gateway):
    jwk = provider.jwks()["keys"][0]
    public = jwt.PyJWK(jwk, algorithm="RS256").key
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
        signing = _segment({"alg": alg, "typ": "JWT", "kid": jwk["kid"]}) + b"." + _segment(claims(provider))
        token = (signing + b"." + base64.urlsafe_b64encode(hmac.new(pem, signing, digest).digest()).rstrip(b"=")).decode()
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            assert_unauthorized(client.get("/v1/todos", headers=bearer(token)), 'its "alg" is not allowed for its issuer')
    none = (_segment({"alg": "none", "kid": jwk["kid"]}) + b"." + _segment(claims(provider)) + b".").decode()
    # Signed with the attacker's key, which the token carries itself (jwk, jku): the provider's key decides.
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    embedded = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    self_signed = jwt.encode(
        claims(provider), attacker, algorithm="RS256", headers={"kid": jwk["kid"], "jwk": embedded, "jku": "http://127.0.0.1:9/jwks"}
    )
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        assert_unauthorized(client.get("/v1/todos", headers=bearer(none)), 'its "alg" is not allowed for its issuer')
        assert_unauthorized(client.get("/v2/todos", headers=bearer(self_signed)), "its signature does not verify")


def test_key_rotation_is_picked_up_without_a_restart(provider, gateway):
    old = provider.token("svc-jwt")
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        assert client.get("/v1/todos", headers=bearer(old)).status_code == 200
        kids = provider.rotate(keep=True)
        new = provider.token("svc-jwt")
        assert jwt.get_unverified_header(new)["kid"] == kids[0] != jwt.get_unverified_header(old)["kid"]
        eventually(lambda: client.get("/v2/todos", headers=bearer(new)), lambda r: r.status_code == 200)
        assert client.get("/v1/todos", headers=bearer(old)).status_code == 200  # still published
        # The old keys dropped: once the gateway fetched the new set, a token signed with them is refused.
        provider.rotate(keep=False)
        newest = provider.token("svc-jwt")
        eventually(lambda: client.get("/v1/todos", headers=bearer(newest)), lambda r: r.status_code == 200)
        # Each time the newest token first: whichever worker answers has then fetched the new set.
        refused = eventually(
            lambda: (client.get("/v2/todos", headers=bearer(newest)), client.get("/v1/todos", headers=bearer(old)))[1],
            lambda r: r.status_code == 401,
        )
        assert_unauthorized(refused, 'its "kid" names no key of its issuer')


def test_with_the_provider_down_cached_keys_work_and_unknown_kids_get_401(provider, gateway):
    token = provider.token("svc-jwt")
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        eventually(lambda: client.get("/v1/todos", headers=bearer(token)), lambda r: r.status_code == 200)
        provider.stop()
        try:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            unknown = jwt.encode(claims(provider), key, algorithm="RS256", headers={"kid": "not-a-key-of-the-provider"})
            for path in ("/v1/todos", "/v2/todos"):
                assert_unauthorized(client.get(path, headers=bearer(unknown)), 'its "kid" names no key of its issuer')
            # Each worker's refresh fails: ready stays 200, with a warning.
            ready = eventually(
                lambda: (client.get("/v1/todos", headers=bearer(unknown)), client.get("/_stackgate/ready"))[1],
                lambda r: r.status_code == 200 and "warning" in r.json()["checks"]["auth.jwt.idp"],
            )
            assert ready.json()["status"] == "ready"
            for path in ("/v1/todos", "/v2/todos", "/echo/x"):
                response = client.get(path, headers=bearer(token))
                assert response.status_code == 200, response.text
            # An opaque token cannot be checked while the provider is down: 401 in the error shape, never a 500.
            assert_unauthorized(client.get("/v1/todos", headers=bearer("opaque-token-while-down-0123456789")), "did not answer")
            assert metric(client, "stackgate_jwks_fetches_total", issuer="idp", outcome="error") >= 1
            assert metric(client, "stackgate_token_introspections_total", issuer="idp", outcome="error") >= 1
        finally:
            provider.start()


STATIC_URL_CONFIG = """
[backends.echo]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[auth.failure_rates]
address = []
address_identity = []

[auth.jwt.idp]
issuer = "{issuer}"
jwks_url = "{issuer}/jwks"
algorithms = ["RS256"]
audience = "{resource}"
refresh_min_interval = 1
fetch_timeout = 5

[[routes]]
prefix = "/echo"
backend = "echo"
"""


def test_a_gateway_started_while_the_provider_is_down_serves_once_it_is_up(tmp_path):
    late = OidcProvider(tmp_path / "late.log")  # its port is known, nothing listens yet
    config = tmp_path / "late.toml"
    config.write_text(STATIC_URL_CONFIG.format(issuer=late.issuer, resource=RESOURCE))
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path), STACKGATE_WATCH="0"), workers=2).start(timeout=60)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            ready = client.get("/_stackgate/ready")
            assert ready.status_code == 503, ready.text  # no key fetched yet: not ready (docs/auth.md)
            assert ready.json()["checks"]["auth.jwt.idp"]["ok"] is False
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            early = jwt.encode(claims(late), key, algorithm="RS256", headers={"kid": "any"})
            assert_unauthorized(client.get("/echo/x", headers=bearer(early)), "signing keys could not be fetched")
            late.start()
            token = late.token("svc-jwt")
            response = eventually(lambda: client.get("/echo/x", headers=bearer(token)), lambda r: r.status_code == 200)
            assert response.json()["remote_user"] == "svc-jwt"
            eventually(lambda: client.get("/_stackgate/ready"), lambda r: r.status_code == 200)
    except BaseException:
        print("--- provider log ---\n" + late.log()[-6000:])
        print("--- gateway log ---\n" + server.log()[-12000:])
        raise
    finally:
        server.stop()
        late.stop()
