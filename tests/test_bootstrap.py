"""gateway.bootstrap: what is insecure, where it may serve, and the guard that holds requests until it knows."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from gateway import bootstrap
from gateway.config import parse_config
from tests.bootstrap_support import DEMO_KEYS, clean_env
from tests.services import ROOT
from tests.users import consumers_toml

SHIPPED = (ROOT / "config.toml").read_bytes()
DOCS = (ROOT / "docs" / "demo-credentials.md").read_text()
PUBLIC = [(socket.AF_INET, ("0.0.0.0", 8000))]
LOOPBACK = [(socket.AF_INET, ("127.0.0.1", 8000))]


def shipped(environ=None):
    return parse_config(SHIPPED, "config.toml", environ if environ is not None else {})


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# What is published, and what the gateway recognises


def test_the_fingerprints_are_those_of_the_published_credentials():
    keys = re.findall(r"^\| `\w+` \| [\w, ]+ \| `(sgk_[^`]+)` \|", DOCS, re.MULTILINE)
    assert len(keys) == 4 and {sha256(key) for key in keys} == bootstrap.DEMO_API_KEYS
    hashes = re.findall(r'^password = "(\$argon2[^"]+)"', SHIPPED.decode(), re.MULTILINE)
    assert len(hashes) == 4 and {sha256(h) for h in hashes} == bootstrap.DEMO_PASSWORD_HASHES
    secret = re.search(r"public demo secret `([^`]+)`", DOCS).group(1)
    assert sha256(secret) in bootstrap.DEMO_JWT_SECRETS
    assert f"${{STACKGATE_JWT_SECRET:-{secret}}}" in SHIPPED.decode()


def test_the_shipped_config_names_every_published_credential():
    findings = bootstrap.config_findings(shipped())
    assert [f.key for f in findings] == DEMO_KEYS
    assert all(f.fix and not f.public_only for f in findings)
    assert "stackgate keys new alice" in findings[1].fix
    assert "stackgate password alice" in findings[2].fix
    assert "STACKGATE_JWT_SECRET" in findings[0].fix


def test_replaced_credentials_are_fine():
    text = re.sub(rb"^\[consumers\.[^\]]+\]\n(?:(?!\[).*\n)*", b"", SHIPPED, flags=re.MULTILINE) + consumers_toml().encode()
    config = parse_config(text, "config.toml", {"STACKGATE_JWT_SECRET": "x" * 48})
    assert set(config.consumers) == {"alice", "bob", "tester", "admin"}
    assert bootstrap.config_findings(config) == []


@pytest.mark.parametrize("hosts, found", [([], True), (["api.example.com"], False), (None, False)])
def test_an_empty_host_allow_list_counts_on_a_public_address_only(hosts, found):
    config = parse_config(consumers_toml().encode() + b'[[routes]]\nprefix = "/v1"\nbackend = "b"\n[backends.b]\nkind = "static"\ndirectory = "."\n')
    gateway = SimpleNamespace(allowed_hosts=hosts) if hosts is not None else SimpleNamespace()
    findings = bootstrap.config_findings(config.model_copy(update={"gateway": gateway}))
    assert [f.key for f in findings] == (["gateway.allowed_hosts"] if found else [])
    if found:
        assert bootstrap.decide(findings, LOOPBACK, allow=False).lines == []
        verdict = bootstrap.decide(findings, PUBLIC, allow=False)
        assert verdict.refused and "gateway.allowed_hosts" in verdict.lines[0][1]


def django_findings(gateway_hosts=(), **env: str) -> list[str]:
    """The Django settings read in a fresh process (settings are read once per process)."""
    code = (
        "import json; from types import SimpleNamespace\n"
        "from backends.django_site.wsgi import application\n"
        "from gateway.bootstrap import django_findings\n"
        f"print(json.dumps([f.key for f in django_findings({{'django': SimpleNamespace(app=application)}}, {list(gateway_hosts)!r})]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(**env), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_django_counts_only_where_a_backend_serves_it():
    class Handler:  # stands for django.core.handlers.wsgi.WSGIHandler
        pass

    Handler.__module__ = "django.core.handlers.wsgi"
    handler = Handler()
    assert bootstrap._runs_django(handler)
    assert bootstrap._runs_django(SimpleNamespace(application=handler))  # WhiteNoise(application)
    assert bootstrap._runs_django(SimpleNamespace(app=SimpleNamespace(app=handler)))  # a2wsgi around a wrapper
    assert not bootstrap._runs_django(SimpleNamespace(app=None))
    assert not bootstrap._runs_django(None)
    assert bootstrap.django_findings({"flask": SimpleNamespace(app=SimpleNamespace())}) == []


def test_django_settings_are_read_from_the_loaded_backend():
    where = "backends.django (settings backends.django_site.settings)"
    assert django_findings() == [f"{where}: SECRET_KEY", f"{where}: ALLOWED_HOSTS"]
    assert django_findings(DJANGO_DEBUG="1", DJANGO_SECRET_KEY="short") == [f"{where}: SECRET_KEY", f"{where}: DEBUG", f"{where}: ALLOWED_HOSTS"]
    assert django_findings(DJANGO_SECRET_KEY="k" * 10 + "abcdefghij" * 5, DJANGO_ALLOWED_HOSTS="api.example.com") == []


def test_django_trusting_any_host_is_fine_behind_a_gateway_allow_list():
    """The gateway refuses every Host not in its allowed_hosts (421) before Django sees one."""
    assert django_findings(["api.example.com"], DJANGO_SECRET_KEY="k" * 10 + "abcdefghij" * 5) == []
    assert django_findings(DJANGO_SECRET_KEY="k" * 10 + "abcdefghij" * 5) == [
        "backends.django (settings backends.django_site.settings): ALLOWED_HOSTS"
    ]


# Where it may serve


@pytest.mark.parametrize(
    "addresses, local",
    [
        (LOOPBACK, True),
        ([(socket.AF_INET, ("127.0.0.2", 1))], True),
        ([(socket.AF_INET6, ("::1", 1, 0, 0))], True),
        ([(socket.AF_INET6, ("::ffff:127.0.0.1", 1, 0, 0))], True),
        (PUBLIC, False),
        ([(socket.AF_INET6, ("::", 1, 0, 0))], False),
        ([(socket.AF_INET, ("192.168.1.20", 1))], False),
        (LOOPBACK + PUBLIC, False),
        ([(socket.AF_UNIX, "/run/stackgate.sock")], False),
        ([], False),
        (None, False),
    ],
)
def test_only_loopback_is_local(addresses, local):
    assert bootstrap.loopback_only(addresses) is local


def finding(key="consumers.alice.password"):
    return bootstrap.Finding(key, "a published demo password", "replace it")


def test_decide_warns_on_loopback_and_refuses_elsewhere():
    findings = [finding(), finding("auth.jwt.demo.secret")]
    local = bootstrap.decide(findings, LOOPBACK, allow=False)
    assert not local.refused
    assert [level for level, _, _ in local.lines] == [30, 30, 30]
    assert "allowed on loopback (127.0.0.1:8000) only" in local.lines[-1][1]

    public = bootstrap.decide(findings, PUBLIC, allow=False)
    assert public.refused
    assert [level for level, _, _ in public.lines] == [40, 40, 40]
    assert public.lines[0][1] == "insecure setting: consumers.alice.password: a published demo password; fix: replace it"
    assert public.lines[0][2]["key"] == "consumers.alice.password" and public.lines[0][2]["listen"] == "0.0.0.0:8000"
    assert public.lines[-1][1].startswith("refusing to serve on 0.0.0.0:8000: 2 insecure settings")

    unseen = bootstrap.decide(findings, [], allow=False)
    assert unseen.refused and "an address it cannot see" in unseen.lines[-1][1]


def test_the_override_serves_and_says_so_every_time():
    overridden = bootstrap.decide([finding()], PUBLIC, allow=True)
    assert not overridden.refused
    assert overridden.lines[0][1].startswith("STACKGATE_ALLOW_INSECURE is set") and overridden.lines[0][0] == 30
    assert overridden.lines[1][0] == 30 and overridden.lines[1][1].startswith("insecure setting: ")
    nothing = bootstrap.decide([], PUBLIC, allow=True)
    assert len(nothing.lines) == 1 and nothing.lines[0][1].startswith("STACKGATE_ALLOW_INSECURE is set")
    assert bootstrap.decide([], PUBLIC, allow=False).lines == []


@pytest.mark.parametrize("value, given", [("1", True), ("true", True), ("yes", True), ("0", False), ("", False)])
def test_the_override_variable(value, given):
    assert bootstrap.override_given({"STACKGATE_ALLOW_INSECURE": value}) is given


def test_server_addresses_are_this_processes_server_sockets():
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    bound = socket.socket()  # bound, not yet listening: how uvicorn --workers hands its socket over
    bound.bind(("127.0.0.1", 0))
    unbound = socket.socket()
    client = socket.create_connection(listening.getsockname())
    accepted, _ = listening.accept()
    pair = socket.socketpair()
    ours = {listening.getsockname()[1], bound.getsockname()[1]}
    try:
        found = [address for family, address in bootstrap.server_addresses() if family == socket.AF_INET]
        assert {("127.0.0.1", port) for port in ours} <= set(found)
        assert found.count(listening.getsockname()) == 1  # the accepted connection has its address too: not counted
        assert client.getsockname() not in found
    finally:
        for sock in (listening, bound, unbound, client, accepted, *pair):
            sock.close()
    assert not {address[1] for family, address in bootstrap.server_addresses() if family == socket.AF_INET} & ours


# The guard


class Inner:
    """A gateway stand-in: records its lifespan and the requests it serves."""

    backends: dict = {}

    def __init__(self) -> None:
        self.lifespan: list[str] = []
        self.served: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Server:
    """Drives a guard as a server would: the lifespan in a task, requests one by one."""

    def __init__(self, guard: bootstrap.Guard) -> None:
        self.guard = guard
        self.to_app: asyncio.Queue = asyncio.Queue()
        self.from_app: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.ensure_future(guard({"type": "lifespan"}, self.to_app.get, self.from_app.put))

    async def lifespan(self, message: str) -> str:
        await self.to_app.put({"type": message})
        return (await asyncio.wait_for(self.from_app.get(), 10))["type"]

    async def request(self, path: str = "/v1/todos") -> tuple[int, bytes]:
        return await request(self.guard, path)


async def request(app, path: str = "/v1/todos") -> tuple[int, bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    await app({"type": "http", "path": path, "headers": []}, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def make_guard(addresses, config=None, **kwargs):
    calls = {"stop": 0, "exit": []}
    state = {"addresses": addresses}

    def stop():
        calls["stop"] += 1

    guard = bootstrap.Guard(
        Inner(), config or shipped(), environ=kwargs.pop("environ", {}), stop=stop,
        addresses=lambda: state["addresses"], exit=calls["exit"].append, **kwargs,
    )
    return guard, state, calls


@pytest.fixture
def logged():
    """Records of ``stackgate.bootstrap`` (whatever ``logs.setup`` did to propagation in this process)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("stackgate.bootstrap")
    log.addHandler(handler)
    yield records
    log.removeHandler(handler)


