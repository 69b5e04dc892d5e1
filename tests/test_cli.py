"""The stackgate command: check, routes."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def stackgate(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_check_default_config():
    result = stackgate("check", "config.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config.toml: ok")


def test_check_reports_each_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[backends.a]\nkind = "wsgi"\napp = "x"\n[[routes]]\nprefix = "/v1"\nbackend = "b"\n')
    result = stackgate("check", str(bad))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert f'{bad}: backends.a.app: must be an import string in the form "<module>:<attribute>" or "<module>:<factory>()", e.g. "mysite.wsgi:application" or "myapp:create_app()"' in lines
    assert f'{bad}: routes[0].backend: unknown backend "b"; known: "a"' in lines


def test_check_missing_file(tmp_path):
    result = stackgate("check", str(tmp_path / "nope.toml"))
    assert result.returncode != 0
    assert "cannot read the file" in result.stderr


def test_routes_table():
    result = stackgate("routes", "config.toml")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["PREFIX", "METHODS", "HOSTS", "BACKEND"]
    assert any(line.split()[:4] == ["/v1", "*", "*", "flask"] for line in lines)
    assert any(line.split()[:4] == ["/v2", "*", "*", "django"] for line in lines)


def split_example_config() -> str:
    """config.toml with its commented split example in place of the live /v1 route."""
    text = (ROOT / "config.toml").read_text()
    live = re.search(r'\[\[routes\]\]\nname = "todos-v1"\n.*?\n\n', text, re.S)
    text = text[: live.start()] + text[live.end() :]
    start = text.index("# Moving /v1 from Flask to Django")
    end = text.index("\n\n", start)
    example = re.sub(r"^# (\[\[routes\]\]|\w+ = .*)$", r"\1", text[start:end], flags=re.M)
    assert "split = { flask = 90, django = 10 }" in example.splitlines()
    return text[:start] + example + text[end:]


def test_routes_shows_split_weights_and_each_kind(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(split_example_config() + '\n[[routes]]\nprefix = "/mixed"\nsplit = { static = 0, django = 100 }\nauth = "none"\n')
    result = stackgate("routes", str(config))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["/v1"][:5] == ["/v1", "*", "*", "flask=90,django=10", "wsgi,wsgi"]
    assert rows["/mixed"][3:5] == ["static=0,django=100", "static,wsgi"]
    assert rows["/v2"][3:5] == ["django", "wsgi"]


BROKEN_APP = 'import json\nraise RuntimeError("database is down\\nsecond line of the message")\n'


def config_with_app(tmp_path, app: str) -> Path:
    (tmp_path / "brokenapp.py").write_text(BROKEN_APP)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[backends.good]\nkind = "wsgi"\napp = "tests.fixtures.wsgi_apps:recorder"\n'
        f'[backends.bad]\nkind = "wsgi"\napp = "{app}"\n'
        '[[routes]]\nprefix = "/v1"\nbackend = "good"\nauth = "none"\n'
        '[[routes]]\nprefix = "/v2"\nbackend = "bad"\nauth = "none"\n'
    )
    return config


@pytest.mark.parametrize(
    "app, message",
    [
        ("brokenapp:app", 'cannot import "brokenapp:app": RuntimeError: database is down'),
        ("tests.fixtures.nope:app", 'cannot import "tests.fixtures.nope:app": Could not import module "tests.fixtures.nope".'),
        ("tests.fixtures.wsgi_apps:nothere", 'cannot import "tests.fixtures.wsgi_apps:nothere": Attribute "nothere" not found in module "tests.fixtures.wsgi_apps".'),
        ("tests.fixtures.wsgi_apps:RECORDED", '"tests.fixtures.wsgi_apps:RECORDED" is list, not an application (a callable)'),
    ],
    ids=["raises", "no-module", "no-attribute", "not-callable"],
)
def test_check_imports_each_app_and_reports_a_failure_in_one_line(tmp_path, app, message):
    config = config_with_app(tmp_path, app)
    result = stackgate("check", str(config), env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert result.returncode == 1, result.stdout
    assert result.stderr.splitlines() == [f"{config}: backends.bad.app: {message}"]
    assert result.stdout == ""


def test_check_no_import_validates_the_file_only(tmp_path):
    config = config_with_app(tmp_path, "brokenapp:app")
    result = stackgate("check", "--no-import", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config}: ok (2 routes, 2 backends")


def test_check_imports_the_django_stack_with_its_settings():
    """The Django app is imported as `run` imports it: its settings are read (and refused here)."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = stackgate("check", "config.toml", env={**env, "DJANGO_CONN_MAX_AGE": "soon"})
    assert result.returncode == 1
    assert (
        'config.toml: backends.django.app: cannot import "backends.django_site.wsgi:application": '
        'ImproperlyConfigured: DJANGO_CONN_MAX_AGE="soon" must be a whole number of seconds, such as "600" '
        "(0: a new connection per request)"
    ) in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert stackgate("check", "config.toml", env=env).returncode == 0


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "the file has no settings; a config needs at least one [[routes]] table and the backends it names"),
        ('[backends.a]\nkind = "wsgi"\napp = "tests.fixtures.wsgi_apps:recorder"\n', "routes: no [[routes]] table: the gateway would answer every request with 404; add one"),
    ],
    ids=["empty", "no-routes"],
)
def test_check_refuses_a_file_with_nothing_to_serve(tmp_path, text, problem):
    config = tmp_path / "c.toml"
    config.write_text(text)
    result = stackgate("check", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"{config}: {problem}"]


def test_check_unknown_key_in_the_split_example(tmp_path):
    config = tmp_path / "config.toml"
    text = split_example_config().replace("mirror = true", "mirorr = true")
    config.write_text(text)
    line = text.splitlines().index("mirorr = true") + 1
    result = stackgate("check", "--no-import", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f'{config}: routes[1].mirorr: unknown key; did you mean "mirror"? (route "todos-v1", line {line})']
