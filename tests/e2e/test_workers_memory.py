"""``stackgate run --workers N``: workers forked from the loaded supervisor (gateway/edge/supervisor.py).

Behaviour only, never a memory figure (those are ``python -m bench.memory``'s):
the workers are forks (they run the supervisor's command line, not
multiprocessing's spawn), they serve, no multiprocessing resource tracker runs,
and the supervisor does not set Django up to apply the migrations (they run
in a child process): with a config that runs no Django app, the supervisor
never loads SQLite's extension module, which Django's migrations load.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx

from tests.services import ROOT, GatewayProcess, base_env, session_processes

CONFIG = """
[backends.a]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_a"

[[routes]]
prefix = "/a"
backend = "a"
auth = "none"
"""


def maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def open_files(pid: int) -> list[str]:
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.append(str(fd.readlink()))
        except OSError:  # closed meanwhile
            pass
    return out


def serving_workers(server: GatewayProcess, count: int) -> set[int]:
    """The worker pids that answered health checks, once ``count`` of them have (each on a new connection)."""
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while len(seen) < count:
        assert time.monotonic() < deadline, f"workers seen: {seen}\n{server.log()}"
        r = httpx.get(server.url + "/_stackgate/health", headers={"Connection": "close"}, timeout=10)
        assert r.status_code == 200, r.text
        seen.add(r.json()["worker"])
    return seen


def test_workers_are_forked_from_the_supervisor_and_serve(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2).start(timeout=90)
    try:
        supervisor = server.proc.pid
        workers = serving_workers(server, 2)
        assert httpx.get(server.url + "/a/x", timeout=10).status_code == 200
        tree = {p.pid: p for p in session_processes(supervisor)}
        assert workers <= set(tree), f"{workers} not in {tree}\n{server.log()}"
        for pid in workers:
            assert tree[pid].ppid == supervisor
            # A fork runs its parent's command line; a spawned worker runs multiprocessing's.
            assert tree[pid].cmdline == tree[supervisor].cmdline, tree[pid]
        # Nothing needs multiprocessing's resource tracker (named semaphores of the spawn context).
        assert not [p for p in tree.values() if "resource_tracker" in p.cmdline or "multiprocessing" in p.cmdline], tree
        assert "_sqlite3" not in maps(supervisor), "the supervisor loaded SQLite: it set Django up to migrate"
    finally:
        server.stop()


def test_the_migrations_still_apply_before_the_workers_serve(tmp_path):
    """The embedded database is migrated (by the supervisor's short-lived child) before the workers serve."""
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.toml").read_text())
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2).start(timeout=90)
    try:
        with sqlite3.connect(tmp_path / "stackgate.sqlite3") as db:
            applied = {app for (app,) in db.execute("SELECT app FROM django_migrations")}
        assert {"auth", "todos"} <= applied, applied
        r = httpx.get(server.url + "/admin/login/", timeout=30)  # Django's sessions, users: their tables exist
        assert r.status_code == 200, f"{r.status_code} {r.text[:300]}\n{server.log()}"
        # The supervisor imported Django (its preload) but never opened the database: the workers share no connection.
        assert not [f for f in open_files(server.proc.pid) if "stackgate.sqlite3" in f], open_files(server.proc.pid)
        children = [p for p in session_processes(server.proc.pid) if p.ppid == server.proc.pid]
        assert len(children) == 2, children  # the migrating child is gone: two workers left
    finally:
        server.stop()
