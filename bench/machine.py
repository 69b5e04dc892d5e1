"""What the figures were measured on: cores, CPU, memory, kernel, versions."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from bench.model import ROOT

PACKAGES = (
    "gunicorn", "uvicorn", "uvloop", "httptools", "starlette", "a2wsgi", "Django",
    "djangorestframework", "Flask", "Flask-RESTful", "Werkzeug", "SQLAlchemy", "limits", "redis",
)
SYSCTLS = ("net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_port_range", "net.core.somaxconn")


def _first(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _sysctl(name: str) -> str:
    try:
        return " ".join(Path("/proc/sys/" + name.replace(".", "/")).read_text().split())
    except OSError:
        return "unavailable"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict:
    from bench.configs import nginx_binary

    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": _mem_total(),
        "kernel": platform.release(),
        "os": _first(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "tools": {
            "wrk": _first(["wrk", "-v"]),
            "nginx": _first([nginx_binary(), "-v"]),
            "redis-server": _first(["redis-server", "--version"]),
        },
        "sysctl": {name: _sysctl(name) for name in SYSCTLS},
        "git": {
            "commit": _first(["git", "-C", str(ROOT), "rev-parse", "HEAD"]),
            "dirty": _first(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]) not in ("", "unavailable"),
        },
        "loadavg_at_start": os.getloadavg(),
    }


def one_line(machine: dict) -> str:
    return (
        f"{machine['nproc']} cores, {machine['cpu_model']}, {machine['memory_bytes'] / 2**30:.0f} GiB, "
        f"{machine['os']}, kernel {machine['kernel']}, Python {machine['python']}"
    )
