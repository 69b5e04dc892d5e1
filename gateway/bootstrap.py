"""Bootstrap checks: insecure settings are warnings on loopback and stop the gateway anywhere else.

At start-up (``stackgate run`` and ``gateway.asgi:app`` under any server)
every insecure setting is logged at once, one JSON line each, naming the key
and the fix: a published demo credential still configured, a Django backend
with its insecure fallback ``SECRET_KEY``, ``DEBUG`` on or ``ALLOWED_HOSTS``
of ``*``, and a public address without a host allow-list. While the process
serves on loopback only they are warnings; bound to any other address (or to
one it cannot see) the gateway refuses to serve and exits with status 3,
unless ``STACKGATE_ALLOW_INSECURE=1`` (``stackgate run --allow-insecure``) is
set, which is itself logged at every start. docs/security.md has the list.

The address is the process's own server sockets (``server_addresses``), so it
is known whatever the server and its flags:

- a socket the server bound before the app started (``stackgate run``, any
  ``--workers``/``--reload``, gunicorn, ``--fd``) is seen at lifespan startup,
  and a refusal fails the startup: nothing is ever served;
- a server that binds after the lifespan startup (plain ``uvicorn`` with one
  process) is watched until its socket appears, and every request until then
  first settles the check itself: on a refusal requests get a 503, the
  process stops itself (SIGTERM) and exits with status 3 after its shutdown.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import signal
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from gateway import logs
from gateway.config import Config
from gateway.errors import send_error
from gateway.types import Receive, Scope, Send

logger = logging.getLogger("stackgate.bootstrap")

ALLOW_ENV = "STACKGATE_ALLOW_INSECURE"
EXIT_REFUSED = 3
"""uvicorn's (and gunicorn's) exit status for an app that failed to start."""
BIND_WAIT = 60.0
"""Seconds the check waits for a server that binds after the lifespan startup."""
_POLL = 0.02

# SHA-256 fingerprints of the credentials Stackgate itself publishes (docs/demo-credentials.md,
# config.toml): the demo API keys (as configured, "sha256:<hex>" of the key), the exact demo
# password hashes, and the demo JWT secret. tests/test_bootstrap.py checks them against both files.
DEMO_API_KEYS = frozenset({
    "e1667d0e2a2a3bcb894c7b372cffe15decddbcb4ea2d5a1a7d1546b9df3d2627",
    "d0b3864f8c966c2a06941112b017b6d2e905b8b73787334b7b27fd0c7248af4b",
    "7afd3e10c5dc81a5cda88ca290564c0bfa2dcdff0dc2f01b63d2ef799b96579b",
    "32c056b699e6a75486028808b5b23587d5f62d2399c5548b7d536d56363049e7",
})
DEMO_PASSWORD_HASHES = frozenset({
    "5dedd152c6f372dcc6f46038cb166cbd37c33f269017688454477eeb1fd03b44",
    "61735b6f2cfe369e288142e3efc2a14775fdce7d001bd4aba891267576f732bd",
    "437057e4ba8c7185ad37ff2c255245e653033d7aab6d55d3e0e78af447b56e47",
    "89dc36c0937550b3d0d37579985c2a6c2d4f67bdbb79779f1849bbc1e3742714",
})
DEMO_JWT_SECRETS = frozenset({"9a7f1ad47a4b5bd29c470eca09ab7ecf0a7be99378ca95e369a790c7bafb33c3"})

FIX_API_KEY = "replace it with `stackgate keys new {name}` (or delete [consumers.{name}])"
FIX_PASSWORD = "replace it with `stackgate password {name}` (or delete the line)"
FIX_JWT_SECRET = (
    "set the variable it reads (STACKGATE_JWT_SECRET in the shipped config) to at least 32 random bytes, "
    "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`, or remove [auth.jwt.{name}]"
)
FIX_ALLOWED_HOSTS = 'list the host names clients use, e.g. allowed_hosts = ["api.example.com"]'
FIX_DJANGO_SECRET = "set a random SECRET_KEY of 50 or more characters (the shipped settings read DJANGO_SECRET_KEY)"
FIX_DJANGO_DEBUG = "set DEBUG = False (the shipped settings read DJANGO_DEBUG)"
FIX_DJANGO_HOSTS = "list the host names the site answers to (the shipped settings read DJANGO_ALLOWED_HOSTS)"


@dataclass(frozen=True)
class Finding:
    """One insecure setting: where it is, what is wrong, how to fix it."""

    key: str
    problem: str
    fix: str
    public_only: bool = False
    """Only a finding when the gateway listens beyond loopback (the host allow-list)."""

    def line(self) -> str:
        return f"insecure setting: {self.key}: {self.problem}; fix: {self.fix}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_findings(config: Config) -> list[Finding]:
    """The insecure settings of a config file, in file order."""
    found = []
    hosts = getattr(config.gateway, "allowed_hosts", None)
    if hosts is not None and not hosts:
        found.append(Finding(
            "gateway.allowed_hosts", "empty on a public address: the gateway answers any Host header", FIX_ALLOWED_HOSTS, True
        ))
    for name, issuer in config.auth.jwt.items():
        if issuer.secret is not None and _sha256(issuer.secret.get_secret_value()) in DEMO_JWT_SECRETS:
            found.append(Finding(
                f"auth.jwt.{name}.secret",
                "the published demo JWT secret (docs/demo-credentials.md): anyone can sign a token for any identity, admin included",
                FIX_JWT_SECRET.format(name=name),
            ))
    for name, consumer in config.consumers.items():
        for index, digest in enumerate(consumer.api_keys):
            if digest.partition(":")[2] in DEMO_API_KEYS:
                found.append(Finding(
                    f"consumers.{name}.api_keys[{index}]",
                    "a published demo API key (docs/demo-credentials.md)",
                    FIX_API_KEY.format(name=name),
                ))
        if consumer.password is not None and _sha256(consumer.password) in DEMO_PASSWORD_HASHES:
            found.append(Finding(
                f"consumers.{name}.password", "a published demo password (docs/demo-credentials.md)", FIX_PASSWORD.format(name=name)
            ))
    return found


def _runs_django(app: Any) -> bool:
    """Django's WSGI/ASGI handler, or a middleware around one (``.app``, ``.application``: a2wsgi, WhiteNoise)."""
    for _ in range(4):
        if type(app).__module__.startswith("django."):
            return True
        app = getattr(app, "application", None) or getattr(app, "app", None)
        if app is None:
            return False
    return False


