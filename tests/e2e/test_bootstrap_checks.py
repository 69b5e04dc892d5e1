"""Bootstrap checks on real processes: the shipped config refused on 0.0.0.0, allowed with the
override, warned about on loopback; under ``stackgate run`` and under plain uvicorn.

0.0.0.0 is reached from the test through 127.0.0.1 (a socket bound to every
address takes loopback connections too); nothing leaves the machine.
"""

from __future__ import annotations

import sys

import httpx
import pytest

from tests.bootstrap_support import DEMO_KEYS, DJANGO_KEYS, Proc, assert_names_each_key, clean_env, insecure
from tests.services import ROOT

CONFIG = str(ROOT / "config.toml")
ALICE = {"X-API-Key": "sgk_BjlsISJWJWt6sMBgjX-ty-q3R05j0-qpufoYZk4wf_0"}  # docs/demo-credentials.md


def stackgate_run(tmp_path, *args: str, **env: str) -> Proc:
    proc = Proc([], clean_env(STACKGATE_DATA_DIR=str(tmp_path), STACKGATE_WATCH="0", **env), tmp_path / "gateway.log")
    proc.cmd = [sys.executable, "-m", "gateway", "run", "--config", CONFIG, "--port", str(proc.port), *args]
    return proc


def plain_uvicorn(tmp_path, *args: str) -> Proc:
    proc = Proc([], clean_env(STACKGATE_DATA_DIR=str(tmp_path), STACKGATE_WATCH="0"), tmp_path / "uvicorn.log")
    proc.cmd = [sys.executable, "-m", "uvicorn", "gateway.asgi:app", "--port", str(proc.port), *args]
    return proc


def assert_refused(proc: Proc) -> None:
    log = proc.log()
    lines = proc.bootstrap_lines()
    assert_names_each_key(insecure(lines, "error"), DEMO_KEYS + DJANGO_KEYS, log)
    assert not insecure(lines, "warning"), log
    summary = [line for line in lines if line["message"].startswith("refusing to serve on 0.0.0.0:")]
    assert summary and all("STACKGATE_ALLOW_INSECURE=1" in line["message"] for line in summary), log
    assert len({line["pid"] for line in summary}) == len(summary), log  # once per worker that started
    assert '"stackgate.access"' not in log, "a request was served:\n" + log


@pytest.mark.parametrize("workers", ["1", "2"])
def test_stackgate_run_on_every_address_refuses_the_shipped_config(tmp_path, workers):
    proc = stackgate_run(tmp_path, "--host", "0.0.0.0", "--workers", workers).launch()
    status = proc.wait_exit()
    assert status == 3, proc.log()
    assert_refused(proc)
    proc.json_lines(strict=workers == "1")  # every line JSON (--workers 2 adds run's plain "warning:" about memory://)
    with pytest.raises(httpx.HTTPError):
        httpx.get(proc.url + "/_stackgate/health", timeout=2)


def test_plain_uvicorn_on_every_address_refuses_the_shipped_config(tmp_path):
    """uvicorn binds after the app's startup: the check waits for the socket, then stops the process."""
    proc = plain_uvicorn(tmp_path, "--host", "0.0.0.0").launch()
    status = proc.wait_exit()
    assert status == 3, proc.log()
    assert_refused(proc)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_the_override_serves_and_is_logged(tmp_path, how):
    args = ("--host", "0.0.0.0", "--allow-insecure") if how == "flag" else ("--host", "0.0.0.0")
    env = {"STACKGATE_ALLOW_INSECURE": "1"} if how == "env" else {}
    proc = stackgate_run(tmp_path, *args, **env).launch()
    try:
        proc.wait_healthy()
        assert httpx.get(proc.url + "/v1/todos", headers=ALICE, timeout=10).status_code == 200
    finally:
        proc.stop()
    log = proc.log()
    lines = proc.bootstrap_lines()
    override = [line for line in lines if line["message"].startswith("STACKGATE_ALLOW_INSECURE is set")]
    assert len(override) == 1 and override[0]["level"] == "warning" and "0.0.0.0" in override[0]["message"], log
    assert_names_each_key(insecure(lines, "warning"), DEMO_KEYS + DJANGO_KEYS, log)
    assert not [line for line in lines if line["level"] == "error"], log


@pytest.mark.parametrize("server", ["stackgate run", "uvicorn"])
def test_loopback_serves_with_a_warning_per_insecure_setting(tmp_path, server):
    proc = (stackgate_run(tmp_path) if server == "stackgate run" else plain_uvicorn(tmp_path)).launch()
    try:
        proc.wait_healthy()
        proc.wait_log("insecure settings (above) are allowed on loopback")
        assert httpx.get(proc.url + "/v1/todos", headers=ALICE, timeout=10).status_code == 200
    finally:
        proc.stop()
    log = proc.log()
    lines = proc.bootstrap_lines()
    assert_names_each_key(insecure(lines, "warning"), DEMO_KEYS + DJANGO_KEYS, log)
    assert len(insecure(lines, "warning")) == len(DEMO_KEYS + DJANGO_KEYS), log
    assert not [line for line in lines if line["level"] == "error"], log
    if server == "stackgate run":
        proc.json_lines()  # every line of its log is JSON
