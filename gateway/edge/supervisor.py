"""``stackgate run --workers N``: uvicorn's supervisor, with four changes.

- One ``SO_REUSEPORT`` listening socket per worker, all kept open here, so a
  replaced worker loses no queued connection (``gateway.edge.balance`` evens
  out what the kernel's hash leaves uneven).
- SIGHUP reloads each worker's config in place, checked as with one worker,
  instead of replacing the workers (which would skip the check and drop
  in-memory throttle counters).
- SIGUSR2 (``stackgate restart``) replaces the workers one at a time: the
  config is checked first, a new worker must be ready before the old one
  drains; progress in ``shared_status.STATUS``, shown at ``/_stackgate/status``.
- Workers are forked from a supervisor that imported the gateway and the
  config's apps (a Django's URLconf too) and froze that heap (``_preload``), sharing its pages
  copy-on-write; nothing that runs (threads, loops, connections) starts
  before the fork, and migrations run in a short-lived forked child. A
  rolling restart spawns fresh interpreters, so that it applies new code.
"""
# Why a socket per worker, and the pre-fork (measured): docs/performance.md#experiments-kept-and-dropped,
# docs/performance.md#memory

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from uvicorn._subprocess import subprocess_started
from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.server import Server
from uvicorn.supervisors.multiprocess import SIGNALS, Multiprocess, Process

from gateway.edge import balance, heap, shared_status
from gateway.edge.shared_status import SharedStatus

logger = logging.getLogger("uvicorn.error")

RESTART_SIGNAL = signal.SIGUSR2
"""Sent to the supervisor (``stackgate restart``): replace the workers one at a time."""
READY_TIMEOUT = 120.0
"""Seconds a new worker may take to import the stacks and start serving before a restart gives up."""
STOP_SLACK = 30.0
"""Seconds beyond its graceful timeouts a draining worker may take to exit before it is killed."""
_FORK = multiprocessing.get_context("fork")
"""Workers, and the memory they share with the supervisor: forked (no resource tracker; ``preload``)."""
_SPAWN = multiprocessing.get_context("spawn")
"""Workers of a rolling restart: fresh interpreters, which import the code anew."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def listening_sockets(host: str, port: int, count: int, backlog: int = 2048) -> list[socket.socket]:
    """``count`` sockets listening on ``host:port`` with ``SO_REUSEPORT`` (port 0: one free port for all).

    They listen before any worker starts, so that connections made while a
    worker is still loading wait in its queue instead of all going to the
    worker that was ready first.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        _refuse_a_taken_port(family, host, port)
    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError:
            for other in (*sockets, sock):
                other.close()
            raise
        sock.listen(backlog)
        port = sock.getsockname()[1]
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def _refuse_a_taken_port(family: socket.AddressFamily, host: str, port: int) -> None:
    """Raise ``OSError`` (address in use) when another socket listens on ``host:port``.

    ``SO_REUSEPORT`` lets any process of the same user bind a port that has such sockets, and the
    kernel then splits the connections between the two servers: a second ``stackgate run`` on the
    port would serve half of the first one's clients, silently. A socket without the option cannot
    bind it while the other listens, so one is bound first, and closed.
    """
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        probe.bind((host, port))
    finally:
        probe.close()


class WorkerServer(Server):
    """uvicorn's server, which drains before its shutdown when the supervisor replaces it.

    Uses uvicorn internals, kept here: ``servers`` (the listeners),
    ``server_state`` (its connections and the headers every response gets)
    and each connection's ``cycle`` (its request in progress);
    tests/e2e/test_workers_restart.py fails if one of them changes.
    """

    def __init__(self, config: Config, draining: Any) -> None:
        super().__init__(config)
        self.draining = draining

    async def shutdown(self, sockets: Optional[list[socket.socket]] = None) -> None:
        if self.draining.value:
            await self.drain()
        await super().shutdown(sockets)

    async def drain(self) -> None:
        """Accept nothing more, answer every further request with ``Connection: close`` (so the
        client reconnects, to the new worker), and wait until the connections have closed."""
        for server in self.servers:
            server.close()  # this process's copy only: the supervisor and the new worker keep the socket
        state = self.server_state
        connections = len(state.connections)
        state.default_headers = [*state.default_headers, (b"connection", b"close")]  # for every request from now on
        for connection in list(state.connections):
            cycle = getattr(connection, "cycle", None)
            if cycle is not None and not cycle.response_started:
                cycle.keep_alive = False  # began before: its head is not written yet, so it says close
        logger.info(f"Draining {connections} connection(s) before stopping.")
        timeout = self.config.timeout_graceful_shutdown
        deadline = time.monotonic() + (timeout if timeout is not None else STOP_SLACK)
        while state.connections and time.monotonic() < deadline and not self.force_exit:
            await asyncio.sleep(0.05)