async def test_a_socket_bound_before_startup_fails_the_startup_after_a_clean_shutdown(logged):
    guard, _, calls = make_guard(PUBLIC)
    server = Server(guard)
    assert await server.lifespan("lifespan.startup") == "lifespan.startup.failed"
    await asyncio.wait_for(server.task, 10)
    assert guard.app.lifespan == ["lifespan.startup", "lifespan.shutdown"]  # what started was shut down first
    assert calls == {"stop": 0, "exit": []}
    errors = [r.getMessage() for r in logged if r.levelname == "ERROR"]
    assert len(errors) == len(DEMO_KEYS) + 1


async def test_a_server_binding_later_is_checked_at_its_first_request():
    guard, state, calls = make_guard([], bind_wait=60)
    server = Server(guard)
    assert await server.lifespan("lifespan.startup") == "lifespan.startup.complete"
    state["addresses"] = PUBLIC  # the server binds; the request comes before the watch looks again
    status, body = await server.request()
    assert status == 503 and json.loads(body)["error"]["code"] == "shutting_down"
    assert guard.app.served == [] and calls["stop"] == 1
    assert (await server.request())[0] == 503 and calls["stop"] == 1
    assert await server.lifespan("lifespan.shutdown") == "lifespan.shutdown.complete"
    assert calls["exit"] == [bootstrap.EXIT_REFUSED]  # after its shutdown, the process exits as a failed start


