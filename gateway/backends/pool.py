"""A WSGI backend's threads: one call at a time, until a call is slow.

Under the GIL only one thread runs Python at a time. Two calls that both
compute gain nothing from running at once, and lose: each time one of them
lets go of the GIL (a SQLite step, a socket read) the other takes it, and the
first waits to get it back, up to a switch interval, while its client waits
too. Calls that wait on I/O, on the other hand, must overlap, or one slow
query holds every request behind it.

So the pool runs one call at a time, and one more for every running call
that has been running ``overlap_after`` seconds or longer (it is waiting, or
it is long), up to ``threads``. A thread that finishes a call takes the next
one itself, without going back to the event loop, so short calls run back to
back on one hot thread; a stall lets the next request start on another thread
within ``overlap_after``. ``overlap_after = 0`` runs up to ``threads`` calls at
once, as a plain thread pool does.

The clock that notices a stall is a timer on the event loop, armed only while
requests wait.
"""

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



class HotPool:
    def __init__(self, name: str, threads: int, overlap_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.threads = threads
        self.overlap_after = overlap_after
        self.clock = clock
        self._lock = threading.Lock()
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
        ticket = Ticket(fn, args, done, loop)
        with self._lock:
            if self._closed:
                raise RuntimeError(f'the pool of backend "{self.name}" is shut down')
            self._jobs.append(ticket)
            startable = self._room(self.clock()) > 0
            if startable:
                self._wake()
        if not startable:
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
            self._work.notify_all()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- the rule (under the lock) ------------------------------------------------------

    def allowed(self, now: float) -> int:
        """Calls that may run now: one, plus one per call that has run ``overlap_after`` or longer."""
        if self.overlap_after <= 0:
            return self.threads
        stalled = 0
        for started in self._running.values():
            if now - started >= self.overlap_after:
                stalled += 1
        return min(self.threads, 1 + stalled)

    def _room(self, now: float) -> int:
        """How many more threads to wake for the calls that wait."""
        while self._jobs and self._jobs[0].cancelled:
            self._jobs.popleft()
        return min(len(self._jobs) - self._waking, self.allowed(now) - len(self._running) - self._waking)

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
        if self.overlap_after > 0 and not self._timer_pending and self._jobs:
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
            for _ in range(self._room(now)):
                self._wake()
            fresh = [start for start in self._running.values() if now - start < self.overlap_after]
            if not self._jobs or not fresh:
                # Nothing waits, or nothing will turn stalled: only an end lets another call
                # start, and the thread that ends takes it (asking again if calls still wait).
                self._timer_pending = False
                return
            self._timer_pending = True
            delay = min(fresh) + self.overlap_after - now
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
                while not self._closed and not (self._jobs and len(self._running) < self.allowed(self.clock())):
                    self._ask_timer()
                    self._idle += 1
                    self._work.wait()
                    self._waking -= 1
                if self._closed:
                    return
                ticket = self._jobs.popleft()
                if ticket.cancelled:  # withdrawn while it waited
                    continue
                ticket.started = True
                self._running[me] = self.clock()
                self._ask_timer()
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
                del self._running[me]
