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
import pytest

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


DJANGO_SETTINGS = '''
SECRET_KEY = "preload-test-" + "k" * 60
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = []
ROOT_URLCONF = "preload_urls"
MIDDLEWARE = []
DATABASES = {}
USE_TZ = True
'''

DJANGO_URLS = '''
import os

from django.http import JsonResponse
from django.urls import path

with open(os.environ["PRELOAD_IMPORTS"], "a") as imports:  # who imported this URLconf
    imports.write(f"{os.getpid()}\\n")


def who(request):
    return JsonResponse({"pid": os.getpid()})


urlpatterns = [path("who", who)]
'''

DJANGO_WSGI = '''
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "preload_settings")
from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
'''

DJANGO_CONFIG = """
[backends.site]
kind = "wsgi"
app = "preload_wsgi:application"
django_settings = "preload_settings"

[[routes]]
prefix = "/d"
backend = "site"
auth = "none"
"""


def test_the_supervisor_imports_a_django_urlconf_once_for_all_workers(tmp_path):
    """Django imports its URLconf (the views, DRF, what they import) on a process's first request: the
    supervisor does it before forking, so the workers share one copy instead of importing one each."""
    (tmp_path / "preload_settings.py").write_text(DJANGO_SETTINGS)
    (tmp_path / "preload_urls.py").write_text(DJANGO_URLS)
    (tmp_path / "preload_wsgi.py").write_text(DJANGO_WSGI)
    imports = tmp_path / "imports.txt"
    config = tmp_path / "config.toml"
    config.write_text(DJANGO_CONFIG)
    env = base_env(STACKGATE_DATA_DIR=str(tmp_path), PRELOAD_IMPORTS=str(imports), PYTHONPATH=f"{tmp_path}:{ROOT}",
                   DJANGO_SETTINGS_MODULE="preload_settings")  # the suite's own process may have set the demo's
    server = GatewayProcess(config, env, workers=2).start(timeout=90)
    try:
        serving_workers(server, 2)
        answered: set[int] = set()
        deadline = time.monotonic() + 60
        while len(answered) < 2:  # a new connection each time: both workers serve a Django request
            assert time.monotonic() < deadline, f"Django answered from {answered}\n{server.log()}"
            r = httpx.get(server.url + "/d/who", headers={"Connection": "close"}, timeout=10)
            assert r.status_code == 200, f"{r.status_code} {r.text[:300]}\n{server.log()}"
            answered.add(r.json()["pid"])
        assert server.proc.pid not in answered
        assert imports.read_text().split() == [str(server.proc.pid)], server.log()
    finally:
        server.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_the_collector_is_on_where_requests_are_served(tmp_path, workers):
    """``stackgate`` imports with the cycle collector off (gateway/launch.py): the serving processes have it on,
    with the loaded heap frozen."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("wsgi_apps:variant_a", "wsgi_apps:collector"))  # answers with its pid
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=workers).start(timeout=90)
    try:
        answered: dict[int, dict] = {}
        deadline = time.monotonic() + 60
        while len(answered) < workers:
            assert time.monotonic() < deadline, f"answered from {set(answered)}\n{server.log()}"
            r = httpx.get(server.url + "/a/gc", headers={"Connection": "close"}, timeout=10)
            assert r.status_code == 200, f"{r.status_code} {r.text[:300]}\n{server.log()}"
            answered[r.json()["pid"]] = r.json()
        for state in answered.values():
            assert state["enabled"] is True, (state, server.log())
            assert state["frozen"] > 10_000, state
    finally:
        server.stop()


def test_workers_do_not_start_when_the_migrations_fail(tmp_path):
    """The migrations run in a child of the supervisor before any worker: when they fail, no worker starts."""
    from uvicorn.config import STARTUP_FAILURE

    from tests.services import free_port

    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.toml").read_text())
    unreachable = f"postgresql://stackgate:x@127.0.0.1:{free_port()}/nowhere"  # nothing listens there
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path), DATABASE_URL=unreachable), workers=2).launch()
    code = server.exit_code()
    log = server.log()
    assert code == STARTUP_FAILURE, f"exit {code}\n{log}"
    assert "The database migrations failed" in log and "Not starting the workers" in log, log
    assert "Started server process" not in log, log


WAITER = '''
import os, sqlite3, time

# Imported by the supervisor's preload after the migrating Django stack: waits for its migrations,
# which only a child started before this import can apply.
database = os.path.join(os.environ["STACKGATE_DATA_DIR"], "stackgate.sqlite3")
deadline = time.monotonic() + 60
migrated = False
while not migrated and time.monotonic() < deadline:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as db:
            migrated = bool(db.execute("SELECT count(*) FROM django_migrations WHERE app = 'todos'").fetchone()[0])
    except sqlite3.Error:  # not created yet, or being written
        pass
    if not migrated:
        time.sleep(0.05)
with open(os.environ["WAITER_OUT"], "w") as out:
    out.write(f"{os.getpid()} {migrated}")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"waited"]
'''


def test_the_migrations_run_while_the_other_stacks_load(tmp_path):
    """The migrations' child starts as soon as the migrating stack is imported, not after every stack is
    (it runs on another core meanwhile): a stack imported after it, listed first, sees them applied."""
    (tmp_path / "preload_waiter.py").write_text(WAITER)
    out = tmp_path / "waiter.txt"
    config = tmp_path / "config.toml"
    shipped = (ROOT / "config.toml").read_text()
    config.write_text('[backends.waiter]\nkind = "wsgi"\napp = "preload_waiter:app"\n\n'
                      + shipped.replace("[[routes]]", '[[routes]]\nprefix = "/waiter"\nbackend = "waiter"\nauth = "none"\n\n[[routes]]', 1))
    env = base_env(STACKGATE_DATA_DIR=str(tmp_path), WAITER_OUT=str(out), PYTHONPATH=f"{tmp_path}:{ROOT}")
    server = GatewayProcess(config, env, workers=2).start(timeout=120)
    try:
        pid, migrated = out.read_text().split()
        assert (int(pid), migrated) == (server.proc.pid, "True"), server.log()
        assert httpx.get(server.url + "/waiter", timeout=10).text == "waited"
        r = httpx.get(server.url + "/v1/todos", headers={"X-API-Key": "sgk_BjlsISJWJWt6sMBgjX-ty-q3R05j0-qpufoYZk4wf_0"}, timeout=30)
        assert r.status_code == 200, f"{r.status_code} {r.text[:300]}\n{server.log()}"
    finally:
        server.stop()
