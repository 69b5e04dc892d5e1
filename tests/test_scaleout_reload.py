"""The reloader on a Kubernetes ConfigMap volume: the ``..data`` swap is an edit of the file, in process."""

from __future__ import annotations

import asyncio

import httpx

from gateway import reload
from gateway.app import create_app
from gateway.config import load_config
from tests.kubelet import KubeletVolume

CONFIG = """
[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[[routes]]
prefix = "/v1"
backend = "rec"
auth = "none"
"""


def volume_app(tmp_path):
    volume = KubeletVolume(tmp_path / "config")
    volume.write({"config.toml": CONFIG})
    app = create_app(load_config(volume.root / "config.toml"), watch=True)
    return volume, app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_a_swap_is_read_through_the_link_not_the_directory_it_pointed_to(tmp_path):
    volume, app, client = volume_app(tmp_path)
    first = volume.current
    volume.write({"config.toml": CONFIG.replace('"/v1"', '"/v2"')})
    assert not first.exists()
    result = app.reloader.reload()
    assert result["ok"] is True and result["message"] == "applied", result
    assert (await client.get("/v2/x")).status_code == 200


async def test_the_watch_sees_a_swap_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(reload, "POLL_MS", 60_000)  # only the watch's events may trigger a read
    volume, app, client = volume_app(tmp_path)
    await app.reloader.start()
    try:
        await asyncio.sleep(0.5)  # the watch's first read, done at start
        for prefix in ("/v2", "/v3", "/v4"):  # several in a row, each by the kubelet's atomic rename
            volume.write({"config.toml": CONFIG.replace('"/v1"', f'"{prefix}"')})
            for _ in range(200):
                if (await client.get(prefix + "/x")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the swap to {prefix} was not picked up within 10 s: {app.status()['last_reload']}")
    finally:
        await app.reloader.stop()


async def test_an_invalid_version_is_refused_and_named_by_the_mounted_path(tmp_path):
    volume, app, client = volume_app(tmp_path)
    volume.write({"config.toml": CONFIG.replace("[[routes]]", "[[routes]")})
    result = app.reloader.reload()
    assert result["ok"] is False
    assert [p.split(": ", 1)[0] for p in result["problems"]] == [str(volume.root / "config.toml")]
    assert (await client.get("/v1/x")).status_code == 200
