"""``stackgate routes`` shows a rollout route's weights from the stored state, read-only."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gateway.config import load_config
from gateway.rollout import engine
from gateway.rollout.store import store_for
from tests.rollout.support import config_text, stackgate

PLAIN = '\n[[routes]]\nprefix = "/plain"\nsplit = { old = 70, new = 30 }\nauth = "none"\n'


def write_config(folder: Path, storage: str = "memory://") -> Path:
    path = folder / "c.toml"
    path.write_text(config_text("tests.rollout.apps:clean_too", steps="[10, 50, 100]", storage=storage) + PLAIN)
    return path


def store_state(path: Path, *actions: str) -> None:
    """Store the rollout as a gateway starts it, then as an operator's actions move it."""
    config = load_config(str(path))
    store = store_for(config)
    route = next(r for r in config.routes if r.label == "api")
    state, _ = engine.start(route.rollout, "api", "old", time.time())
    assert store.save("api", 0, state)
    for action in actions:
        new, _ = engine.operate(state, route.rollout, action, time.time())
        assert store.save("api", state["version"], new)
        state = new


def routes(path: Path) -> dict[str, str]:
    """``stackgate routes``: each table row by its prefix."""
    result = stackgate("routes", str(path), env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["PREFIX", "METHODS", "HOSTS", "BACKEND", "KIND", "VERSION", "SCRIPT_NAME"]
    assert lines[-1].startswith("server: ")
    return {line.split()[0]: line for line in lines[1:-1]}


def test_routes_shows_the_stored_step_of_a_running_rollout(tmp_path):
    path = write_config(tmp_path)
    store_state(path, "promote")  # step 1 (10 %), then step 2 (50 %)
    state_file = tmp_path / "c.rollout.json"
    before = state_file.read_bytes()
    rows = routes(path)
    assert rows["/api"].split()[3:5] == ["old=50,new=50", "wsgi,wsgi"]
    assert rows["/api"].endswith("  (rollout: step 2 of 3, running)")
    assert rows["/plain"].split() == ["/plain", "*", "*", "old=70,new=30", "wsgi,wsgi", "-", "/plain"]
    assert state_file.read_bytes() == before


def test_routes_shows_a_paused_and_an_aborted_rollout_as_stored(tmp_path):
    paused, aborted = tmp_path / "paused", tmp_path / "aborted"
    paused.mkdir()
    aborted.mkdir()
    path = write_config(paused)
    store_state(path, "pause")
    row = routes(path)["/api"]
    assert row.split()[3] == "old=90,new=10" and row.endswith("(rollout: step 1 of 3, paused)")
    path = write_config(aborted)
    store_state(path, "promote", "abort")  # every consumer back on the source
    row = routes(path)["/api"]
    assert row.split()[3] == "old=100,new=0" and row.endswith("(rollout: aborted)")


def test_routes_shows_the_config_weights_before_the_rollout_starts_and_writes_no_state(tmp_path):
    path = write_config(tmp_path)
    row = routes(path)["/api"]
    assert row.split()[3] == "old=100,new=0"
    assert row.endswith("(rollout not started: config weights; serving this config starts it at 10 % on new)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]  # no state file, no lock file


def test_routes_says_when_the_redis_store_cannot_be_reached_and_still_prints_the_table(tmp_path, redis):
    path = write_config(tmp_path, storage=redis.url)
    store_state(path, "promote", "promote")  # the last step: completed at 100 %
    row = routes(path)["/api"]
    assert row.split()[3] == "old=0,new=100" and row.endswith("(rollout: step 3 of 3, completed)")
    redis.stop()
    rows = routes(path)
    assert rows["/api"].split()[3] == "old=100,new=0"
    assert "(rollout state unknown, config weights shown; the store cannot be read: redis " in rows["/api"]
    assert f"127.0.0.1:{redis.port}" in rows["/api"]
    assert rows["/plain"].split()[3] == "old=70,new=30"
