"""Install what the benchmark needs when it is missing: Debian's wrk, nginx and redis-server, and the ``bench`` extra."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata

from bench.model import ROOT

APT = {"wrk": "wrk", "nginx": "nginx", "redis-server": "redis-server"}
"""Command -> Debian package."""
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def have(command: str) -> bool:
    return shutil.which(command) is not None or any(os.access(f"{d}/{command}", os.X_OK) for d in _SBIN)


def bench_requirements() -> list[str]:
    """The ``bench`` extra of pyproject.toml: the one place its pins are written."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]["bench"]


def _satisfied(requirement: str) -> bool:
    name, _, version = requirement.partition("==")
    try:
        return metadata.version(name) == version
    except metadata.PackageNotFoundError:
        return False


def ensure(log=print) -> None:
    missing = sorted({APT[c] for c in APT if not have(c)})
    if missing:
        if os.geteuid() != 0:
            raise SystemExit(f"missing {', '.join(missing)}: run `apt-get update && apt-get install -y {' '.join(missing)}` as root")
        log(f"==> apt-get install {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}  # RUNLEVEL: do not start the services
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env)
    wanted = [r for r in bench_requirements() if not _satisfied(r)]
    if wanted:
        log(f"==> pip install {' '.join(wanted)}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted], check=True)
