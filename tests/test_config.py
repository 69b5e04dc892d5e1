"""config.toml validation: every problem reported as FILE: key.path: message.

An unknown key is also given its line, its route and the closest known key:
FILE: key.path: unknown key; did you mean "KEY"? (route "NAME", line N)
"""

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config
from gateway.config_lines import KeyLines

ROOT = Path(__file__).resolve().parent.parent

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
        (VALID + '[backends.x]\nkind = "wsgi"\napp = "nocolon"\n', 'c.toml: backends.x.app: must be an import string in the form "<module>:<attribute>" or "<module>:<factory>()", e.g. "mysite.wsgi:application" or "myapp:create_app()"'),
        (VALID + '[backends.x]\nkind = "wsgi"\napp = "a:b"\nthreads = 0\n', "c.toml: backends.x.threads: Input should be greater than or equal to 1"),
        (VALID + '[backends.x]\nkind = "http"\nurl = "ftp://x"\n', 'c.toml: backends.x.url: must be an http(s) base URL such as "http://127.0.0.1:8001"'),
        (VALID + '[backends.x]\nkind = "static"\n', 'c.toml: backends.x: needs "directory" or "packages" (or both)'),
        (VALID + '[[routes]]\nprefix = "/v2"\nbackend = "django"\n', 'c.toml: routes[1].backend: unknown backend "django"; known: "flask"'),
        (VALID + '[[routes]]\nprefix = "v2"\nbackend = "flask"\n', 'c.toml: routes[1].prefix: must be a path such as "/v1" (a leading "/", no trailing "/", no "//", "." or "..")'),
        (VALID + '[[routes]]\nprefix = "/v2"\nbackend = "flask"\nversion = "v2"\n', 'c.toml: routes[1].version: unknown version "v2"; known: (none)'),
        (VALID + '[[routes]]\nprefix = "/v2"\nbackend = "flask"\nmethods = ["get"]\n', 'c.toml: routes[1].methods: "get" is not an upper-case HTTP method such as "GET"'),
        (VALID + '[[routes]]\nprefix = "/v2"\nbackend = "flask"\nhosts = ["Bad Host"]\n', 'c.toml: routes[1].hosts: "Bad Host" is not a lower-case host name such as "api.example.com" or "*.example.com"'),
        (VALID + '[[routes]]\nprefix = "/v1"\nbackend = "flask"\n', "c.toml: routes[1].prefix: same prefix, methods and hosts as routes[0]; it could never match"),
        (VALID + '[[routes]]\nprefix = "/v2"\nbackend = "flask"\nflavour = "red"\n', 'c.toml: routes[1].flavour: unknown key (route "/v2", line 13)'),
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


ROUTES = """
[backends.django]
kind = "wsgi"
app = "a:b"

[[routes]]
name = "todos-v1"
prefix = "/v1"
backend = "django"
auth = "none"

[[routes]]
prefix = "/v2"
split = { django = 1, flask = 0 }   # a comment with key = "value" and [brackets]
mirorr = true
auth = "none"
"""


@pytest.mark.parametrize(
    "text, expected",
    [
        (ROUTES, 'c.toml: routes[1].mirorr: unknown key; did you mean "mirror"? (route "/v2", line 15)'),
        (ROUTES.replace('auth = "none"\n', 'auth = "none"\nthrotle = "x"\n', 1), 'c.toml: routes[0].throtle: unknown key; did you mean "throttle"? (route "todos-v1", line 11)'),
        ("rotues = []\n" + ROUTES, 'c.toml: rotues: unknown key; did you mean "routes"? (line 1)'),
        (ROUTES + '[backends.flask]\nkind = "wsgi"\napp = "a:c"\nthread = 4\n', 'c.toml: backends.flask.thread: unknown key; did you mean "threads"? (line 20)'),
        (ROUTES + '[throttle.policies.std]\nrate = ["1/minute"]\n', 'c.toml: throttle.policies.std.rate: unknown key; did you mean "rates"? (line 18)'),
        (ROUTES + '[split]\noverride_role = []\n', 'c.toml: split.override_role: unknown key; did you mean "override_roles"? (line 18)'),
        (ROUTES + '[gateway]\nmax_body = 1\n', 'c.toml: gateway.max_body: unknown key; did you mean "max_body_size"? (line 18)'),
    ],
    ids=["route-without-name", "route-with-name", "top-level", "backend", "throttle-policy", "split", "gateway"],
)
def test_unknown_key_gets_its_line_its_route_and_the_closest_key(text, expected):
    assert expected in problems(text)


def test_unknown_key_in_the_default_config_points_at_its_line():
    text = (ROOT / "config.toml").read_text()
    text = text.replace('name = "todos-v2"\n', 'name = "todos-v2"\nMirror = true\n')
    line = text.splitlines().index("Mirror = true") + 1
    assert problems(text) == [f'c.toml: routes[1].Mirror: unknown key; did you mean "mirror"? (route "todos-v2", line {line})']


def test_key_lines_skip_what_values_hold():
    text = """a = \"\"\"
b = 1
[c]
\"\"\"
d = [
  "]", # e = 2
  'x = [',
]
[[r]]
x = 1
[r.sub]
"quoted.key" = 'y'
[[r]]
x.y = { z = 1 }
[[r.arr]]
m = 1
"""
    lines = KeyLines(text)
    assert lines.lines == {
        ("a",): 1,
        ("d",): 5,
        ("r", 0): 9,
        ("r", 0, "x"): 10,
        ("r", 0, "sub"): 11,
        ("r", 0, "sub", "quoted.key"): 12,
        ("r", 1): 13,
        ("r", 1, "x"): 14,
        ("r", 1, "x", "y"): 14,
        ("r", 1, "arr", 0): 15,
        ("r", 1, "arr", 0, "m"): 16,
    }
    assert lines.line(("r", 1, "x", "y", "z")) == 14  # inside an inline table: the table's line
    assert lines.line(("nope",)) is None


def load_problems(tmp_path, text: str) -> list[str]:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    return [p.replace(str(path), "c.toml") for p in info.value.problems]


@pytest.mark.parametrize("text", ["", "\n\n", "# only comments\n# here\n"], ids=["empty", "blank", "comments"])
def test_a_file_without_settings_is_refused(tmp_path, text):
    assert load_problems(tmp_path, text) == [
        "c.toml: the file has no settings; a config needs at least one [[routes]] table and the backends it names"
    ]


def test_a_file_without_routes_is_refused_with_its_other_problems(tmp_path):
    text = VALID.split("[[routes]]")[0] + '[gateway]\nmax_body_size = "x"\n'
    assert load_problems(tmp_path, text) == [
        'c.toml: gateway.max_body_size: must be a size such as 1048576, "512KiB" or "10MiB"',
        "c.toml: routes: no [[routes]] table: the gateway would answer every request with 404; add one",
    ]
