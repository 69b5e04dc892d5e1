"""The WSGI backends' thread pool: one call at a time until a call stalls, up to ``threads``."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gateway.backends.pool import Gate, HotPool


class Calls:
    """Records which calls ran, on which thread, how many at once; each may be held."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.most = 0
        self.ran: list[tuple[str, str]] = []
        self.started: dict[str, float] = {}
        self.gates: dict[str, threading.Event] = {}

    def hold(self, name: str) -> threading.Event:
        self.gates[name] = threading.Event()
        return self.gates[name]

    def __call__(self, name: str, seconds: float = 0.0) -> None:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.started[name] = time.monotonic()
            self.ran.append((name, threading.current_thread().name))
        try:
            if name in self.gates:
                assert self.gates[name].wait(10), f"{name} was never released"
            elif seconds:
                time.sleep(seconds)
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture
def calls():
    recorded = Calls()
    yield recorded
    for gate in recorded.gates.values():  # nothing stays held after a test, failed or not
        gate.set()


@pytest.fixture
def make_pool():
    pools: list[HotPool] = []

    def make(threads: int, overlap_after: float, gate: Gate | None = None, name: str = "t") -> HotPool:
        pools.append(HotPool(name, threads=threads, overlap_after=overlap_after, gate=gate))
        return pools[-1]

    yield make
    for pool in pools:
        pool.shutdown()


def submit(pool: HotPool, calls: Calls, name: str, seconds: float = 0.0):
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    ticket = pool.submit(calls, (name, seconds), lambda error: done.set_result(error))
    return ticket, done


async def test_short_calls_run_one_at_a_time_on_one_hot_thread(make_pool, calls):
    pool = make_pool(threads=4, overlap_after=5.0)
    results = await asyncio.gather(*(submit(pool, calls, f"c{i}", 0.002)[1] for i in range(30)))
    assert results == [None] * 30
    assert calls.most == 1
    assert [name for name, _ in calls.ran] == [f"c{i}" for i in range(30)]  # first come, first served
    assert len({thread for _, thread in calls.ran}) == 1


async def test_a_stalled_call_lets_the_next_start_beside_it(make_pool, calls):
    pool = make_pool(threads=4, overlap_after=0.05)
    release = calls.hold("slow")
    _, slow = submit(pool, calls, "slow")
    _, quick = submit(pool, calls, "quick")
    assert await asyncio.wait_for(quick, 5) is None  # while "slow" still runs
    assert not slow.done()
    waited = calls.started["quick"] - calls.started["slow"]
    assert 0.04 <= waited < 1.0
    release.set()
    assert await asyncio.wait_for(slow, 5) is None


async def test_every_stalled_call_opens_one_more_thread_up_to_threads(make_pool, calls):
    pool = make_pool(threads=3, overlap_after=0.02)
    releases = [calls.hold(f"s{i}") for i in range(5)]
    futures = [submit(pool, calls, f"s{i}")[1] for i in range(5)]
    await asyncio.sleep(0.5)
    assert calls.active == 3 and calls.most == 3  # never more than threads
    assert sorted(calls.started) == ["s0", "s1", "s2"]
    releases[0].set()
    assert await asyncio.wait_for(futures[0], 5) is None
    await asyncio.sleep(0.2)
    assert "s3" in calls.started and "s4" not in calls.started
    for release in releases:
        release.set()
    assert await asyncio.wait_for(asyncio.gather(*futures), 5) == [None] * 5


async def test_overlap_after_zero_runs_up_to_threads_at_once(make_pool, calls):
    pool = make_pool(threads=3, overlap_after=0)
    releases = [calls.hold(f"s{i}") for i in range(4)]
    futures = [submit(pool, calls, f"s{i}")[1] for i in range(4)]
    for _ in range(100):
        if calls.active == 3:
            break
        await asyncio.sleep(0.01)
    assert calls.active == 3 and "s3" not in calls.started
    for release in releases:
        release.set()
    assert await asyncio.wait_for(asyncio.gather(*futures), 5) == [None] * 4
    assert calls.most == 3


