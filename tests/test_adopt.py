"""Bring your own stacks: factory import strings, per-backend Django settings, and ``stackgate init``'s refusals.

The whole path (startproject, init, check, run) is tests/e2e/test_adopt.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.backends.base import load_app
from gateway.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
FLASK = '[backends.{name}]\nkind = "wsgi"\napp = "{app}"\n'
ROUTE = '[[routes]]\nprefix = "/{name}"\nbackend = "{name}"\nauth = "none"\n'


def stackgate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}  # no PYTHONPATH, no DJANGO_SETTINGS_MODULE
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_a_factory_import_string_is_called_once(tmp_path, monkeypatch):
    (tmp_path / "factory_mod.py").write_text("calls = []\n\ndef create_app():\n    calls.append(1)\n    return lambda environ, start_response: []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = load_app("factory_mod:create_app()")
    import factory_mod

    assert callable(app) and app is not factory_mod.create_app and factory_mod.calls == [1]
    with pytest.raises(TypeError, match='"factory_mod:calls\\(\\)": list is not callable'):
        load_app("factory_mod:calls()")


@pytest.mark.parametrize(
    "app", ["myapp:create_app(", "myapp:create_app(1)", "myapp:()", "my-app:app()"], ids=["open", "argument", "no-name", "bad-module"]
)
def test_only_an_empty_call_is_a_factory(tmp_path, app):
    path = tmp_path / "c.toml"
    path.write_text(FLASK.format(name="a", app=app) + ROUTE.format(name="a"))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert any(p.startswith(f"{path}: backends.a.app: must be an import string") for p in caught.value.problems), caught.value.problems


def test_two_django_settings_modules_are_refused(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(
        FLASK.format(name="shop", app="shop.wsgi:application") + 'django_settings = "shop.settings"\n'
        + FLASK.format(name="blog", app="blog.wsgi:application") + 'django_settings = "blog.settings"\n'
        + FLASK.format(name="blog2", app="blog.wsgi:application") + 'django_settings = "shop.settings"\n'
        + ROUTE.format(name="shop") + ROUTE.format(name="blog") + ROUTE.format(name="blog2")
    )
    result = stackgate("check", "--no-import", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f'{path}: backends.blog.django_settings: "blog.settings" beside "shop.settings" (backends.shop): one process runs '
        'one Django settings module; serve the other Django project from a gateway of its own and reach it as an "http" backend'
    ]


def test_migrate_needs_the_settings_module(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(FLASK.format(name="a", app="mysite.wsgi:application") + "migrate = true\n" + ROUTE.format(name="a"))
    result = stackgate("check", "--no-import", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f'{path}: backends.a: migrate = true needs django_settings, e.g. django_settings = "mysite.settings"'
    )


def test_migrate_without_a_django_backend_says_how(tmp_path):
    path = tmp_path / "flask.toml"
    path.write_text(FLASK.format(name="a", app="hello:app") + ROUTE.format(name="a"))
    result = stackgate("migrate", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert 'give the Django backend django_settings, e.g. django_settings = "mysite.settings"' in result.stderr


HELLO = 'from flask import Flask\n\napp = Flask(__name__)\n'


def test_init_finds_a_factory_before_an_app_and_refuses_to_overwrite(tmp_path):
    (tmp_path / "hello.py").write_text(HELLO)
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "__init__.py").write_text("from flask import Flask\n\n\ndef create_app(test_config=None):\n    return Flask(__name__)\n")
    made = stackgate("init", "--prefix", "flask=/v3", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    text = (tmp_path / "config.toml").read_text()
    assert 'app = "svc:create_app()"' in text and 'prefix = "/v3"' in text and "[versions.v3]" in text
    assert "stackgate check" in made.stdout and "stackgate run" in made.stdout

    again = stackgate("init", cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip() == "config.toml: exists; stackgate init leaves it alone (--force: replace it)"
    assert (tmp_path / "config.toml").read_text() == text
    assert stackgate("init", "--force", cwd=tmp_path).returncode == 0
    assert (tmp_path / "config.toml").read_text() != text  # fresh keys


def test_init_writes_nothing_when_an_app_does_not_import(tmp_path):
    (tmp_path / "hello.py").write_text(HELLO)
    result = stackgate("init", "--flask", "hello:app", "--django", "nosuch.wsgi:application", "--django-settings", "nosuch.settings", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        'config.toml: backends.django.app: cannot import "nosuch.wsgi:application": ModuleNotFoundError: No module named \'nosuch\'',
        "config.toml: not written",
    ]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["hello.py"]


def test_init_without_apps_says_how_to_name_them(tmp_path):
    result = stackgate("init", cwd=tmp_path)
    assert result.returncode == 1
    assert "stackgate init --django mysite.wsgi:application" in result.stderr
    assert not (tmp_path / "config.toml").exists()


def test_the_gateway_names_no_demo_stack():
    hits = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "gateway").rglob("*.py")
        if "backends.django_site" in path.read_text() or "backends.flask_site" in path.read_text()
    ]
    assert hits == []
