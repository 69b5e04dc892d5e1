"""The auth tables of config.toml: every problem as FILE: key.path: message, exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import bcrypt
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.config import ConfigError, load_config, parse_config
from gateway.policies.auth import basic
from gateway.policies.auth.apikey import hash_key

ROOT = Path(__file__).resolve().parents[2]
BACKEND = """
[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"
"""
KEY_HASH = hash_key("sgk_example")
KEY_HASH_UPPER = "sha256:" + KEY_HASH.removeprefix("sha256:").upper()
BCRYPT = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
SECRET = "s" * 32


def problems(text: str, environ: dict | None = None, source: str = "c.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config((BACKEND + text).encode(), source, environ or {})
    return info.value.problems


def route(extra: str = "", prefix: str = "/v1") -> str:
    return f'\n[[routes]]\nprefix = "{prefix}"\nbackend = "rec"\n{extra}\n'


def consumer(name: str = "alice", body: str = 'roles = ["user"]') -> str:
    return f"\n[consumers.{name}]\n{body}\n"


def issuer(body: str, name: str = "x") -> str:
    return f"\n[auth.jwt.{name}]\n{body}\n"


HS = f'issuer = "i"\nalgorithms = ["HS256"]\nsecret = "{SECRET}"'

CASES = [
    (
        "plaintext-password",
        consumer(body='password = "hunter2"'),
        'c.toml: consumers.alice.password: must be an argon2 hash ("$argon2id$...") or a bcrypt hash ("$2b$..."), '
        "never a plain password; make one with `stackgate password alice`",
    ),
    (
        "broken-argon2-hash",
        consumer(body='password = "$argon2id$v=19$nonsense"'),
        'c.toml: consumers.alice.password: must be an argon2 hash ("$argon2id$...") or a bcrypt hash ("$2b$..."), '
        "never a plain password; make one with `stackgate password alice`",
    ),
    (
        "plaintext-api-key",
        consumer(body=f'api_keys = ["{KEY_HASH}", "sgk_plaintext"]'),
        'c.toml: consumers.alice.api_keys[1]: must be "sha256:<64 hex digits>", the hash of an API key, never the key itself; '
        "make a key and its line with `stackgate keys new alice`",
    ),
    (
        "duplicate-key-hash",
        consumer(body=f'api_keys = ["{KEY_HASH}"]') + consumer("bob", f'api_keys = ["{KEY_HASH_UPPER}"]'),
        "c.toml: consumers.bob.api_keys[0]: the same key hash as consumers.alice.api_keys[0]; a key must belong to one consumer only",
    ),
    (
        "bad-role-name",
        consumer(body='roles = ["a b"]'),
        'c.toml: consumers.alice.roles[0]: "a b" is not a role name: 1-64 letters, digits, "_", ".", ":" or "-", starting with a letter or digit',
    ),
    (
        "bad-consumer-name",
        '\n[consumers."1x"]\nroles = []\n',
        "c.toml: consumers.1x: a name must start with a letter and use only letters, digits, '_' and '-'",
    ),
    ("unknown-consumer-key", consumer(body="colour = 1"), "c.toml: consumers.alice.colour: unknown key (line 7)"),
    ("bad-default", '\n[auth]\ndefault = "open"\n', 'c.toml: auth.default: must be "required", "optional" or "none"'),
    ("unknown-auth-key", '\n[auth]\ncolour = 1\n', "c.toml: auth.colour: unknown key (line 7)"),
    ("bad-realm", '\n[auth]\nrealm = "a\\"b"\n', "c.toml: auth.realm: must be 1-64 printable ASCII characters without quotes or backslashes"),
    ("bad-route-auth", route('auth = "public"'), 'c.toml: routes[0].auth: must be "required", "optional" or "none"'),
    (
        "unknown-route-role",
        consumer() + route('roles = ["superuser"]'),
        'c.toml: routes[0].roles: unknown role "superuser": no consumer has it; list it in [auth] roles if only tokens carry it',
    ),
    (
        "roles-on-optional-route",
        consumer() + route('auth = "optional"\nroles = ["user"]'),
        'c.toml: routes[0].roles: roles need auth = "required"; with auth "optional" a request without credentials gets through',
    ),
    (
        "roles-under-a-none-default",
        '\n[auth]\ndefault = "none"\n' + consumer() + route('roles = ["user"]'),
        'c.toml: routes[0].roles: roles need auth = "required"; with auth "none" a request without credentials gets through',
    ),
    ("bad-scheme", route('auth_schemes = ["ldap"]'), 'c.toml: routes[0].auth_schemes[0]: must be "api-key", "jwt" or "basic"'),
    (
        "scheme-not-set-up",
        consumer(body=f'api_keys = ["{KEY_HASH}"]') + route('auth_schemes = ["jwt", "basic"]'),
        'c.toml: routes[0].auth_schemes: "jwt" is not set up: add an [auth.jwt.NAME] issuer',
    ),
    (
        "no-schemes",
        route("auth_schemes = []"),
        "c.toml: routes[0].auth_schemes: must list at least one scheme, or be left out for every configured scheme",
    ),
    (
        "alg-none",
        issuer('issuer = "i"\nalgorithms = ["none"]\nsecret = "x"'),
        'c.toml: auth.jwt.x.algorithms: the "none" algorithm is never allowed: tokens must be signed',
    ),
    (
        "alg-unknown",
        issuer('issuer = "i"\nalgorithms = ["HS1"]\nsecret = "x"'),
        'c.toml: auth.jwt.x.algorithms: "HS1" is not a supported algorithm; use HS256, HS384, HS512 (with secret) '
        "or RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA (with jwks_file)",
    ),
    (
        "secret-with-rs256",
        issuer(f'issuer = "i"\nalgorithms = ["HS256", "RS256"]\nsecret = "{SECRET}"'),
        'c.toml: auth.jwt.x: an issuer with "secret" may list only HS256, HS384 and HS512 in algorithms, not "RS256"',
    ),
    (
        "neither-secret-nor-jwks",
        issuer('issuer = "i"\nalgorithms = ["HS256"]'),
        'c.toml: auth.jwt.x: needs exactly one key source: "secret" (for HS* algorithms), or "jwks_file", "jwks_url" or '
        '"discovery = true" (for public-key algorithms)',
    ),
    (
        "secret-and-jwks-url",
        issuer(f'issuer = "i"\nalgorithms = ["HS256"]\nsecret = "{SECRET}"\njwks_url = "https://idp.example/jwks"'),
        'c.toml: auth.jwt.x: needs exactly one key source: "secret" (for HS* algorithms), or "jwks_file", "jwks_url" or '
        '"discovery = true" (for public-key algorithms)',
    ),
    (
        "jwks-url-and-discovery",
        issuer('issuer = "https://idp.example"\njwks_url = "https://idp.example/jwks"\ndiscovery = true'),
        'c.toml: auth.jwt.x: needs exactly one key source: "secret" (for HS* algorithms), or "jwks_file", "jwks_url" or '
        '"discovery = true" (for public-key algorithms)',
    ),
    (
        "jwks-url-plain-http",
        issuer('issuer = "i"\njwks_url = "http://idp.example/jwks"'),
        "c.toml: auth.jwt.x.jwks_url: must be an https:// URL (http:// only for a loopback host, or with allow_insecure_http = true)",
    ),
    (
        "jwks-url-not-a-url",
        issuer('issuer = "i"\njwks_url = "idp.example/jwks"'),
        "c.toml: auth.jwt.x.jwks_url: must be an absolute http(s) URL with a host, and no user name, password or fragment",
    ),
    (
        "jwks-url-with-password",
        issuer('issuer = "i"\njwks_url = "https://u:p@idp.example/jwks"'),
        "c.toml: auth.jwt.x.jwks_url: must be an absolute http(s) URL with a host, and no user name, password or fragment",
    ),
    (
        "discovery-issuer-plain-http",
        issuer('issuer = "http://idp.example/realms/x"\ndiscovery = true'),
        'c.toml: auth.jwt.x: with discovery = true, "issuer" must be an https:// URL (http:// only for a loopback host, '
        "or with allow_insecure_http = true)",
    ),
    (
        "jwks-url-hmac-algorithm",
        issuer('issuer = "i"\nalgorithms = ["RS256", "HS256"]\njwks_url = "https://idp.example/jwks"'),
        'c.toml: auth.jwt.x: an issuer with "jwks_url" may list only public-key algorithms (RS*, PS*, ES*, EdDSA), not "HS256"',
    ),
    (
        "jwks-file-without-algorithms",
        issuer('issuer = "i"\njwks_file = "k.json"'),
        'c.toml: auth.jwt.x: "algorithms" is required with "secret" and "jwks_file" (with jwks_url or discovery it may be left out)',
    ),
    (
        "introspection-without-endpoint",
        issuer('issuer = "i"\njwks_url = "https://idp.example/jwks"\n[auth.jwt.x.introspection]\nclient_id = "gw"\nclient_secret = "s"'),
        'c.toml: auth.jwt.x: [introspection] needs an "endpoint", or discovery = true to find it',
    ),
    (
        "introspection-plain-http",
        issuer(
            'issuer = "https://idp.example"\ndiscovery = true\n[auth.jwt.x.introspection]\nclient_id = "gw"\nclient_secret = "s"\n'
            'endpoint = "http://idp.example/introspect"'
        ),
        "c.toml: auth.jwt.x: introspection.endpoint must be an https:// URL (http:// only for a loopback host, or with allow_insecure_http = true)",
    ),
    (
        "introspection-client-secret-required",
        issuer('issuer = "https://idp.example"\ndiscovery = true\n[auth.jwt.x.introspection]\nclient_id = "gw"'),
        "c.toml: auth.jwt.x.introspection.client_secret: is required",
    ),
    (
        "two-introspecting-issuers",
        issuer('issuer = "https://a.example"\ndiscovery = true\n[auth.jwt.a.introspection]\nclient_id = "gw"\nclient_secret = "s"', "a")
        + issuer('issuer = "https://b.example"\ndiscovery = true\n[auth.jwt.b.introspection]\nclient_id = "gw"\nclient_secret = "s"', "b"),
        "c.toml: auth.jwt.b.introspection: only one issuer may introspect opaque tokens (auth.jwt.a does): an opaque token names no issuer",
    ),
    (
        "short-secret",
        issuer('issuer = "i"\nalgorithms = ["HS256"]\nsecret = "short"'),
        'c.toml: auth.jwt.x.secret: must be at least 32 bytes for HS256 (RFC 7518 §3.2); take it from the environment, '
        'e.g. secret = "${STACKGATE_JWT_SECRET}"',
    ),
    (
        "short-secret-for-hs512",
        issuer(f'issuer = "i"\nalgorithms = ["HS256", "HS512"]\nsecret = "{"s" * 40}"'),
        'c.toml: auth.jwt.x.secret: must be at least 64 bytes for HS512 (RFC 7518 §3.2); take it from the environment, '
        'e.g. secret = "${STACKGATE_JWT_SECRET}"',
    ),
    ("leeway-bound", issuer(HS + "\nleeway = 301"), "c.toml: auth.jwt.x.leeway: Input should be less than or equal to 300"),
    ("issuer-required", issuer(f'algorithms = ["HS256"]\nsecret = "{SECRET}"'), "c.toml: auth.jwt.x.issuer: is required"),
    (
        "jwks-file-missing",
        issuer('issuer = "i"\nalgorithms = ["RS256"]\njwks_file = "nope.json"'),
        'c.toml: auth.jwt.x.jwks_file: cannot read "nope.json": No such file or directory',
    ),
    (
        "duplicate-issuer",
        issuer(HS, "a") + issuer(HS, "b"),
        'c.toml: auth.jwt.b.issuer: the same issuer as auth.jwt.a; tokens find their issuer by "iss"',
    ),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_problem(text, expected):
    found = problems(text)
    assert expected in found, found


def test_each_table_is_checked_on_its_own():
    text = consumer(body='password = "plain"') + '\n[auth]\ndefault = "open"\n' + route('auth = "public"') + issuer(HS + "\nleeway = -1")
    assert problems(text) == [
        'c.toml: routes[0].auth: must be "required", "optional" or "none"',
        'c.toml: auth.default: must be "required", "optional" or "none"',
        "c.toml: auth.jwt.x.leeway: Input should be greater than or equal to 0",
        'c.toml: consumers.alice.password: must be an argon2 hash ("$argon2id$...") or a bcrypt hash ("$2b$..."), '
        "never a plain password; make one with `stackgate password alice`",
    ]


def test_routes_carry_their_effective_auth():
    text = BACKEND + '\n[auth]\ndefault = "optional"\n' + route() + route('auth = "none"', "/v2")
    config = parse_config(text.encode(), "c.toml", {})
    assert [r.auth for r in config.routes] == ["optional", "none"]
    assert parse_config((BACKEND + route()).encode(), "c.toml", {}).routes[0].auth == "required"


def test_jwt_only_roles_are_known_when_listed():
    text = BACKEND + '\n[auth]\nroles = ["auditor"]\n' + issuer(HS) + route('roles = ["auditor"]')
    assert parse_config(text.encode(), "c.toml", {}).routes[0].roles == ["auditor"]


def test_key_hashes_are_normalised():
    text = BACKEND + consumer(body=f'api_keys = ["{KEY_HASH_UPPER}"]')
    assert parse_config(text.encode(), "c.toml", {}).consumers["alice"].api_keys == [KEY_HASH]


def test_secret_is_not_shown():
    config = parse_config((BACKEND + issuer(HS)).encode(), "c.toml", {})
    assert SECRET not in repr(config) and SECRET not in str(config.model_dump())


# --- ${NAME} and ${NAME:-default} ----------------------------------------------------

SECRET_REF = issuer('issuer = "i"\nalgorithms = ["HS256"]\nsecret = "${JWT_SECRET:-' + "d" * 32 + '}"')


@pytest.mark.parametrize(
    "environ, expected",
    [({}, "d" * 32), ({"JWT_SECRET": ""}, "d" * 32), ({"JWT_SECRET": "e" * 40}, "e" * 40)],
    ids=["unset", "empty", "set"],
)
def test_default_when_unset_or_empty(environ, expected):
    config = parse_config((BACKEND + SECRET_REF).encode(), "c.toml", environ)
    assert config.auth.jwt["x"].secret.get_secret_value() == expected


def test_unset_without_default_is_its_one_problem():
    text = issuer('issuer = "i"\nalgorithms = ["HS256"]\nsecret = "${JWT_SECRET}"')
    assert problems(text) == ["c.toml: auth.jwt.x.secret: environment variable JWT_SECRET is not set (referenced as ${JWT_SECRET})"]


def test_empty_default_and_text_around():
    text = BACKEND + '\n[auth]\nrealm = "api${REALM_SUFFIX:-}-${REGION:-eu}"\n'
    assert parse_config(text.encode(), "c.toml", {}).auth.realm == "api-eu"
    assert parse_config(text.encode(), "c.toml", {"REALM_SUFFIX": "x", "REGION": "us"}).auth.realm == "apix-us"


# --- JWKS files -------------------------------------------------------------------------


def _jwk(public_key, **extra) -> dict:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(public_key, rsa.RSAPublicKey) else jwt.algorithms.ECAlgorithm
    return {**json.loads(algorithm.to_jwk(public_key)), **extra}


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_problem(tmp_path, keys, algorithms='["RS256"]') -> list[str]:
    (tmp_path / "k.json").write_text(json.dumps(keys) if not isinstance(keys, str) else keys)
    text = issuer(f'issuer = "i"\nalgorithms = {algorithms}\njwks_file = "k.json"')
    return problems(text, source=str(tmp_path / "c.toml"))


def test_jwks_file_is_relative_to_the_config_file(tmp_path, rsa_key):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k.json").write_text(json.dumps({"keys": [_jwk(rsa_key.public_key(), kid="a")]}))
    path = tmp_path / "c.toml"
    path.write_text(BACKEND + issuer('issuer = "i"\nalgorithms = ["RS256", "ES256"]\njwks_file = "keys/k.json"') + route())  # a file to serve has a route
    jwks = load_config(path, {}).auth.jwt["x"].jwks_file
    assert jwks == "keys/k.json" and list(jwks.keys) == ["a"] and list(jwks.keys["a"]) == ["RS256"]


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda k: "not json", '"k.json" is not JSON'),
        (lambda k: {"kty": "RSA"}, '"k.json" is not a JSON Web Key Set: expected {"keys": [...]}'),
        (lambda k: {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, '"k.json" keys[0] is a symmetric key: an HMAC secret belongs in secret, never in a JWKS'),
        (
            lambda k: {"keys": [json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k))]},
            '"k.json" keys[0] holds private key material ("d"): publish only public keys',
        ),
        (
            lambda k: {"keys": [_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())]},
            '"k.json" holds no public key for the algorithms RS256',
        ),
        (
            lambda k: {"keys": [_jwk(k.public_key()), _jwk(k.public_key(), kid="b")]},
            '"k.json": every key needs a "kid" when the set holds more than one',
        ),
        (lambda k: {"keys": [_jwk(k.public_key(), kid="a"), _jwk(k.public_key(), kid="a")]}, '"k.json" keys[1]: kid "a" appears twice'),
        (
            lambda k: {"keys": [_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(), kid="a")]},
            '"k.json" keys[0]: The RSA key is 1024 bits long, which is below the minimum recommended size of 2048 bits. See NIST SP 800-131A.',
        ),
    ],
    ids=["not-json", "not-a-set", "symmetric", "private", "no-fitting-key", "kid-needed", "duplicate-kid", "weak-rsa"],
)
def test_jwks_problems(tmp_path, rsa_key, make, expected):
    found = jwks_problem(tmp_path, make(rsa_key))
    assert found == [f"{tmp_path / 'c.toml'}: auth.jwt.x.jwks_file: {expected}"]


def test_jwks_with_hmac_algorithm_is_refused(tmp_path, rsa_key):
    found = jwks_problem(tmp_path, {"keys": [_jwk(rsa_key.public_key())]}, '["HS256"]')
    assert found == [
        f'{tmp_path / "c.toml"}: auth.jwt.x: an issuer with "jwks_file" may list only public-key algorithms (RS*, PS*, ES*, EdDSA), not "HS256"'
    ]


# --- the default config and its published demo credentials ------------------------------


def test_demo_credentials_match_the_default_config():
    config = load_config(ROOT / "config.toml", {})
    rows = re.findall(
        r"^\| `(\w+)` \| ([\w, ]+) \| `(sgk_[^`]+)` \| `([^`]+)` \|$",
        (ROOT / "docs" / "demo-credentials.md").read_text(),
        re.MULTILINE,
    )
    assert [row[0] for row in rows] == ["alice", "bob", "tester", "admin"] == list(config.consumers)
    for name, roles, key, password in rows:
        consumer = config.consumers[name]
        assert sorted(consumer.roles) == sorted(r.strip() for r in roles.split(","))
        assert consumer.api_keys == [hash_key(key)]
        assert basic.verify(consumer.password, password.encode())
    assert {r.prefix: (r.auth, r.roles) for r in config.routes} == {
        "/v1": ("required", ["user"]),
        "/v2": ("required", ["user"]),
        "/admin": ("none", []),
        "/static": ("none", []),
    }
    demo = config.auth.jwt["demo"]
    assert demo.secret.get_secret_value() == "demo-only-secret-change-me-0123456789"
    assert load_config(ROOT / "config.toml", {"STACKGATE_JWT_SECRET": "x" * 40}).auth.jwt["demo"].secret.get_secret_value() == "x" * 40


@pytest.mark.parametrize(
    "body",
    [
        'issuer = "i"\njwks_url = "http://127.0.0.1:8080/jwks"',
        'issuer = "i"\njwks_url = "http://localhost/jwks"',
        'issuer = "i"\njwks_url = "http://[::1]:9/jwks"',
        'issuer = "i"\nallow_insecure_http = true\njwks_url = "http://idp.internal/jwks"',
        'issuer = "https://idp.example/realms/x"\ndiscovery = true\nalgorithms = ["RS256", "ES256"]',
    ],
    ids=["ipv4-loopback", "localhost", "ipv6-loopback", "allowed-explicitly", "discovery"],
)
def test_remote_key_sources_accepted(body):
    config = parse_config((BACKEND + issuer(body) + route()).encode(), "c.toml", {})
    assert config.auth.jwt["x"].issuer