async def test_a_withdrawn_call_never_runs(make_pool, calls):
    pool = make_pool(threads=1, overlap_after=0)
    release = calls.hold("first")
    _, first = submit(pool, calls, "first")
    ticket, second = submit(pool, calls, "second")
    await asyncio.sleep(0.05)
    assert pool.cancel(ticket) is True
    release.set()
    assert await asyncio.wait_for(first, 5) is None
    _, third = submit(pool, calls, "third")
    assert await asyncio.wait_for(third, 5) is None
    assert [name for name, _ in calls.ran] == ["first", "third"]
    assert not second.done()


async def test_a_started_call_cannot_be_withdrawn(make_pool, calls):
    pool = make_pool(threads=1, overlap_after=0)
    release = calls.hold("first")
    ticket, first = submit(pool, calls, "first")
    await asyncio.sleep(0.05)
    assert pool.cancel(ticket) is False
    release.set()
    assert await asyncio.wait_for(first, 5) is None


async def test_an_exception_reaches_done_and_the_thread_goes_on(make_pool):
    pool = make_pool(threads=1, overlap_after=0)
    loop = asyncio.get_running_loop()
    outcomes: list[asyncio.Future] = [loop.create_future() for _ in range(2)]

    def fail() -> None:
        raise ValueError("boom")

    pool.submit(fail, (), outcomes[0].set_result)
    pool.submit(lambda: None, (), outcomes[1].set_result)
    error, fine = await asyncio.wait_for(asyncio.gather(*outcomes), 5)
    assert isinstance(error, ValueError) and str(error) == "boom"
    assert fine is None


async def test_after_shutdown_nothing_new_is_taken(make_pool, calls):
    pool = make_pool(threads=1, overlap_after=0)
    release = calls.hold("running")
    _, running = submit(pool, calls, "running")
    _, queued = submit(pool, calls, "queued")
    await asyncio.sleep(0.05)
    pool.shutdown()
    with pytest.raises(RuntimeError, match='pool of backend "t" is shut down'):
        submit(pool, calls, "late")
    release.set()
    assert await asyncio.wait_for(running, 5) is None  # a running call ends on its own
    await asyncio.sleep(0.1)
    assert [name for name, _ in calls.ran] == ["running"]
    assert not queued.done()


def test_the_ramp_holds_on_uvloop_with_threads_left_idle_from_before():
    """uvloop's millisecond timers fire a little early; a stall must never fall between two
    readings of the clock (it did: 3 of 10 rounds ran their calls one at a time)."""
    import uvloop

    async def rounds() -> list[list[float]]:
        pool = HotPool("t", threads=4, overlap_after=0.02)
        loop = asyncio.get_running_loop()
        seen = []
        try:
            for _ in range(8):
                t0 = time.monotonic()
                ends = []
                for _ in range(8):
                    done = loop.create_future()
                    pool.submit(time.sleep, (0.2,), lambda error, done=done: done.set_result(time.monotonic() - t0))
                    ends.append(done)
                    await asyncio.sleep(0.001)
                seen.append(sorted(await asyncio.wait_for(asyncio.gather(*ends), 10)))
        finally:
            pool.shutdown()
        return seen

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        for ends in runner.run(rounds()):
            # Four at once (20 ms apart), then the next four: two rounds of 0.2 s, never three.
            assert ends[3] < 0.35 and ends[-1] < 0.55, ends


# --- pools that share a gate: one GIL, so one rule for the process's backends ---------------


async def test_pools_on_one_gate_run_one_call_at_a_time_between_them(make_pool, calls):
    gate = Gate()
    django, flask = make_pool(4, 5.0, gate, "django"), make_pool(4, 5.0, gate, "flask")
    futures = [submit(django if i % 3 else flask, calls, f"c{i}", 0.002)[1] for i in range(30)]
    assert await asyncio.gather(*futures) == [None] * 30
    assert calls.most == 1, "two backends' calls only take the GIL from each other"
    threads = {thread for _, thread in calls.ran}
    assert len(threads) == 1, "the thread that ends a call runs the next one, whichever backend's it is"