def django_findings(backends: dict[str, Any], gateway_hosts: Iterable[str] = ()) -> list[Finding]:
    """Django's own risky settings, when a backend runs Django (read after the backends loaded it).

    ``ALLOWED_HOSTS = ["*"]`` is a finding only where the gateway has no
    ``allowed_hosts`` of its own: with one, no other Host reaches Django.

    Only a backend that serves Django counts: the embedded database's migrations
    configure Django in any process, whether or not a route leads to it.
    """
    names = [f"backends.{name}" for name, backend in backends.items() if _runs_django(getattr(backend, "app", None))]
    conf = sys.modules.get("django.conf")
    if not names or conf is None or not conf.settings.configured:
        return []
    from django.core.checks.security.base import (
        SECRET_KEY_INSECURE_PREFIX,
        SECRET_KEY_MIN_LENGTH,
        SECRET_KEY_MIN_UNIQUE_CHARACTERS,
    )

    settings = conf.settings
    where = f"{', '.join(names)} (settings {settings.SETTINGS_MODULE or '?'})"
    found = []
    key = str(getattr(settings, "SECRET_KEY", "") or "")
    if key.startswith(SECRET_KEY_INSECURE_PREFIX) or len(key) < SECRET_KEY_MIN_LENGTH or len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS:
        found.append(Finding(
            f"{where}: SECRET_KEY",
            "Django's insecure fallback (or too short): sessions, the admin's login and CSRF tokens can be forged",
            FIX_DJANGO_SECRET,
        ))
    if settings.DEBUG:
        found.append(Finding(f"{where}: DEBUG", "on: error pages show settings, SQL and source code", FIX_DJANGO_DEBUG))
    if "*" in settings.ALLOWED_HOSTS and not list(gateway_hosts):
        found.append(Finding(f"{where}: ALLOWED_HOSTS", '"*": the site trusts any Host header', FIX_DJANGO_HOSTS))
    return found