class Worker(Process):
    def __init__(self, config: Config, sockets: list[socket.socket], loads: balance.Loads, slot: int, status: SharedStatus,
                 fork: bool = True) -> None:
        self.loads = loads
        self.slot = slot
        self.status = status
        self.draining = _FORK.RawValue("b", 0)
        self._worker_server: Optional[WorkerServer] = None
        super().__init__(config, sockets)
        if fork:  # uvicorn's Process spawns: the same start, forked from the loaded supervisor
            self.process = _FORK.Process(
                target=subprocess_started, kwargs={"config": config, "target": self.target, "sockets": sockets, "stdin_fileno": None}
            )

    @property
    def server(self) -> Server:
        if self._worker_server is None:
            self._worker_server = WorkerServer(self.config, self.draining)
        return self._worker_server

    def target(self, sockets: Optional[list[socket.socket]] = None) -> None:  # pragma: no cover - in the worker
        for signum in SIGNALS:  # forked: the supervisor's handlers (they queue for its loop) are not the worker's
            signal.signal(signum, signal.SIG_DFL)
        logging.getLogger("stackgate").handlers[:] = []  # set up anew (its flush thread did not survive the fork)
        # Until the worker's reloader takes SIGHUP over (in its lifespan), a SIGHUP sent to it
        # directly (``pkill -HUP``) must not end it while it imports the stacks; nor SIGUSR2.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(RESTART_SIGNAL, signal.SIG_IGN)
        shared_status.STATUS = self.status
        balance.install(self.loads, self.slot)
        try:
            super().target(sockets)
        finally:
            from gateway import logs

            logs.flush()  # a forked process ends with os._exit: no atexit handler writes what is buffered

    def drain(self) -> None:
        """Stop after the connections in progress (``WorkerServer.drain``), not at once."""
        self.draining.value = 1
        self.terminate()