async def test_backends_take_turns_so_a_flood_of_one_does_not_hold_the_other(make_pool, calls):
    gate = Gate()
    django, flask = make_pool(1, 5.0, gate, "django"), make_pool(1, 5.0, gate, "flask")
    release = calls.hold("d0")
    futures = [submit(django, calls, f"d{i}")[1] for i in range(6)]
    await asyncio.sleep(0.05)
    futures += [submit(flask, calls, f"f{i}")[1] for i in range(2)]
    await asyncio.sleep(0.05)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(*futures), 5) == [None] * 8
    order = [name for name, _ in calls.ran]
    assert order == ["d0", "f0", "d1", "f1", "d2", "d3", "d4", "d5"], order


async def test_pools_on_their_own_gates_run_side_by_side(make_pool, calls):
    django, flask = make_pool(4, 5.0, name="django"), make_pool(4, 5.0, name="flask")
    release = calls.hold("d")
    _, held = submit(django, calls, "d")
    _, other = submit(flask, calls, "f")
    assert await asyncio.wait_for(other, 5) is None
    release.set()
    assert await asyncio.wait_for(held, 5) is None


async def test_a_stalled_call_of_one_backend_lets_the_others_start(make_pool, calls):
    gate = Gate()
    django, flask = make_pool(2, 0.05, gate, "django"), make_pool(2, 0.05, gate, "flask")
    releases = [calls.hold(f"d{i}") for i in range(3)]
    blocked = [submit(django, calls, f"d{i}")[1] for i in range(3)]
    await asyncio.sleep(0.3)
    assert sorted(calls.started) == ["d0", "d1"], "django has two threads: its third call waits"
    quick = [submit(flask, calls, f"f{i}", 0.001)[1] for i in range(5)]
    assert await asyncio.wait_for(asyncio.gather(*quick), 5) == [None] * 5, "flask goes on beside stalled django"
    assert "d2" not in calls.started
    for release in releases:
        release.set()
    assert await asyncio.wait_for(asyncio.gather(*blocked), 5) == [None] * 3


async def test_a_call_waiting_behind_another_backend_is_started_when_that_one_ends(make_pool, calls):
    gate = Gate()
    django, flask = make_pool(1, 5.0, gate, "django"), make_pool(1, 5.0, gate, "flask")
    release = calls.hold("d0")
    _, first = submit(django, calls, "d0")
    _, waiting = submit(flask, calls, "f0")
    _, after = submit(django, calls, "d1")
    await asyncio.sleep(0.1)
    assert list(calls.started) == ["d0"]
    release.set()
    assert await asyncio.wait_for(asyncio.gather(first, waiting, after), 5) == [None] * 3
    assert [name for name, _ in calls.ran] == ["d0", "f0", "d1"], "django's thread hands over: it is flask's turn"


async def test_a_shut_down_pool_leaves_the_gate(make_pool, calls):
    gate = Gate()
    gone, kept = make_pool(1, 5.0, gate, "gone"), make_pool(1, 5.0, gate, "kept")
    release = calls.hold("g")
    submit(gone, calls, "g")
    await asyncio.sleep(0.05)
    gone.shutdown()
    _, later = submit(kept, calls, "k", 0.001)
    assert await asyncio.wait_for(later, 5) is None, "a call still running in a shut-down pool no longer holds the gate"
    release.set()


async def test_only_pools_with_calls_are_on_the_gate(make_pool, calls):
    """A process's gate iterates the pools that have work, not every pool ever built."""
    gate = Gate()
    pools = [make_pool(1, 5.0, gate, f"p{i}") for i in range(3)]
    assert gate.pools == []
    await asyncio.gather(*(submit(pool, calls, pool.name, 0.001)[1] for pool in pools))
    for _ in range(100):
        if not gate.pools:
            break
        await asyncio.sleep(0.01)
    assert gate.pools == [], "each pool left the gate once its calls were done"
