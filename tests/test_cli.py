"""The stackgate command: check, routes."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stackgate(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=cwd)


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
    assert f'{bad}: backends.a.app: must be an import string in the form "<module>:<attribute>", e.g. "backends.flask_site.wsgi:app"' in lines
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
