"""config.toml validation: every problem reported as FILE: key.path: message."""

import pytest

from gateway.config import ConfigError, parse_config

VALID = """
[backends.flask]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[[routes]]
prefix = "/v1"
backend = "flask"
auth = "none"
"""


def problems(text: str, environ=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text.encode(), "c.toml", environ or {})
    return info.value.problems


def test_valid_config_has_a_digest():
    config = parse_config(VALID.encode(), "c.toml", {})
    assert config.routes[0].backend == "flask"
    assert len(config.digest) == 12


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[gateway\n", "c.toml: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 9)"),
        ("colour = 1\n" + VALID, "c.toml: colour: unknown key; the top-level tables are gateway, backends, versions, routes"),
        ('[gateway]\nmax_body_size = "ten"\n' + VALID, 'c.toml: gateway.max_body_size: must be a size such as 1048576, "512KiB" or "10MiB"'),
        ('[gateway]\ntrusted_proxies = ["nope"]\n' + VALID, 'c.toml: gateway.trusted_proxies: "nope" is not an IP address or CIDR such as "10.0.0.0/8"'),
        (VALID + '[backends.x]\nkind = "ftp"\n', "c.toml: backends.x.kind: must be one of 'wsgi', 'asgi', 'http', 'static', not 'ftp'"),
        (VALID + '[backends.x]\nkind = "wsgi"\napp = "nocolon"\n', 'c.toml: backends.x.app: must be an import string in the form "<module>:<attribute>", e.g. "backends.flask_site.wsgi:app"'),
        (VALID + '[backends.x]\nkind = "wsgi"\napp = "a:b"\nthreads = 0\n', "c.toml: backends.x.threads: Input should be greater than or equal to 1"),
        (VALID + '[backends.x]\nkind = "http"\nurl = "ftp://x"\n', 'c.toml: backends.x.url: must be an http(s) base URL such as "http://127.0.0.1:8001"'),
        (VALID + '[backends.x]\nkind = "static"\n', 'c.toml: backends.x: needs "directory" or "packages" (or both)'),
        (VALID + '[[routes]]\nprefix = "/v2"\nbackend = "django"\n', 'c.toml: routes[1].backend: unknown backend "django"; known: "flask"'),
        (VALID + '[[routes]]\nprefix = "v2"\nbackend = "flask"\n', 'c.toml: routes[1].prefix: must be a path such as "/v1" (a leading "/", no trailing "/", no "//", "." or "..")'),
        (VALID + '[[routes]]\nprefix = "/v2"\nbackend = "flask"\nversion = "v2"\n', 'c.toml: routes[1].version: unknown version "v2"; known: (none)'),
        (VALID + '[[routes]]\nprefix = "/v2"\nbackend = "flask"\nmethods = ["get"]\n', 'c.toml: routes[1].methods: "get" is not an upper-case HTTP method such as "GET"'),
        (VALID + '[[routes]]\nprefix = "/v2"\nbackend = "flask"\nhosts = ["Bad Host"]\n', 'c.toml: routes[1].hosts: "Bad Host" is not a lower-case host name such as "api.example.com" or "*.example.com"'),
        (VALID + '[[routes]]\nprefix = "/v1"\nbackend = "flask"\n', "c.toml: routes[1].prefix: same prefix, methods and hosts as routes[0]; it could never match"),
        (VALID + '[[routes]]\nprefix = "/v2"\nbackend = "flask"\ncolour = "red"\n', "c.toml: routes[1].colour: unknown key"),
        (VALID + '[[routes]]\nbackend = "flask"\n', "c.toml: routes[1].prefix: is required"),
        (VALID + '[versions.v1]\nsuccessor = "v9"\n', 'c.toml: versions.v1.successor: unknown version "v9"; known: "v1"'),
        (VALID + '[versions.v1]\nsunset = "soon"\n', "c.toml: versions.v1.sunset"),
    ],
)
def test_problem_reported_with_key_path(text, expected):
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_all_problems_at_once():
    text = '[gateway]\nmax_body_size = "x"\n[backends.a]\nkind = "ftp"\n[[routes]]\nprefix = "/a"\nbackend = "zzz"\n'
    found = problems(text)
    assert len(found) == 3, found


def test_environment_interpolation():
    text = VALID.replace("tests.fixtures.wsgi_apps:recorder", "${APP}")
    assert parse_config(text.encode(), "c.toml", {"APP": "a:b"}).backends["flask"].app == "a:b"
    assert problems(text, {}) == ["c.toml: backends.flask.app: environment variable APP is not set (referenced as ${APP})"]


def test_escaped_dollar_brace_is_literal():
    text = VALID + '[versions.v1]\nlink = "https://x/$${HOME}"\n'
    assert parse_config(text.encode(), "c.toml", {}).versions["v1"].link == "https://x/${HOME}"
