"""``stackgate run --workers N``: uvicorn's supervisor, with two changes.

- **Connections spread evenly over the workers**: one listening socket, and a
  worker holding more connections than another leaves new ones to it
  (``gateway.listener``). With uvicorn's plain shared socket the worker that
  wakes first drains the whole accept queue (measured here: a Django route at
  16 connections ran at half speed in two of three runs); with a socket per
  worker (``SO_REUSEPORT``) the kernel's hash split 64 connections 37/27. The
  socket listens before the workers start, and connections made while they
  load wait for their share of them; the supervisor keeps it open, so a
  worker that dies loses no queued connection, and the others take the new
  ones until its replacement serves.
- **SIGHUP reloads each worker's config in place** (the same checked reload
  as with one worker) instead of replacing every worker, which would skip
  the check, never report an invalid file at ``/_stackgate/status`` and drop
  in-memory throttle counters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import Optional

import uvicorn
from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from gateway.listener import STARTING, STOPPED, BalancedListener, Connections, Loads

logger = logging.getLogger("uvicorn.error")


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The socket every worker accepts from, listening before any worker starts (port 0: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class BalancedServer(uvicorn.Server):
    """uvicorn's server, accepting through ``BalancedListener`` as worker ``index`` of ``loads``."""

    def __init__(self, config: Config, loads: Loads, index: int) -> None:
        super().__init__(config)
        self.loads = loads
        self.index = index
        self.server_state.connections = Connections()

    async def startup(self, sockets: Optional[list[socket.socket]] = None) -> None:  # pragma: no cover - in the worker
        await super().startup(sockets=[])  # the lifespan, and no server of uvicorn's
        config = self.config

        def create_protocol(_loop: Optional[asyncio.AbstractEventLoop] = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        for sock in sockets or []:
            listener = BalancedListener(sock, create_protocol, self.server_state.connections, self.loads, self.index, config.ssl)
            listener.start()
            self.servers.append(listener)  # type: ignore[arg-type]


class Worker(Process):
    def __init__(self, config: Config, sockets: list[socket.socket], loads: Loads, index: int) -> None:
        super().__init__(config, sockets)
        self.loads = loads
        self.index = index

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = BalancedServer(self.config, self.loads, self.index)
        return self._server

    def target(self, sockets: Optional[list[socket.socket]] = None) -> None:  # pragma: no cover - in the worker
        # Until the worker's reloader takes SIGHUP over (in its lifespan), a SIGHUP sent to it
        # directly (``pkill -HUP``) must not end it while it imports the stacks.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        super().target(sockets)


class Supervisor(Multiprocess):
    """Worker ``i`` publishes its connections in slot ``i`` of ``loads``, and is replaced if it dies."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets=sockets)
        self.loads = Loads(self.processes_num)

    def spawn(self, index: int) -> Process:
        process = Worker(self.config, self.sockets, self.loads, index)
        process.start()
        return process

    def init_processes(self) -> None:
        for index in range(self.processes_num):
            # A burst of connections made while the workers load waits for each one's share.
            self.loads[index] = STARTING
        self.processes = [self.spawn(index) for index in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error(f"Child process [{process.pid}] failed to start, stopping the parent process.")
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info(f"Child process [{process.pid}] died")
            # The others take every new connection until the replacement serves.
            self.loads[index] = STOPPED
            self.processes[index] = self.spawn(index)

    def handle_hup(self) -> None:
        logger.info("Received SIGHUP, reloading the config of every worker.")
        for process in self.processes:
            # A worker still starting has no SIGHUP handler yet (the signal would kill it), and
            # it reads the config file as it starts anyway: only started workers are signalled.
            if process.pid is not None and process.is_ready(timeout=1):
                os.kill(process.pid, signal.SIGHUP)

    def handle_ttin(self) -> None:
        logger.warning("SIGTTIN ignored: the worker count is fixed by --workers.")

    def handle_ttou(self) -> None:
        logger.warning("SIGTTOU ignored: the worker count is fixed by --workers.")


def serve(config: Config) -> None:
    """Run ``config.workers`` workers of ``config`` under the supervisor, until SIGINT/SIGTERM."""
    sock = listening_socket(config.host, config.port, config.backlog)
    host = f"[{config.host}]" if ":" in config.host else config.host
    logger.info(f"Uvicorn running on http://{host}:{sock.getsockname()[1]} (Press CTRL+C to quit)")
    try:
        Supervisor(config, sockets=[sock]).run()
    finally:
        sock.close()
