"""Noise checks when copies run in the gateway's own process (``mirror_process = false``, or ASGI
and remote backends): the same verdicts as in the shadow process."""

from __future__ import annotations

import asyncio

from tests.users import USERS, consumers_toml

CONFIG = """
[split]
mirror_process = false
mirror_noise_share = 0

[backends.stable]
kind = "wsgi"
app = "tests.fixtures.noise_apps:stable"

[backends.regressed]
kind = "wsgi"
app = "tests.fixtures.noise_apps:regressed"

[[routes]]
name = "inproc"
prefix = "/inproc"
split = { stable = 50, regressed = 50 }
mirror = true
auth = "none"
""" + consumers_toml()


async def test_noise_is_learned_and_a_real_change_named_in_process(gateway_client):
    client = gateway_client(CONFIG)
    admin = USERS["admin"].headers()
    for n in range(30):
        client.cookies.clear()
        assert (await client.get(f"/inproc/items/{n}")).status_code == 200
    for _ in range(500):
        stats = (await client.get("/_stackgate/mirror", headers=admin)).json()["inproc"]
        if stats["matches"] + stats["mismatches"] + stats["errors"] >= 30:
            break
        await asyncio.sleep(0.02)
    assert (stats["matches"], stats["mismatches"], stats["errors"]) == (27, 3, 0), stats
    assert stats["fields"]["stamp"]["verdict"] == "noise" and stats["fields"]["title"]["verdict"] == "real"
    assert stats["self_checks"]["stable"] >= 1 and stats["self_checks"]["regressed"] >= 1
    assert sorted(int(m["path"].rsplit("/", 1)[1]) for m in stats["recent_mismatches"]) == [0, 10, 20]