def server_addresses() -> Optional[list[tuple[int, Any]]]:
    """``(family, address)`` of every socket this process serves on; None where fds cannot be listed.

    A server socket is a stream socket that listens, or that is bound and not
    connected (uvicorn's ``--workers``/``--reload`` bind in the parent and
    listen only once the app has started).
    """
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            fds = [int(name) for name in os.listdir(folder)]
            break
        except (OSError, ValueError):
            continue
    else:
        return None
    found = []
    for fd in fds:
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
                continue
            address = sock.getsockname()
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                if not address or (sock.family != socket.AF_UNIX and address[1] == 0):
                    continue  # not bound: a socketpair, a client before connect
                try:
                    sock.getpeername()
                    continue  # connected: a client, or an accepted connection
                except OSError:
                    pass
            found.append((sock.family, address))
        except OSError:
            continue
        finally:
            sock.close()
    return found


def describe(addresses: list[tuple[int, Any]]) -> str:
    parts = []
    for family, address in addresses:
        if family == socket.AF_UNIX:
            parts.append(f"unix:{address if isinstance(address, str) else address!r}")
        elif family == socket.AF_INET6:
            parts.append(f"[{address[0]}]:{address[1]}")
        else:
            parts.append(f"{address[0]}:{address[1]}")
    return ", ".join(sorted(set(parts))) or "(no socket found)"


