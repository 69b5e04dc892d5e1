"""``stackgate run --workers N``: uvicorn's supervisor, with two changes.

- **One listening socket per worker**, all bound to the same address with
  ``SO_REUSEPORT``: the kernel spreads new connections over the workers. With
  uvicorn's one shared socket, the worker that wakes first drains the whole
  accept queue, and a burst of connections (a client pool opening at once)
  can land on one worker and leave the other cores idle: measured here, a
  Django route at 16 connections ran at half speed in two of three runs. The
  supervisor keeps every socket open, so a worker that dies and is replaced
  loses no queued connection. The hash can split a keep-alive pool unevenly
  for as long as it lives; each worker publishes its connections, and one
  holding more than its share asks a client to reconnect
  (``gateway.balance``).
- **SIGHUP reloads each worker's config in place** (the same checked reload
  as with one worker) instead of replacing every worker, which would skip
  the check, never report an invalid file at ``/_stackgate/status`` and drop
  in-memory throttle counters.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from typing import Optional

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from gateway import balance

logger = logging.getLogger("uvicorn.error")


def listening_sockets(host: str, port: int, count: int, backlog: int = 2048) -> list[socket.socket]:
    """``count`` sockets listening on ``host:port`` with ``SO_REUSEPORT`` (port 0: one free port for all).

    They listen before any worker starts, so that connections made while a
    worker is still loading wait in its queue instead of all going to the
    worker that was ready first.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
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


class Worker(Process):
    def __init__(self, config: Config, sockets: list[socket.socket], loads: balance.Loads, index: int) -> None:
        self.loads = loads
        self.index = index
        super().__init__(config, sockets)

    def target(self, sockets: Optional[list[socket.socket]] = None) -> None:  # pragma: no cover - in the worker
        # Until the worker's reloader takes SIGHUP over (in its lifespan), a SIGHUP sent to it
        # directly (``pkill -HUP``) must not end it while it imports the stacks.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        balance.install(self.loads, self.index)
        super().target(sockets)


class Supervisor(Multiprocess):
    """Worker ``i`` always serves ``sockets[i]``, publishes its connections in slot ``i`` of
    ``loads``, and is replaced on the same socket if it dies."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets=sockets)
        self.loads = balance.Loads(self.processes_num)

    def spawn(self, index: int) -> Process:
        process = Worker(self.config, [self.sockets[index]], self.loads, index)
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self.spawn(index) for index in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            self.loads[index] = balance.STOPPED  # its connections are gone with it
            if process.exitcode == STARTUP_FAILURE:
                logger.error(f"Child process [{process.pid}] failed to start, stopping the parent process.")
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info(f"Child process [{process.pid}] died")
            self.processes[index] = self.spawn(index)

    def handle_hup(self) -> None:
        logger.info("Received SIGHUP, reloading the config of every worker.")
        for process in self.processes:
            # A worker still starting has no SIGHUP handler yet (the signal would kill it), and
            # it reads the config file as it starts anyway: only started workers are signalled.
            if process.pid is not None and process.is_ready(timeout=1):
                os.kill(process.pid, signal.SIGHUP)

    def handle_ttin(self) -> None:
        logger.warning("SIGTTIN ignored: the worker count is fixed by --workers (one socket each).")

    def handle_ttou(self) -> None:
        logger.warning("SIGTTOU ignored: the worker count is fixed by --workers (one socket each).")


def serve(config: Config) -> int:
    """Run ``config.workers`` workers of ``config`` under the supervisor, until SIGINT/SIGTERM.

    Returns ``STARTUP_FAILURE`` when a worker failed to start (the bootstrap checks refused), else 0.
    """
    sockets = listening_sockets(config.host, config.port, config.workers, config.backlog)
    host = f"[{config.host}]" if ":" in config.host else config.host
    logger.info(f"Uvicorn running on http://{host}:{sockets[0].getsockname()[1]} (Press CTRL+C to quit)")
    try:
        supervisor = Supervisor(config, sockets=sockets)
        supervisor.run()
    finally:
        for sock in sockets:
            sock.close()
    return STARTUP_FAILURE if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes) else 0
