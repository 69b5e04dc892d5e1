"""``--workers N``: one listening socket, and connections spread evenly over the workers.

A keep-alive connection stays with the worker that accepted it, so an uneven
split lasts as long as the connections do. With a socket per worker
(``SO_REUSEPORT``) the kernel's hash put all 4 connections of a small pool on
one worker in one run of three here, which then served at half the req/s, and
split 64 connections up to 37/27; with one shared socket and nothing else, the
worker that wakes first drains the whole accept queue.

So the workers share one socket and each publishes how many connections it
holds (``Loads``: one slot per worker in shared memory). A worker that holds
more than the least loaded of the others leaves a queued connection to them:
it stops reading the socket for ``DEFER`` seconds and looks again. If the
others leave connections queued for ``TAKE_AFTER`` looks in a row (busy
warming up, stuck, dying), it takes them all, so the queue never waits on a
worker that does not accept. A worker that is still starting counts as
holding none, and its share waits for it, as it would in a queue of its own.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import multiprocessing
import select
import socket
from typing import Any, Callable, Optional

logger = logging.getLogger("uvicorn.error")

DEFER = 0.01
"""Seconds a worker over its share leaves a new connection to the others, before it looks again."""
TAKE_AFTER = 10
"""Looks in a row with connections still queued (0.1 s) after which this worker takes them all:
the others are not accepting (a worker busy warming up, stuck or dying). A socket per
worker would have left them queued for as long."""
RESOURCES_RETRY = 1.0
"""Seconds before accepting again after the process ran out of file descriptors (as asyncio does)."""

STOPPED = -1
"""A worker that does not serve: the others ignore it."""
STARTING = -2
"""A worker spawned that does not serve yet: it counts as holding no connection."""


class Loads:
    """Connections each worker holds (``STOPPED``, ``STARTING`` or a count), shared between processes."""

    def __init__(self, workers: int) -> None:
        self.slots = multiprocessing.get_context("spawn").RawArray("i", [STOPPED] * workers)

    def __setitem__(self, index: int, value: int) -> None:
        self.slots[index] = value

    def __getitem__(self, index: int) -> int:
        return self.slots[index]

    def least_other(self, index: int) -> tuple[Optional[int], bool]:
        """The fewest connections another live worker holds (None: no other), and whether one is starting."""
        least: Optional[int] = None
        starting = False
        for i, value in enumerate(self.slots):
            if i == index or value == STOPPED:
                continue
            if value == STARTING:
                starting, value = True, 0
            least = value if least is None else min(least, value)
        return least, starting


class Connections(set):
    """uvicorn's ``ServerState.connections``, counting the connections that closed.

    A worker's load is what it accepted less what closed: counted at the accept,
    not when uvicorn's protocol adds itself a loop turn later, so that the
    others never see a count that is behind (or, with those being made counted
    too, ahead).
    """

    closed = 0
    changed: Optional[Callable[[], None]] = None

    def discard(self, item: Any) -> None:
        if item in self:  # uvicorn discards a connection on several paths; it closes once
            super().discard(item)
            self.closed += 1
            if self.changed is not None:
                self.changed()


class BalancedListener:
    """Accepts from the shared socket for one worker; kept in uvicorn's ``Server.servers``."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        connections: Connections,
        loads: Loads,
        index: int,
        ssl: Any = None,
    ) -> None:
        self.sock = sock
        self.protocol_factory = protocol_factory
        self.connections = connections  # this worker's open connections
        connections.changed = self._publish
        self.loads = loads
        self.index = index
        self.ssl = ssl
        self.loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task] = set()  # accepted, transport still being made
        self._accepted = 0
        self._reading = False
        self._looks = 0  # looks in a row that found a connection still queued
        self._timer: Optional[asyncio.TimerHandle] = None
        self._closed = False
        sock.setblocking(False)
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)

    def start(self) -> None:
        self._publish()
        self._read()
        self._accept()

    @property
    def held(self) -> int:
        return self._accepted - self.connections.closed

    def _publish(self) -> None:
        if not self._closed:
            self.loads[self.index] = self.held

    def _read(self) -> None:
        if not self._reading and not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self._reading = True

    def _pause(self, seconds: float, then: Callable[[], None]) -> None:
        if self._reading:
            self.loop.remove_reader(self.sock.fileno())
            self._reading = False
        self._timer = self.loop.call_later(seconds, then)

    def _leave_to_others(self) -> bool:
        """Whether the next connection should go to another worker: this one holds more than one of them."""
        least, starting = self.loads.least_other(self.index)
        if least is None or self.held <= least:
            self._looks = 0
            return False
        # Unless the others have left connections queued for TAKE_AFTER looks, and none of
        # them is starting: a starting worker's share waits for it, as in a queue of its own.
        return self._looks < TAKE_AFTER or starting

    def _accept(self) -> None:
        while not self._closed:
            if self._leave_to_others():
                if self._queued():  # for a moment
                    self._pause(DEFER, self._retry)
                else:  # keep reading, and decide when one comes
                    self._looks = 0
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                self._looks = 0
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    logger.error("accepting connections: %s; trying again in %g s", exc, RESOURCES_RETRY)
                    self._pause(RESOURCES_RETRY, self._retry)
                    return
                continue  # the client gave up before the accept (ECONNABORTED and the like)
            self._serve(conn)

    def _queued(self) -> bool:
        return bool(self._poll.poll(0))

    def _retry(self) -> None:
        self._timer = None
        self._looks += self._queued()
        self._read()
        self._accept()

    def _serve(self, conn: socket.socket) -> None:
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._accepted += 1
        self._publish()
        task = self.loop.create_task(self._connect(conn))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.protocol_factory, conn, ssl=self.ssl)
        except Exception as exc:  # the peer reset it already, or the TLS handshake failed
            logger.debug("connection dropped before it was served: %r", exc)
            conn.close()
            self._accepted -= 1
            self._publish()

    def close(self) -> None:
        """Stop accepting (uvicorn's shutdown); the open connections finish on their own."""
        if self._closed:
            return
        if self._reading:
            self.loop.remove_reader(self.sock.fileno())
            self._reading = False
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.loads[self.index] = STOPPED
        self.sock.close()  # this worker's descriptor: the supervisor keeps the socket listening

    async def wait_closed(self) -> None:
        return None