def loopback_only(addresses: Optional[list[tuple[int, Any]]]) -> bool:
    """True when every server socket is on a loopback address (a unix socket may be proxied: not loopback)."""
    if not addresses:
        return False
    for family, address in addresses:
        if family == socket.AF_UNIX:
            return False
        ip = ipaddress.ip_address(address[0].split("%", 1)[0])
        mapped = getattr(ip, "ipv4_mapped", None)
        if not (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
            return False
    return True


def override_given(environ: Optional[dict[str, str]] = None) -> bool:
    return (environ if environ is not None else os.environ).get(ALLOW_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Verdict:
    refused: bool
    lines: list[tuple[int, str, dict]]
    """What to log: (level, message, fields)."""


def decide(findings: list[Finding], addresses: Optional[list[tuple[int, Any]]], allow: bool) -> Verdict:
    """Warnings on loopback; errors and a refusal on any other address, unless ``allow``."""
    local = loopback_only(addresses)
    where = describe(addresses or [])
    found = [f for f in findings if local is False or not f.public_only]
    lines: list[tuple[int, str, dict]] = []
    if allow:
        lines.append((logging.WARNING, f"{ALLOW_ENV} is set: insecure settings never stop this gateway (listening on {where})",
                      {"listen": where, "insecure_settings": len(found)}))
    refused = bool(found) and not local and not allow
    level = logging.ERROR if refused else logging.WARNING
    for finding in found:
        lines.append((level, finding.line(), {"key": finding.key, "fix": finding.fix, "listen": where}))
    if not found:
        return Verdict(False, lines)
    if refused:
        scope = "an address it cannot see" if not addresses else where
        lines.append((logging.ERROR,
                      f"refusing to serve on {scope}: {len(found)} insecure settings (above); fix them, or set "
                      f"{ALLOW_ENV}=1 (stackgate run --allow-insecure) to serve anyway",
                      {"listen": where, "insecure_settings": len(found)}))
    elif local:
        lines.append((logging.WARNING,
                      f"{len(found)} insecure settings (above) are allowed on loopback ({where}) only: "
                      f"on any other address the gateway refuses to serve",
                      {"listen": where, "insecure_settings": len(found)}))
    return Verdict(refused, lines)


def _stop_process() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class Guard:
    """Wraps the gateway for a server: runs the checks at startup, holds requests until they are settled.

    Once the checks pass, a request costs one attribute read here.
    """

    def __init__(self, app: Any, config: Config, environ: Optional[dict[str, str]] = None,
                 stop: Callable[[], None] = _stop_process, bind_wait: float = BIND_WAIT,
                 addresses: Callable[[], Optional[list[tuple[int, Any]]]] = server_addresses,
                 exit: Callable[[int], None] = os._exit, backends: Optional[dict[str, Any]] = None) -> None:
        self.app = app
        self.backends = backends if backends is not None else getattr(app, "backends", {})
        self.exit = exit
        self.config = config
        self.allow = override_given(environ)
        self.stop = stop
        self.addresses = addresses
        self.bind_wait = bind_wait
        self.findings: Optional[list[Finding]] = None  # computed at startup (or at the first request)
        self.held = True  # until the checks pass
        self.refused = False
        self._watch: Optional[asyncio.Task] = None

    # checks

    def _collect(self) -> None:
        if self.findings is None:
            self.findings = config_findings(self.config) + django_findings(
                self.backends, getattr(self.config.gateway, "allowed_hosts", None) or ()
            )

    def settle(self, addresses: Optional[list[tuple[int, Any]]]) -> bool:
        """Decide on the addresses found, log it, and return whether the gateway may serve."""
        self._collect()
        verdict = decide(self.findings or [], addresses, self.allow)
        for level, message, fields in verdict.lines:
            logger.log(level, message, extra=fields)
        self.refused = verdict.refused
        self.held = verdict.refused
        return not verdict.refused

    def _needs_address(self) -> bool:
        return bool(self.findings) or self.allow

    async def _wait_for_bind(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.bind_wait
        while self.held and not self.refused:
            addresses = self.addresses()
            if addresses or addresses is None or loop.time() >= deadline:
                if self.held and not self.refused and not self.settle(addresses):
                    self.stop()
                return
            await asyncio.sleep(_POLL)

    # ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if self.held and not self._admit():
            if scope["type"] == "http":
                await send_error(send, 503, "shutting_down", "The gateway is shutting down; retry.", None,
                                 [(b"retry-after", b"1"), (b"connection", b"close")])
            else:
                await send({"type": "websocket.close", "code": 1013})
            return
        await self.app(scope, receive, send)

    def _admit(self) -> bool:
        """A request while the checks are open: it came through a server socket, so settle them now."""
        if self.refused:
            return False
        self._collect()
        if not self._needs_address():
            self.held = False
            return True
        if not self.settle(self.addresses()):
            self.stop()
            return False
        return True

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        injected: list[dict] = []
        refusal: list[str] = []

        async def inner_receive() -> dict:
            if injected:
                return injected.pop(0)
            return await receive()

        async def inner_send(message: dict) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                self._collect()
                if not self._needs_address():
                    self.held = False
                else:
                    addresses = self.addresses()
                    if addresses:
                        if not self.settle(addresses):
                            # Shut what started down before the server hears of the failure.
                            refusal.append(f"refusing to serve: {len(self.findings or [])} insecure settings (logged above)")
                            injected.append({"type": "lifespan.shutdown"})
                            return
                    else:  # the server binds after the startup: watch for its socket
                        self._watch = asyncio.ensure_future(self._wait_for_bind())
            elif kind == "lifespan.shutdown.complete":
                if self._watch is not None:
                    self._watch.cancel()
                if refusal:
                    await send({"type": "lifespan.startup.failed", "message": refusal[0]})
                    return
                if self.refused:  # refused after the server bound: it has shut down; exit as a failed start
                    await send(message)
                    logs.flush()
                    for stream in (sys.stdout, sys.stderr):
                        stream.flush()
                    self.exit(EXIT_REFUSED)
                    return
            await send(message)

        await self.app(scope, inner_receive, inner_send)


def guard(app: Any, config: Config) -> Any:
    """``app`` with the bootstrap checks, for a server process (``gateway.asgi``).

    A gateway (``create_app``) gets them as its outermost layer and stays the
    Starlette app it is; any other ASGI app is wrapped.
    """
    wrap_outside = getattr(app, "wrap_outside", None)
    if wrap_outside is not None:
        wrap_outside(lambda inner: Guard(inner, config, backends=app.backends))
        return app
    return Guard(app, config)
