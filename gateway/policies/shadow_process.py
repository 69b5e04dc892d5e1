"""Shadow requests to WSGI stacks, run in a process of their own.

A shadow copy costs about what the client's request cost. In the gateway's
process it would compete for the GIL with the *next* client request and
slow it down; in a separate process it runs on another core. The process is
started on the first shadow request, loads the WSGI apps by their import
strings, and runs one request at a time. It is started with the gateway
(``warm``), so that the first copies are not skipped while it imports the
stacks.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
import logging
from typing import Any, Optional

logger = logging.getLogger("stackgate.mirror")

_APPS: dict[str, Any] = {}
_UNPICKLABLE = ("asgi.scope", "wsgi.input", "wsgi.errors")


def _init(apps: dict[str, str]) -> None:
    from gateway.backends.base import load_app

    os.environ.pop("SCRIPT_NAME", None)
    for name, target in apps.items():
        _APPS[name] = load_app(target)


def _ready() -> bool:
    return True


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


class ShadowProcess:
    def __init__(self, apps: dict[str, str]) -> None:
        self.apps = apps
        self.executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(self.apps,),
        )

    async def warm(self, timeout: float = 60.0) -> None:
        """Start the process and wait until it has loaded the apps (a failure is logged, not raised)."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().run_in_executor(self.executor, _ready)
        except Exception as exc:  # the copies then fail one by one, counted as mirror errors
            logger.warning("the shadow process did not start: %r", exc)

    def warm_soon(self) -> None:
        """Warm in the background when an event loop runs (a reload); otherwise the lifespan does it."""
        try:
            self._warming = asyncio.get_running_loop().create_task(self.warm())
        except RuntimeError:
            pass

    async def call(self, name: str, environ: dict, limit: int) -> tuple[int, list[tuple[bytes, bytes]], Optional[bytes]]:
        portable = {k: v for k, v in environ.items() if k not in _UNPICKLABLE}
        executor = self.executor
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, _call, name, portable, limit)
        except BrokenProcessPool:
            # The process died (killed, out of memory): this copy is lost, the next ones get a new process.
            if self.executor is executor:
                logger.warning("the shadow process died; starting a new one")
                executor.shutdown(wait=False, cancel_futures=True)
                self.executor = self._start()
            raise

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
