"""Shadow requests to WSGI stacks, run in a process of their own.

A shadow copy costs about what the client's request cost. In the gateway's
process it would compete for the GIL with the *next* client request and
slow it down; in a separate process it runs on another core. The process is
started on the first shadow request, loads the WSGI apps by their import
strings, and runs one request at a time (the mirror skips a copy while the
previous one for that backend is still running).
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Optional

_APPS: dict[str, Any] = {}
_UNPICKLABLE = ("asgi.scope", "wsgi.input", "wsgi.errors")


def _init(apps: dict[str, str]) -> None:
    from gateway.backends.base import load_app

    os.environ.pop("SCRIPT_NAME", None)
    for name, target in apps.items():
        _APPS[name] = load_app(target)


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
        self.executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(apps,),
        )

    async def call(self, name: str, environ: dict, limit: int) -> tuple[int, list[tuple[bytes, bytes]], Optional[bytes]]:
        portable = {k: v for k, v in environ.items() if k not in _UNPICKLABLE}
        return await asyncio.get_running_loop().run_in_executor(self.executor, _call, name, portable, limit)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
