"""Shadow copies to WSGI stacks, run and compared in a process of their own.

In the gateway's process a copy would compete for the GIL with the next client
request. This process loads the WSGI apps by import string, runs one copy at a
time at the lowest CPU priority, rests to stay within
``[split].mirror_duty_cycle``, and sends back only the comparison, over one
Unix socket of length-prefixed pickles read by the event loop. It starts with
the gateway (``warm``), is replaced when it dies (after a pause that doubles,
up to a minute) and always reaped (``aclose``).
"""
# Why (a copy's cost, SCHED_IDLE, WAL): docs/performance.md#shadow-comparison-cost-issue-5s-within-10-

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Optional

from gateway.shadow.compare import Answer, content_type, outcome, self_fields

logger = logging.getLogger("stackgate.mirror")

_UNPICKLABLE = ("asgi.scope", "wsgi.input", "wsgi.errors")
REAP_TIMEOUT = 5.0
"""Seconds a shadow process whose channel closed may take to finish its copy and exit."""

_READY = 0  # the sequence number of the frame that says the apps are loaded
_BOOT = "import json, sys; a = json.loads(sys.argv[1]); sys.path[:0] = a['path']; from gateway.shadow.process import main; main(a['apps'], int(sys.argv[2]))"


class ShadowUnavailable(Exception):
    """The shadow process is not running (it died, or is closed); the copy is counted as an error."""


# -- in the shadow process ---------------------------------------------------

_APPS: dict[str, Any] = {}


def _call(name: str, environ: dict, limit: int) -> tuple[int, list[tuple[bytes, bytes]], Optional[bytes]]:
    environ["wsgi.input"] = io.BytesIO(b"")
    environ["wsgi.errors"] = sys.stderr
    head: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(status: str, headers: list, exc_info: Any = None) -> Any:
        head["status"], head["headers"] = status, headers
        return chunks.append

    result = _APPS[name](environ, start_response)
    size = 0
    try:
        for chunk in result:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    headers = [(k.lower().encode("latin1"), v.encode("latin1")) for k, v in head["headers"]]
    return int(head["status"].split(" ", 1)[0]), headers, None if size > limit else b"".join(chunks)


def _answer(name: str, environ: dict, limit: int) -> Optional[Answer]:
    status, headers, body = _call(name, dict(environ), limit)
    return None if body is None else Answer(status, content_type(headers), body)


def _run(name: str, environ: dict, limit: int, served: Answer, ignore: frozenset, served_name: str, check: Any = None) -> Any:
    """A copy's outcome; with ``check`` (``Check``), ``(outcome, {backend: differing fields})``."""
    other = _answer(name, environ, limit)
    result = outcome(served, other, ignore, served_name, name)
    if check is None:
        return result
    checks: dict[str, Any] = {}
    if other is not None and check.wanted(result):
        checks[name] = _check(name, environ, limit, other, ignore)
        if check.served_app is not None:
            checks[served_name] = _check(check.served_app, environ, limit, served, ignore)
    return result, checks


def _check(name: str, environ: dict, limit: int, first: Answer, ignore: frozenset) -> Any:
    """The fields a second answer of ``name`` differs from ``first`` on; None if it failed (the copy it checks stands)."""
    try:
        return self_fields(first, _answer(name, environ, limit), ignore)
    except Exception:
        logger.exception("a noise check on %s failed", name)
        return None


def _read_frame(stream: Any) -> Any:
    head = stream.read(4)
    if len(head) < 4:
        return None
    size = int.from_bytes(head, "big")
    payload = stream.read(size)
    return pickle.loads(payload) if len(payload) == size else None


def _write_frame(stream: Any, value: Any) -> None:
    payload = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    stream.write(len(payload).to_bytes(4, "big") + payload)
    stream.flush()


