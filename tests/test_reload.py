"""The reloader: valid edits swap atomically, invalid ones change nothing; a SIGHUP always answers.

In process, except the SIGHUP to a running ``stackgate run``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import time

import httpx
import pytest

from gateway import reload
from gateway.app import create_app
from gateway.config import load_config
from tests.services import GatewayProcess, base_env
from tests.users import USERS, consumers_toml

CONFIG = """
[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[backends.other]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_a"

[[routes]]
prefix = "/v1"
backend = "rec"
auth = "none"
"""


@pytest.fixture
def setup(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    app = create_app(load_config(path), watch=True)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return app, path, client


async def test_valid_edit_is_applied(setup):
    app, path, client = setup
    assert (await client.get("/v2/x")).status_code == 404
    path.write_text(CONFIG.replace('prefix = "/v1"', 'prefix = "/v2"'))
    result = app.reloader.reload()
    assert result["ok"] is True and result["message"] == "applied"
    assert (await client.get("/v2/x")).status_code == 200
    assert (await client.get("/v1/x")).status_code == 404
    assert app.status()["version"] == result["version"]


async def test_invalid_edit_keeps_the_old_config(setup):
    app, path, client = setup
    before = app.compiled
    path.write_text(CONFIG.replace('backend = "rec"', 'backend = "nope"'))
    result = app.reloader.reload()
    assert result["ok"] is False
    assert result["problems"] == [f'{path.resolve()}: routes[0].backend: unknown backend "nope"; known: "other", "rec"']
    assert app.compiled is before
    assert (await client.get("/v1/x")).status_code == 200


async def test_backend_change_needs_a_restart(setup):
    app, path, client = setup
    before = app.compiled
    path.write_text(CONFIG.replace("threads", "threads").replace('app = "tests.fixtures.wsgi_apps:variant_a"', 'app = "tests.fixtures.wsgi_apps:variant_b"\nthreads = 3'))
    result = app.reloader.reload()
    assert result["ok"] is False and "restart" in result["message"]
    assert result["problems"] == [f"{path.resolve()}: backends.other: app, threads changed; a restart is needed to rebuild a backend"]
    assert app.compiled is before


async def test_request_in_flight_finishes_on_the_config_it_started_with(tmp_path):
    from tests.fixtures import wsgi_apps

    path = tmp_path / "config.toml"
    blocked = CONFIG.replace("tests.fixtures.wsgi_apps:recorder", "tests.fixtures.wsgi_apps:blocked")
    path.write_text(blocked)
    app = create_app(load_config(path), watch=True)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    wsgi_apps.RELEASE.clear()
    in_flight = asyncio.ensure_future(client.get("/v1/x"))
    await asyncio.sleep(0.2)
    path.write_text(blocked.replace('prefix = "/v1"', 'prefix = "/v9"'))
    assert app.reloader.reload()["ok"] is True
    assert (await client.get("/v1/x")).status_code == 404
    wsgi_apps.RELEASE.set()
    assert (await in_flight).status_code == 200


async def test_watcher_picks_up_an_edit(setup):
    app, path, client = setup
    await app.reloader.start()
    try:
        await asyncio.sleep(0.3)
        path.write_text(CONFIG.replace('prefix = "/v1"', 'prefix = "/v3"'))
        for _ in range(100):
            if (await client.get("/v3/x")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the edit was not picked up within 5 s")
    finally:
        await app.reloader.stop()


async def test_undoing_a_bad_edit_clears_the_error(setup):
    app, path, client = setup
    good = path.read_text()
    path.write_text(good.replace('backend = "rec"', 'backend = "nope"'))
    assert app.reloader.reload()["ok"] is False
    assert app.status()["last_reload"]["ok"] is False
    path.write_text(good)
    result = app.reloader.reload()
    assert result["ok"] is True and result["problems"] == []
    assert app.status()["last_reload"]["ok"] is True


async def test_throttle_counters_survive_a_reload(tmp_path):
    path = tmp_path / "config.toml"
    throttled = CONFIG + '\n[throttle.policies.tight]\nrates = ["3/minute"]\n'
    throttled = throttled.replace('auth = "none"', 'auth = "none"\nthrottle = "tight"')
    path.write_text(throttled)
    app = create_app(load_config(path), watch=True)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    assert [(await client.get("/v1/x")).status_code for _ in range(2)] == [200, 200]
    path.write_text(throttled.replace('backend = "rec"', 'backend = "rec"\nname = "renamed"'))
    assert app.reloader.reload()["message"] == "applied"
    assert [(await client.get("/v1/x")).status_code for _ in range(2)] == [200, 429]


async def test_sighup_reloads(setup, monkeypatch):
    app, path, client = setup

    async def no_watch():  # only the signal may read the file (the watch reads it at once when it starts)
        await asyncio.Event().wait()

    monkeypatch.setattr(app.reloader, "_watch", no_watch)
    await app.reloader.start()
    try:
        path.write_text(CONFIG.replace('prefix = "/v1"', 'prefix = "/v4"'))
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(5):  # well inside the watcher's debounce: only the signal can have done it
            await asyncio.sleep(0.002)
        assert app.reloader.last["message"] == "applied"
        assert (await client.get("/v4/x")).status_code == 200
    finally:
        await app.reloader.stop()


async def test_the_watch_outlives_a_reload_that_fails_unexpectedly(setup, monkeypatch, caplog):
    app, path, client = setup
    real_apply = app.apply
    calls = []

    def apply_once_broken(config):
        calls.append(config.digest)
        if len(calls) == 1:
            raise RuntimeError("a bug while compiling")
        real_apply(config)

    monkeypatch.setattr(app, "apply", apply_once_broken)
    await app.reloader.start()
    try:
        await asyncio.sleep(0.3)
        path.write_text(CONFIG.replace('prefix = "/v1"', 'prefix = "/v5"'))
        for _ in range(200):  # the same file is tried again (the poll), not marked as seen
            if (await client.get("/v5/x")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the watch stopped after the failed reload: {calls}")
        assert "config reload failed" in caplog.text and "a bug while compiling" in caplog.text
    finally:
        await app.reloader.stop()


async def test_an_edit_the_watch_missed_is_read_even_while_the_folder_is_busy(setup, monkeypatch):
    """The edit lands before the watch is set up (as on a worker still starting), and a log
    file beside the config changes all the time: the periodic read must still happen."""
    app, path, client = setup
    real_reload = app.reloader.reload
    calls = []

    def reload_then_edit():
        result = real_reload()
        if not calls:
            path.write_text(CONFIG.replace('prefix = "/v1"', 'prefix = "/v6"'))
        calls.append(result)
        return result

    monkeypatch.setattr(app.reloader, "reload", reload_then_edit)
    busy = True

    async def write_logs():
        with open(path.parent / "gateway.log", "a") as log:
            while busy:
                log.write("a line\n")
                log.flush()
                await asyncio.sleep(0.05)

    writer = asyncio.ensure_future(write_logs())
    await app.reloader.start()
    try:
        for _ in range(160):
            if (await client.get("/v6/x")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the missed edit was never read while the folder was busy")
    finally:
        busy = False
        await writer
        await app.reloader.stop()


async def test_sighup_with_an_unchanged_file_is_logged_and_stamped(setup, monkeypatch, caplog):
    app, path, client = setup
    version = app.compiled.config.digest
    monkeypatch.setattr(reload, "_now", lambda: "2030-01-01T00:00:00Z")
    caplog.set_level(logging.INFO, logger="stackgate.reload")
    assert app.reloader.reload()["message"] == "loaded at start"  # the watch's read of a known file: silent
    assert not caplog.records
    app.reloader._on_sighup()
    assert app.status()["last_reload"] == {"ok": True, "at": "2030-01-01T00:00:00Z", "version": version, "message": reload.UNCHANGED, "problems": []}
    assert [(r.getMessage(), r.config_version) for r in caplog.records] == [("config unchanged", version)]


async def test_sighup_with_an_unchanged_invalid_file_reports_it_again(setup, caplog):
    app, path, client = setup
    path.write_text(CONFIG.replace('backend = "rec"', 'backend = "nope"'))
    assert app.reloader.reload()["ok"] is False
    caplog.clear()
    app.reloader._on_sighup()
    assert app.status()["last_reload"]["ok"] is False
    assert ["config reload: not applied: the file has problems; the previous config keeps serving"] == [r.getMessage() for r in caplog.records]


def _wait(condition, what: str, server: GatewayProcess, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} after {timeout} s:\n{server.log()[-20000:]}"
        time.sleep(0.05)
    return result


def test_sighup_with_an_unchanged_file_is_logged_by_the_running_gateway(tmp_path):
    config = tmp_path / "config.toml"
    text = CONFIG + consumers_toml()
    config.write_text(text)
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path), STACKGATE_WATCH="1")).start()

    def last_reload() -> dict:
        return httpx.get(server.url + "/_stackgate/status", headers=USERS["admin"].headers(), timeout=10).json()["last_reload"]

    def unchanged_lines() -> list[dict]:
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line["message"] == "config unchanged"]

    try:
        before = last_reload()
        assert before["message"] == "loaded at start" and not unchanged_lines()
        # The stamp counts whole seconds: send the signal once a new second has begun, so it must change.
        _wait(lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > before["at"], "the clock did not move", server)
        os.kill(server.proc.pid, signal.SIGHUP)
        after = _wait(lambda: (last := last_reload())["message"] == reload.UNCHANGED and last, "no answer to SIGHUP", server)
        assert after["ok"] is True and after["version"] == version and after["at"] > before["at"]
        [line] = _wait(unchanged_lines, "no log line", server)
        assert line["logger"] == "stackgate.reload" and line["level"] == "info" and line["config_version"] == version
        assert server.proc.poll() is None
    finally:
        server.stop()
        print(f"--- gateway on {server.url} ---\n{server.log()[-20000:]}")  # shown when the test fails
