"""Keep-alive connections evened out over the workers (gateway/edge/balance.py)."""

from __future__ import annotations

from gateway.edge.balance import INTERVAL, STOPPED, Balance, Loads


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def worker(loads: Loads, index: int, connections: int, clock: Clock) -> Balance:
    balance = Balance(loads, index, clock)
    loads[index] = 0
    for _ in range(connections):
        balance.opened()
    return balance


def test_a_worker_two_connections_over_the_other_sheds_one():
    loads, clock = Loads(2), Clock()
    heavy, light = worker(loads, 0, 5, clock), worker(loads, 1, 3, clock)
    assert heavy.over() and not light.over()


def test_one_over_is_left_alone_moving_it_would_only_swap_sides():
    loads, clock = Loads(2), Clock()
    heavy = worker(loads, 0, 5, clock)
    worker(loads, 1, 4, clock)
    assert not heavy.over()


def test_one_connection_at_a_time_and_no_faster_than_the_interval():
    loads, clock = Loads(2), Clock()
    heavy = worker(loads, 0, 8, clock)
    worker(loads, 1, 0, clock)
    first, other = object(), object()
    heavy.shed(first)
    assert not heavy.over(), "the shed connection has not closed yet"
    heavy.closed(other)
    assert not heavy.over(), "another connection closing is not the shed one"
    heavy.closed(first)
    assert loads[0] == 6
    assert not heavy.over(), "too soon after the last one"
    clock.now += INTERVAL
    assert heavy.over()


def test_a_large_pool_tolerates_a_small_share_of_unevenness():
    loads, clock = Loads(2), Clock()
    heavy = worker(loads, 0, 510, clock)
    worker(loads, 1, 490, clock)
    assert not heavy.over(), "20 of 510 is under 5 %: reconnecting would cost more than it evens"
    for _ in range(6):
        heavy.opened()
    assert heavy.over()


def test_a_worker_that_does_not_serve_is_not_counted():
    loads, clock = Loads(3), Clock()
    heavy = worker(loads, 0, 6, clock)
    worker(loads, 1, 6, clock)
    assert loads[2] == STOPPED
    assert not heavy.over(), "slot 2 has no worker (not started, or gone)"
    worker(loads, 2, 0, clock)
    assert heavy.over(), "a replacement worker with no connection takes its share"


def test_a_single_worker_never_sheds():
    loads, clock = Loads(1), Clock()
    assert not worker(loads, 0, 50, clock).over()
