"""gateway/listener.py: a worker takes its share of the shared socket's connections, and never strands one."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway import listener
from gateway.listener import STARTING, STOPPED, BalancedListener, Connections, Loads


class Held(asyncio.Protocol):
    """A connection the worker holds until the test ends."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)


@pytest.fixture
def shared_socket():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock
    sock.close()


async def connect(port: int, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.setblocking(False)
        await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", port))
        clients.append(client)
    return clients


async def settle(seconds: float = 0.15) -> None:
    await asyncio.sleep(seconds)


def start(sock: socket.socket, loads: Loads, index: int = 0) -> tuple[BalancedListener, Connections]:
    connections = Connections()
    worker = BalancedListener(sock.dup(), lambda: Held(connections), connections, loads, index)
    worker.start()
    return worker, connections


def test_least_other_ignores_stopped_workers_and_counts_starting_ones_as_empty():
    loads = Loads(4)
    assert loads.least_other(0) == (None, False)
    loads[1], loads[2], loads[3] = 5, STARTING, STOPPED
    assert loads.least_other(0) == (0, True)
    loads[2] = 7
    assert loads.least_other(0) == (5, False)
    assert loads.least_other(1) == (7, False)


async def test_alone_a_worker_takes_every_connection(shared_socket):
    loads = Loads(2)  # the other worker has stopped
    worker, connections = start(shared_socket, loads)
    clients = await connect(shared_socket.getsockname()[1], 5)
    await settle()
    assert len(connections) == 5 and loads[0] == 5
    worker.close()
    assert loads[0] == STOPPED
    for client in clients:
        client.close()


async def test_two_workers_split_connections_evenly(shared_socket):
    loads = Loads(2)
    first, first_held = start(shared_socket, loads, 0)
    second, second_held = start(shared_socket, loads, 1)
    clients = await connect(shared_socket.getsockname()[1], 10)
    await settle()
    assert (len(first_held), len(second_held)) == (5, 5)
    assert (loads[0], loads[1]) == (5, 5)
    for client in clients[:4]:
        client.close()
    await settle()
    assert loads[0] + loads[1] == 6  # closes are published at once
    first.close()
    second.close()
    for client in clients[4:]:
        client.close()


async def test_a_connection_the_others_leave_is_taken_after_the_deferral(shared_socket, monkeypatch):
    """A worker that serves but does not accept (busy, stuck) never strands a connection in the queue."""
    monkeypatch.setattr(listener, "DEFER", 0.01)
    loads = Loads(2)
    loads[1] = 0  # serving, holds nothing, and never accepts
    worker, connections = start(shared_socket, loads)
    clients = await connect(shared_socket.getsockname()[1], 4)
    await settle(0.3)
    assert len(connections) == 4
    worker.close()
    for client in clients:
        client.close()


async def test_a_starting_worker_keeps_its_share_until_it_serves_or_stops(shared_socket, monkeypatch):
    monkeypatch.setattr(listener, "DEFER", 0.01)
    loads = Loads(2)
    loads[1] = STARTING
    worker, connections = start(shared_socket, loads)
    clients = await connect(shared_socket.getsockname()[1], 4)
    await settle(0.3)
    assert len(connections) == 1  # the rest waits for the worker that loads
    loads[1] = STOPPED  # it failed: the queue is this worker's
    await settle(0.3)
    assert len(connections) == 4
    worker.close()
    for client in clients:
        client.close()


async def test_closing_stops_accepting_and_leaves_the_shared_socket_listening(shared_socket):
    loads = Loads(1)
    worker, connections = start(shared_socket, loads)
    worker.close()
    await worker.wait_closed()
    clients = await connect(shared_socket.getsockname()[1], 1)  # queued on the socket the supervisor keeps
    await settle()
    assert len(connections) == 0
    taker, taken = start(shared_socket, loads)
    await settle()
    assert len(taken) == 1
    taker.close()
    clients[0].close()
