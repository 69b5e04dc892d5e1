"""``--workers N``: keep-alive connections kept evenly spread, by asking a client to reconnect.

Each worker publishes how many connections it holds (``Loads``: a slot per
worker in shared memory). One holding ``MARGIN`` more than the least loaded
other answers one request with ``Connection: close`` (never one with a body,
nor one another request is pipelined behind), at most one every ``INTERVAL``
seconds; the kernel hashes the reconnect anew. Each counts in
``stackgate_connections_rebalanced_total``.
"""
# Why (the kernel's hash splits a pool unevenly): docs/performance.md#spreading-connections-over-the-workers

from __future__ import annotations

import multiprocessing
import time
from typing import Any, Callable, Optional

from gateway import metrics

MARGIN = 2
"""Connections more than the least loaded other worker at which a worker sheds one (moving one
evens out a difference of 2; with 1 it would only swap which worker holds the extra one)."""
SHARE = 0.05
"""For large pools, the difference must also be this share of the worker's connections: 5 % of
churn-free unevenness costs less than reconnecting to remove it."""
INTERVAL = 0.05
"""Seconds between two connections a worker sheds."""

STOPPED = -1
"""A slot whose worker does not serve (not started, or gone): the others ignore it."""


class Loads:
    """Connections each worker holds (or ``STOPPED``), shared between the supervisor's processes."""

    def __init__(self, workers: int) -> None:
        self.slots = multiprocessing.get_context("fork").RawArray("i", [STOPPED] * workers)

    def __setitem__(self, index: int, value: int) -> None:
        self.slots[index] = value

    def __getitem__(self, index: int) -> int:
        return self.slots[index]

    def least_other(self, index: int) -> Optional[int]:
        """The fewest connections another serving worker holds (None: no other serves)."""
        least: Optional[int] = None
        for i, value in enumerate(self.slots):
            if i != index and value != STOPPED and (least is None or value < least):
                least = value
        return least


class Balance:
    """One worker's side: publish its connections, and say when one of them should go."""

    def __init__(self, loads: Loads, index: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.loads = loads
        self.index = index
        self.clock = clock
        self.connections = 0
        self.shedding: Any = None
        """The connection answered with ``Connection: close`` that has not closed yet."""
        self._next = 0.0

    def opened(self) -> None:
        self.connections += 1
        self.loads[self.index] = self.connections

    def closed(self, connection: Any) -> None:
        self.connections -= 1
        self.loads[self.index] = self.connections
        if connection is self.shedding:
            self.shedding = None
            metrics.REBALANCED.inc()

    def over(self) -> bool:
        """Whether this worker should shed a connection now (one at a time, ``INTERVAL`` apart)."""
        if self.shedding is not None:
            return False
        least = self.loads.least_other(self.index)
        if least is None:
            return False
        over = self.connections - least
        return over >= MARGIN and over >= SHARE * self.connections and self.clock() >= self._next

    def shed(self, connection: Any) -> None:
        """``connection``'s current request is answered with ``Connection: close``."""
        self.shedding = connection
        self._next = self.clock() + INTERVAL

    def unshed(self, connection: Any) -> None:
        """``connection`` keeps its request after all (another came in behind it, pipelined)."""
        if self.shedding is connection:
            self.shedding = None


CURRENT: Optional[Balance] = None
"""This worker's balance (``install``), or None: one worker, or the gateway run by another server."""


def install(loads: Loads, index: int) -> Balance:
    """In a worker, before it serves: its connections are published in slot ``index`` of ``loads``."""
    global CURRENT
    CURRENT = Balance(loads, index)
    loads[index] = 0
    return CURRENT