def _rest(channel: socket.socket, seconds: float) -> bool:
    """Sleep ``seconds``; False at once if the gateway closes the channel meanwhile (it is stopping)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([channel], [], [], left)[0]:
            try:
                if channel.recv(1, socket.MSG_PEEK) == b"":
                    return False
            except OSError:
                return False
            time.sleep(max(deadline - time.monotonic(), 0))  # a copy waits: it keeps until the rest is over
            break
    return True


def main(apps: dict[str, str], fd: int) -> None:
    """The shadow process: load the apps, then run copies until the gateway closes the socket."""
    # The gateway ends this process by closing the socket, after its own in-flight requests.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # It shares the gateway's stderr, whose every line is JSON: what the apps log (or warn) too.
    from gateway import logs

    logs.last_resort_json()
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # Linux: only what no one else wants
    except (AttributeError, OSError):  # pragma: no cover - elsewhere, the lowest nice level
        try:
            os.nice(19)
        except OSError:
            pass
    from gateway.backends.base import load_app

    for name, target in apps.items():
        try:
            _APPS[name] = load_app(target)
        except Exception:  # the gateway reports that the process did not start, and retries later
            logger.exception("the shadow process cannot load %s (%s)", name, target)
            sys.exit(1)
    channel = socket.socket(fileno=fd)
    rfile, wfile = channel.makefile("rb"), channel.makefile("wb")
    try:
        _write_frame(wfile, (_READY, None))
        while (frame := _read_frame(rfile)) is not None:
            seq, duty_cycle, job = frame
            started = time.perf_counter()
            try:
                outcome = _run(*job)
            except Exception as exc:  # the app failed on the copy: reported, the process goes on
                outcome = ("error", repr(exc))
                if len(job) > 6:
                    outcome = (outcome, {})
            _write_frame(wfile, (seq, outcome))
            # Rest so that copies run at most duty_cycle of the time: even at the lowest priority a
            # copy running beside a client's request slows it (shared caches, a shared host).
            rest = (time.perf_counter() - started) * (1 / duty_cycle - 1)
            if rest > 0 and not _rest(channel, rest):
                return
    except OSError:  # the gateway closed the channel (it stops, or gave up on this process): done
        return


# -- in the gateway's process ------------------------------------------------


class ShadowProcess:
    def __init__(self, apps: dict[str, str], duty_cycle: float = 1.0) -> None:
        self.apps = apps
        self.duty_cycle = duty_cycle
        self.proc: Optional[subprocess.Popen] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._ready: Optional[asyncio.Future] = None
        self._pending: dict[int, asyncio.Future] = {}
        self._seq = _READY
        self._retry_at = 0.0
        self._young_deaths = 0  # deaths in a row, each within a minute of its start
        self._closed = False
        self._starting: Optional[asyncio.Task] = None
        self._warming: Optional[asyncio.Task] = None
        self._reading: Optional[asyncio.Task] = None
        self._reaping: set[asyncio.Task] = set()

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    async def _channel(self) -> asyncio.StreamWriter:
        if self._writer is not None:
            return self._writer
        if self._closed:
            raise ShadowUnavailable("the shadow process is closed")
        if time.monotonic() < self._retry_at:
            raise ShadowUnavailable("the shadow process died; a new one starts shortly")
        # One start at a time: the lifespan's warm() and a first copy (or a reload's warm_soon())
        # may both ask before the channel exists, and each must not start a process of its own.
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        return await asyncio.shield(self._starting)

    async def _start(self) -> asyncio.StreamWriter:
        try:
            ours, theirs = socket.socketpair()
            env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "SCRIPT_NAME")}
            argv = [sys.executable, "-c", _BOOT, json.dumps({"path": sys.path, "apps": self.apps}), str(theirs.fileno())]
            try:
                proc = self.proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            try:
                reader, writer = await asyncio.open_unix_connection(sock=ours)
            except BaseException:
                ours.close()
                self._reap_soon(proc)
                raise
            if self._closed:  # closed while it started
                writer.close()
                self._reap_soon(proc)
                raise ShadowUnavailable("the shadow process is closed")
            self._writer = writer
            self._ready = asyncio.get_running_loop().create_future()
            self._reading = asyncio.ensure_future(self._read_results(reader, writer, proc, self._ready))
            return writer
        finally:
            self._starting = None

    async def _read_results(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proc: subprocess.Popen, ready: asyncio.Future) -> None:
        started = time.monotonic()
        try:
            while True:
                head = await reader.readexactly(4)
                seq, outcome = pickle.loads(await reader.readexactly(int.from_bytes(head, "big")))
                if seq == _READY:
                    ready.set_result(None)
                    continue
                future = self._pending.pop(seq, None)
                if future is not None and not future.done():
                    future.set_result(outcome)
        except (asyncio.IncompleteReadError, OSError):
            pass
        if self._writer is writer:  # the process went away while in use
            self._writer = None
            # Replaced at once; if it keeps dying young, after a pause that doubles up to a minute.
            self._young_deaths = self._young_deaths + 1 if time.monotonic() - started < 60 else 1
            pause = 0.0 if self._young_deaths == 1 else min(2.0 ** (self._young_deaths - 2), 60.0)
            self._retry_at = time.monotonic() + pause
            logger.warning("the shadow process (pid %s) exited; a new one starts %s", proc.pid, f"in {pause:g} s" if pause else "with the next copy")
        if not ready.done():
            ready.set_exception(ShadowUnavailable("the shadow process exited before it loaded the apps"))
            ready.exception()  # retrieved: warm() may not be waiting
        self._fail_pending("the shadow process exited")
        writer.close()
        self._reap_soon(proc)

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ShadowUnavailable(reason))

    async def warm(self, timeout: float = 60.0) -> None:
        """Start the process and wait until it has loaded the apps (a failure is logged, not raised)."""
        try:
            await self._channel()
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._ready)
        except Exception as exc:  # the copies then fail one by one, counted as mirror errors
            logger.warning("the shadow process did not start: %r", exc)

    def warm_soon(self) -> None:
        """Warm in the background when an event loop runs (a reload); otherwise the lifespan does it."""
        try:
            self._warming = asyncio.get_running_loop().create_task(self.warm())
        except RuntimeError:
            pass

    async def run(self, name: str, environ: dict, limit: int, served: Answer, ignore: frozenset, served_name: str, check: Any = None) -> Any:
        """Run one copy and compare it with ``served``: ``("match",)``, ``("mismatch", Mismatch)``,
        ``("skipped",)`` (its body is over ``limit``) or ``("error", message)``. With ``check``
        (``gateway.shadow.compare.Check``): ``(outcome, {backend: fields its second answer differed on})``,
        the checks run in this process too, within the duty cycle."""
        writer = await self._channel()
        self._seq += 1
        seq = self._seq
        portable = {k: v for k, v in environ.items() if k not in _UNPICKLABLE}
        job = (name, portable, limit, served, ignore, served_name) + ((check,) if check is not None else ())
        payload = pickle.dumps((seq, self.duty_cycle, job), pickle.HIGHEST_PROTOCOL)
        future = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        writer.write(len(payload).to_bytes(4, "big") + payload)
        try:
            return await future
        finally:
            self._pending.pop(seq, None)

    def close(self) -> None:
        """Close the channel: the process finishes the copy it runs, if any, and exits (``aclose``
        also waits for that)."""
        self._close_channel()
        if self.proc is not None:
            self._reap_soon(self.proc)

    async def aclose(self, timeout: float = REAP_TIMEOUT) -> None:
        """Close the channel and wait until the process has exited (killed after ``timeout``
        seconds, a copy stuck in a stack) and is collected: the gateway's process never leaves
        it running, nor ``<defunct>``."""
        self._close_channel()
        if self._starting is not None:  # a start under way hands its process to _reap_soon
            await asyncio.wait([self._starting])
        if self.proc is not None:
            await _reaped(self.proc, timeout)
        if self._reaping:
            await asyncio.wait(self._reaping)

    def _close_channel(self) -> None:
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except RuntimeError:  # pragma: no cover - the event loop is already closed
                pass
        self._fail_pending("the shadow process is closed")
        for task in (self._warming, self._reading):
            if task is not None:
                task.cancel()

    def _reap_soon(self, proc: subprocess.Popen) -> None:
        """Collect ``proc`` once it exits (killed if it runs on ``REAP_TIMEOUT`` s after its
        channel closed, a copy stuck in a stack), so that it never stays ``<defunct>``."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: wait here
            _reap(proc, REAP_TIMEOUT)
            return
        if proc.poll() is not None:
            return
        task = loop.create_task(_reaped(proc, REAP_TIMEOUT))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)


async def _reaped(proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:  # also when the event loop ends first: the process is not left behind
        if proc.returncode is None:
            _reap(proc, 0)


def _reap(proc: subprocess.Popen, timeout: float) -> None:
    """Wait up to ``timeout`` s for ``proc`` to exit, then kill it; collect it either way."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel never ended it
            logger.error("the shadow process (pid %s) did not end after SIGKILL", proc.pid)