async def test_the_watch_stops_the_process_without_waiting_for_a_request():
    guard, state, calls = make_guard([], bind_wait=60)
    server = Server(guard)
    assert await server.lifespan("lifespan.startup") == "lifespan.startup.complete"
    await asyncio.sleep(0.1)
    assert calls["stop"] == 0 and guard.held
    state["addresses"] = PUBLIC
    for _ in range(500):
        if calls["stop"]:
            break
        await asyncio.sleep(0.01)
    assert calls["stop"] == 1 and guard.refused


async def test_no_socket_ever_seen_counts_as_public():
    guard, _, calls = make_guard([], bind_wait=0.2)
    server = Server(guard)
    assert await server.lifespan("lifespan.startup") == "lifespan.startup.complete"
    for _ in range(500):
        if calls["stop"]:
            break
        await asyncio.sleep(0.01)
    assert calls["stop"] == 1 and guard.refused


async def test_loopback_serves_and_stops_holding():
    guard, state, calls = make_guard([])
    server = Server(guard)
    assert await server.lifespan("lifespan.startup") == "lifespan.startup.complete"
    state["addresses"] = LOOPBACK
    assert await server.request() == (200, b"ok")
    assert not guard.held and calls["stop"] == 0
    state["addresses"] = PUBLIC  # no longer looked at
    assert await server.request() == (200, b"ok")
    assert await server.lifespan("lifespan.shutdown") == "lifespan.shutdown.complete"
    assert calls["exit"] == []


async def test_the_override_lets_a_public_socket_serve():
    guard, _, calls = make_guard(PUBLIC, environ={"STACKGATE_ALLOW_INSECURE": "1"})
    server = Server(guard)
    assert await server.lifespan("lifespan.startup") == "lifespan.startup.complete"
    assert await server.request() == (200, b"ok")
    assert calls == {"stop": 0, "exit": []}


async def test_nothing_insecure_needs_no_address():
    config = parse_config(b'[gateway]\nallowed_hosts = ["api.example.com"]\n' + consumers_toml().encode() + b'[[routes]]\nprefix = "/v1"\nbackend = "b"\n[backends.b]\nkind = "static"\ndirectory = "."\n')

    def never():
        raise AssertionError("looked for the address")

    guard = bootstrap.Guard(Inner(), config, environ={}, stop=never, addresses=never)
    server = Server(guard)
    assert await server.lifespan("lifespan.startup") == "lifespan.startup.complete"
    assert not guard.held
    assert await server.request() == (200, b"ok")


async def test_without_a_lifespan_the_first_request_runs_the_checks():
    guard, _, calls = make_guard(PUBLIC)
    status, _ = await request(guard)
    assert status == 503 and calls["stop"] == 1 and guard.app.served == []
