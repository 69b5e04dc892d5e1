"""A WSGI backend's threads: one call at a time, until a call is slow.

The pool runs one call, and one more for each call running ``overlap_after``
seconds or longer, up to ``threads`` (``overlap_after = 0``: a plain pool). A
thread that ends a call takes the next itself. The pools of one ``Gate``
(``PROCESS_GATE``: every WSGI backend with ``overlap_after > 0``) share the rule,
since they share the GIL, and take turns; each keeps its ``threads`` cap, in calls.
"""
# Why (the GIL, and the executors measured): docs/performance.md#the-executor

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

Done = Callable[[Optional[BaseException]], None]
_LATE = 0.001


class Ticket:
    """One call's place in the pool (``HotPool.cancel`` withdraws it)."""

    __slots__ = ("fn", "args", "done", "loop", "started", "cancelled")

    def __init__(self, fn: Callable[..., Any], args: tuple, done: Done, loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.args = args
        self.done = done
        self.loop = loop
        self.started = False
        self.cancelled = False


class Gate:
    """The pools that share the rule: one lock, one count of calls, turns between the pools."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pools: list["HotPool"] = []
        """The pools with calls waiting or running, in the order they came (the order of turns)."""
        self.last: Optional["HotPool"] = None  # the pool whose thread took a call last

    def allowed(self, now: float) -> int:
        """Calls that may run now over all the pools: one, plus one per call that has stalled."""
        allowed = 1
        for pool in self.pools:
            if pool.overlap_after <= 0:
                return 1 << 30  # a plain thread pool (alone on its gate): only its threads bound it
            for started in pool._running.values():
                if now - started >= pool.overlap_after:
                    allowed += 1
        return allowed

    def room(self, now: float) -> int:
        """How many more calls may start now (threads already woken count as started)."""
        return self.allowed(now) - sum(len(p._running) + p._waking for p in self.pools)

    def next_pool(self, after: Optional["HotPool"] = None) -> Optional["HotPool"]:
        """Whose turn it is: the first pool after ``after`` (default: the last to take a call),
        in turn, with a call nobody is woken for and a thread to spare.

        Turns, not one queue: a flood of one backend's calls never holds another's
        behind it for more than one call.
        """
        pools = self.pools
        if not pools:
            return None
        after = self.last if after is None else after
        start = pools.index(after) + 1 if after in pools else 0
        for i in range(len(pools)):
            pool = pools[(start + i) % len(pools)]
            jobs = pool._jobs
            while jobs and jobs[0].cancelled and not pool._waking:
                jobs.popleft()
            if len(jobs) > pool._waking and len(pool._running) + pool._waking < pool.threads:
                return pool
        return None

    def dispatch(self, now: float) -> None:
        """Wake a thread for each call that may start now, pool by pool in turn."""
        room = self.room(now)
        after = None
        while room > 0:
            pool = self.next_pool(after)
            if pool is None:
                return
            pool._wake()
            after = pool
            room -= 1

    def ask_timers(self) -> None:
        for pool in self.pools:
            pool._ask_timer()


PROCESS_GATE = Gate()
"""The gate of this process's WSGI backends (``gateway.backends.wsgi``)."""



class HotPool:
    def __init__(self, name: str, threads: int, overlap_after: float, clock: Callable[[], float] = time.monotonic,
                 gate: Optional[Gate] = None) -> None:
        """``gate``: the pools to share the rule with (default: none, a gate of its own).
        A pool with ``overlap_after = 0`` always has a gate of its own."""
        self.name = name
        self.threads = threads
        self.overlap_after = overlap_after
        self.clock = clock
        self.gate = gate if gate is not None and overlap_after > 0 else Gate()
        self._lock = self.gate.lock
        self._work = threading.Condition(self._lock)
        self._jobs: deque[Ticket] = deque()
        self._running: dict[int, float] = {}  # thread id -> start of its call
        self._workers = 0
        self._idle = 0  # threads waiting for work
        self._waking = 0  # threads woken (or started) that have not looked for work yet
        self._closed = False
        self._timer: Optional[asyncio.TimerHandle] = None  # the event loop's alone
        self._timer_pending = False  # under the lock: a stall timer is armed or asked for

    # --- what the event loop calls ------------------------------------------------

    def submit(self, fn: Callable[..., Any], args: tuple, done: Done) -> Ticket:
        """Run ``fn(*args)`` on a thread; ``done(error)`` is then called on the loop. Never blocks."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise RuntimeError(f'the pool of backend "{self.name}" is shut down')
            ticket = Ticket(fn, args, done, loop)
            self._jobs.append(ticket)
            if self not in self.gate.pools:  # the gate counts the pools that have calls, waiting or running
                self.gate.pools.append(self)
            self.gate.dispatch(self.clock())
            waits = len(self._jobs) > self._waking
        if waits:
            self._arm(loop)
        return ticket

    def cancel(self, ticket: Ticket) -> bool:
        """Withdraw a call: True if no thread had taken it (it will not run, ``done`` is not called)."""
        with self._lock:
            ticket.cancelled = True
            return not ticket.started

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    def shutdown(self) -> None:
        """Let no new call in; calls that wait are dropped, running calls end on their own."""
        with self._lock:
            self._closed = True
            self._jobs.clear()
            if self in self.gate.pools:
                self.gate.pools.remove(self)
                if self.gate.last is self:
                    self.gate.last = None
                self.gate.dispatch(self.clock())  # its running calls no longer count
            self._work.notify_all()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- the rule (under the lock) ------------------------------------------------------

    def _may_take(self, now: float) -> bool:
        """For a thread of this pool looking for work: is this pool's next call the one to start now?"""
        return (
            len(self._jobs) > self._waking
            and len(self._running) + self._waking < self.threads
            and self.gate.room(now) > 0
            and self.gate.next_pool() is self
        )

    def _leave_if_idle(self) -> None:
        """Off the gate while this pool has no call, waiting or running (it joins again on submit)."""
        if not self._jobs and not self._running and not self._waking and self in self.gate.pools:
            self.gate.pools.remove(self)

    def _wake(self) -> None:
        self._waking += 1
        if self._idle:
            self._idle -= 1
            self._work.notify()
        else:
            self._workers += 1
            threading.Thread(target=self._serve, name=f"stackgate-{self.name}-{self._workers}", daemon=True).start()

    # --- the stall timer ----------------------------------------------------------------

    def _ask_timer(self) -> None:
        """From a thread, under the lock: calls wait, so the loop should watch for a stall."""
        if self.overlap_after > 0 and not self._timer_pending and len(self._jobs) > self._waking:
            self._timer_pending = True
            loop = self._jobs[0].loop
            try:
                loop.call_soon_threadsafe(self._arm, loop)
            except RuntimeError:  # the loop is closed
                pass

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: start what the rule allows now, and wake when the next running call turns stalled.

        One reading of the clock decides both, so that a call turning stalled in between
        cannot fall through (neither started for nor waited on).
        """
        if self._timer is not None or self.overlap_after <= 0:
            return
        with self._lock:
            now = self.clock()
            self.gate.dispatch(now)
            # When each running call (of every pool on the gate) turns stalled, if it has not yet.
            fresh = [
                start + pool.overlap_after
                for pool in self.gate.pools
                for start in pool._running.values()
                if now - start < pool.overlap_after
            ]
            if len(self._jobs) <= self._waking or not fresh:
                # Nothing waits, or nothing will turn stalled: only an end lets another call
                # start, and the thread that ends takes it (asking again if calls still wait).
                self._timer_pending = False
                return
            self._timer_pending = True
            delay = min(fresh) - now
        # A little late rather than early: uvloop's timers have millisecond steps.
        self._timer = loop.call_later(delay + _LATE, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._arm(loop)

    # --- the threads ----------------------------------------------------------------------

    def _serve(self) -> None:
        me = threading.get_ident()
        lock = self._lock
        with lock:
            self._waking -= 1
            while True:
                pool = self  # whose call this thread runs next
                while not self._closed:
                    now = self.clock()
                    if self._may_take(now):
                        break
                    # Another backend's turn: run its call here rather than wake one of its
                    # threads and sleep (a hand-off between threads leaves the core idle).
                    other = self.gate.next_pool()
                    if other is not None and other._may_take(now):
                        pool = other
                        break
                    self.gate.dispatch(now)  # another pool's call may be the one due
                    self.gate.ask_timers()
                    self._leave_if_idle()
                    self._idle += 1
                    self._work.wait()
                    self._waking -= 1
                if self._closed:
                    return
                ticket = pool._jobs.popleft()
                if ticket.cancelled:  # withdrawn while it waited
                    continue
                ticket.started = True
                pool._running[me] = self.clock()
                self.gate.last = pool
                self.gate.ask_timers()
                lock.release()
                error: Optional[BaseException] = None
                try:
                    ticket.fn(*ticket.args)
                except BaseException as exc:  # travels to the loop, like a future's exception
                    error = exc
                try:
                    ticket.loop.call_soon_threadsafe(ticket.done, error)
                except RuntimeError:  # the loop is closed: nobody waits for this call any more
                    pass
                del ticket, error
                lock.acquire()
                del pool._running[me]
                if pool is not self:
                    pool._leave_if_idle()