class Supervisor(Multiprocess):
    """Worker ``i`` always serves ``sockets[i]`` and is replaced on the same socket (when it dies,
    and on SIGUSR2). A worker publishes its connections in its own slot of ``loads``: two per
    socket, so that a replacement and the worker it replaces are counted apart."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets=sockets)
        self.loads = balance.Loads(2 * self.processes_num)
        self.slots = list(range(self.processes_num))
        self.status = SharedStatus()
        self.generation = 1
        self.restarting = False
        self.last_restart: Optional[dict[str, Any]] = None

    def spawn(self, index: int, slot: Optional[int] = None, fork: bool = True) -> Worker:
        process = Worker(self.config, [self.sockets[index]], self.loads, self.slots[index] if slot is None else slot, self.status, fork)
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self.spawn(index) for index in range(self.processes_num)]
        self.publish()

    def publish(self) -> None:
        self.status.publish(
            {
                "supervisor": os.getpid(),
                "count": self.processes_num,
                "pids": [process.pid for process in self.processes],
                "generation": self.generation,
                "restarting": self.restarting,
                "restart_signal": RESTART_SIGNAL.name,
                "last_restart": self.last_restart,
            }
        )

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            self.loads[self.slots[index]] = balance.STOPPED  # its connections are gone with it
            if process.exitcode == STARTUP_FAILURE:
                logger.error(f"Child process [{process.pid}] failed to start, stopping the parent process.")
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info(f"Child process [{process.pid}] died")
            self.processes[index] = self.spawn(index)
            self.publish()

    def handle_hup(self) -> None:
        logger.info("Received SIGHUP, reloading the config of every worker.")
        for process in self.processes:
            # A worker still starting has no SIGHUP handler yet (the signal would kill it), and
            # it reads the config file as it starts anyway: only started workers are signalled.
            if process.pid is not None and process.is_ready(timeout=1):
                os.kill(process.pid, signal.SIGHUP)

    def handle_usr2(self) -> None:
        logger.info(f"Received {RESTART_SIGNAL.name}, replacing the workers one at a time.")
        self.rolling_restart()

    def rolling_restart(self) -> None:
        """Replace each worker in turn: its replacement serves before it drains and stops."""
        started = _now()
        problems = self._config_problems()
        if problems:
            self._restart_done(started, False, "not restarted: the config file has problems; the workers keep serving", problems)
            return
        self.restarting = True
        self.publish()
        replaced = 0
        try:
            for index in range(len(self.processes)):
                message = self._replace(index)
                if message is not None:
                    self._restart_done(started, False, f"stopped after {replaced} of {len(self.processes)} workers: {message}")
                    return
                replaced += 1
                self.publish()
        finally:
            self.restarting = False
        self.generation += 1
        self._restart_done(started, True, f"replaced {replaced} workers")

    def _replace(self, index: int) -> Optional[str]:
        """Replace worker ``index``; None when done, else why not (the old worker keeps serving)."""
        old = self.processes[index]
        slot = self.slots[index] + self.processes_num if self.slots[index] < self.processes_num else self.slots[index] - self.processes_num
        new = self.spawn(index, slot, fork=False)  # a fresh interpreter: new code applies
        deadline = time.monotonic() + READY_TIMEOUT
        while not new.is_ready(timeout=1):
            if self._stop_requested() or not new.process.is_alive() or time.monotonic() > deadline:
                new.kill()
                new.join()
                self.loads[slot] = balance.STOPPED
                if self._stop_requested():
                    return "the supervisor is stopping"
                return f"the new worker [{new.pid}] did not start serving (exit code {new.exitcode}); worker [{old.pid}] keeps serving"
            time.sleep(0.1)
        logger.info(f"Worker [{new.pid}] serves; draining worker [{old.pid}].")
        self.processes[index], self.slots[index] = new, slot
        old_slot = slot + self.processes_num if slot < self.processes_num else slot - self.processes_num
        old.drain()
        # The drain, then uvicorn's own shutdown, may each take up to --graceful-timeout.
        stop_by = time.monotonic() + 2 * (self.config.timeout_graceful_shutdown or 0) + STOP_SLACK
        while old.process.is_alive() and time.monotonic() < stop_by:
            old.process.join(0.1)
        if old.process.is_alive():
            logger.warning(f"Worker [{old.pid}] did not stop in time; killing it.")
            old.kill()
        old.process.join()
        self.loads[old_slot] = balance.STOPPED
        return None

    def _stop_requested(self) -> bool:
        return any(sig in (signal.SIGINT, signal.SIGTERM) for sig in self.signal_queue)

    def _config_problems(self) -> list[str]:
        """What a new worker would refuse in the config file (it reads the same one)."""
        from gateway.config import ConfigError, load_config

        try:
            load_config()
        except ConfigError as exc:
            return exc.problems
        return []

    def _restart_done(self, started: str, ok: bool, message: str, problems: Optional[list[str]] = None) -> None:
        self.last_restart = {"ok": ok, "started": started, "finished": _now(), "message": message, "problems": problems or []}
        self.publish()
        if ok:
            logger.info(f"Rolling restart: {message}.", extra={"generation": self.generation})
        else:
            logger.error(f"Rolling restart {message}.", extra={"problems": problems or []})

    def handle_ttin(self) -> None:
        logger.warning("SIGTTIN ignored: the worker count is fixed by --workers (one socket each).")

    def handle_ttou(self) -> None:
        logger.warning("SIGTTOU ignored: the worker count is fixed by --workers (one socket each).")


@contextlib.contextmanager
def pid_file(path: Optional[str]) -> Iterator[None]:
    """``stackgate run --pid-file``: this process's id in ``path`` while it serves.

    Removed at the end, also when one worker ends itself with the signal it
    received (uvicorn re-raises it once it has stopped): the signal's handler
    here removes the file first.
    """
    if not path:
        yield
        return
    target = Path(path)
    target.write_text(f"{os.getpid()}\n")

    def remove_then_end(signum: int, frame: Any) -> None:
        target.unlink(missing_ok=True)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, remove_then_end)
    try:
        yield
    finally:
        target.unlink(missing_ok=True)


def restart_unavailable() -> None:
    """One worker, no supervisor: SIGUSR2 is ignored (by default it would end the process), and
    ``stackgate restart`` sees that it is and says why."""
    signal.signal(RESTART_SIGNAL, signal.SIG_IGN)


def _migrate() -> None:  # pragma: no cover - in the child
    from gateway.config import load_config
    from gateway.migrations import migrate_before_serving

    try:
        migrate_before_serving(load_config())
    except BaseException as exc:  # one JSON line, not a traceback
        logger.error(f"The database migrations failed: {type(exc).__name__}: {exc}")
        logging.shutdown()
        os._exit(1)


def _start_migrations() -> multiprocessing.process.BaseProcess:
    """Apply the config's Django migrations (``migrate = true``) in a child forked from the loading supervisor:
    the supervisor never sets Django up (nor opens the database) for them, and the child starts with
    what the preload imported so far. ``_finish_migrations`` waits for it."""
    child = _FORK.Process(target=_migrate, name="stackgate-migrate")
    child.start()
    return child


def _finish_migrations(child: multiprocessing.process.BaseProcess) -> int:
    child.join()
    return child.exitcode or 0


def _preload(config: Config, modules: Sequence[str] = (), migrate: bool = False) -> Optional[multiprocessing.process.BaseProcess]:
    """Import, before forking the workers, what each would import: ``modules`` (the gateway),
    uvicorn's protocols, the config's in-process apps and a Django's URLconf; then freeze that heap
    (``heap.collect_from_here``).

    Only imports: the workers build the app themselves (``gateway.asgi``), and with it every
    thread, pool, event loop and connection. An app that fails to import here is left to the
    workers, which report it as they always have (and refuse to start).

    ``migrate``: the backend with ``migrate = true`` is imported first, and the migrations' child
    (``_start_migrations``) forked as soon as it is, so that it runs on another core while the rest
    loads; returned, started, for the caller to wait on before any worker starts.
    """
    from gateway.backends.base import load_app
    from gateway.config import ConfigError, load_config
    from uvicorn.importer import import_from_string

    for module in modules:
        importlib.import_module(module)
    _metrics_per_process()
    if isinstance(config.http, str):
        with contextlib.suppress(Exception):
            import_from_string(config.http)
    try:
        loaded = load_config()
    except ConfigError:
        loaded = None
    if loaded is not None:
        from gateway import telemetry

        telemetry.install(loaded)  # [telemetry]: the stacks' instrumentation, before they are imported; no thread
    backends = list(loaded.backends.values()) if loaded is not None else []
    backends.sort(key=lambda backend: not getattr(backend, "migrate", False))  # stable: the config's order otherwise
    migration = None
    for backend in backends:
        if getattr(backend, "kind", None) in ("wsgi", "asgi"):
            try:
                load_app(backend.app)
            except (Exception, SystemExit):
                logger.debug(f"Preloading {backend.app} failed; the workers will report it.")
        if migrate and migration is None and getattr(backend, "migrate", False):
            migration = _start_migrations()
    if migrate and migration is None:  # no config to read here: the child reports why
        migration = _start_migrations()
    _import_django_urlconf()
    if "django.db" in sys.modules:  # a connection opened while importing must not be shared by the workers
        sys.modules["django.db"].connections.close_all()
    heap.collect_from_here()  # no collection first: 0.1-0.2 s of start for the few import-time cycles it would free
    return migration


def _import_django_urlconf() -> None:
    """Import a loaded Django's URLconf, and with it the views and what they import (DRF, its renderers,
    an OpenAPI generator...): Django imports it on a worker's first request, where each worker would
    hold a copy of its own. Only imports; one that fails is left to the requests, which report it."""
    django = sys.modules.get("django.apps")
    if django is None or not django.apps.ready:
        return
    from django.urls import get_resolver

    try:
        get_resolver().url_patterns
    except Exception as exc:
        logger.debug(f"Preloading Django's URLconf failed; the first request will report it: {exc!r}")


def _metrics_per_process() -> None:
    """``gateway.metrics`` as a worker imports it: ``stackgate run`` sets ``PROMETHEUS_MULTIPROC_DIR``
    after the package (and so its metrics) was imported, and forked workers would keep in-process
    values that no other worker sees. Define them again, now writing to that folder."""

    from prometheus_client import REGISTRY, values
    from prometheus_client.metrics import MetricWrapperBase

    from gateway import metrics

    if metrics.MULTIPROCESS or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    values.ValueClass = values.get_value_class()
    for metric in [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]:
        REGISTRY.unregister(metric)
    importlib.reload(metrics)


def serve(config: Config, migrate: bool = False, preload: Sequence[str] = ()) -> int:
    """Run ``config.workers`` workers of ``config`` under the supervisor, until SIGINT/SIGTERM.

    ``migrate``: apply the migrations of the backend with ``migrate = true`` first (``_start_migrations``). Returns
    ``STARTUP_FAILURE`` when a worker failed to start (the bootstrap checks refused) or the
    migrations failed, else 0.
    """
    try:
        sockets = listening_sockets(config.host, config.port, config.workers, config.backlog)
    except OSError as exc:  # one JSON line, as with one worker (uvicorn's), not a traceback
        logger.error(f"Cannot listen on {config.host}:{config.port}: {exc.strerror or exc} "
                     "(is another server, another stackgate, on that port?)")
        return STARTUP_FAILURE
    migration = _preload(config, preload, migrate=migrate)
    if migration is not None and _finish_migrations(migration) != 0:
        logger.error("Not starting the workers: the database migrations failed.")
        for sock in sockets:
            sock.close()
        return STARTUP_FAILURE
    host = f"[{config.host}]" if ":" in config.host else config.host
    logger.info(f"Uvicorn running on http://{host}:{sockets[0].getsockname()[1]} (Press CTRL+C to quit)")
    try:
        supervisor = Supervisor(config, sockets=sockets)
        supervisor.run()
    finally:
        for sock in sockets:
            sock.close()
    return STARTUP_FAILURE if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes) else 0
