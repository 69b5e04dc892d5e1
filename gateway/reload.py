"""Hot reload: watch ``config.toml`` (and SIGHUP), validate, compile, swap atomically.

An edit goes through the same ``load_config`` as ``stackgate check``. A valid
one is compiled into a new state and swapped in with one assignment:
requests in flight finish on the state they started with, throttle counters
live in the services and survive. An invalid edit changes nothing — the old
config keeps serving — and its problems are logged and shown at
``/_stackgate/status``. Backends are built once per process, so a change to
one (its import string, its pool) is reported as needing a restart and
nothing of that edit is applied. A SIGHUP reads the file whatever was seen
before: an unchanged file is logged ("config unchanged") and stamped in
``/_stackgate/status``, so the operator sees the signal arrived.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Optional

from gateway import metrics
from gateway.config import Config, ConfigError, load_config

logger = logging.getLogger("stackgate.reload")

UNCHANGED = "unchanged: the file matches the serving config"
DEBOUNCE_MS = 100
POLL_MS = 2000
STEP_MS = 250
"""How often watchfiles' thread looks at what inotify collected. Each look takes the GIL
from the stacks' threads: at 20 ms (50 a second) that cost 2-4 % of a worker's
req/s under load (docs/performance.md); an edit now applies within about half a second."""


def on_sighup(callback: Any) -> None:
    """Run ``callback`` on the event loop at SIGHUP (nothing where the loop cannot take signals)."""
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, callback)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no SIGHUP here
        pass


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Reloader:
    """Watches one file; ``apply(config)`` swaps a valid edit in, ``restart_needed(config)`` lists what cannot."""

    def __init__(
        self,
        config: Config,
        path: str,
        apply: Callable[[Config], None],
        restart_needed: Callable[[Config], list[str]],
    ) -> None:
        self.current = config
        self.apply = apply
        self.restart_needed = restart_needed
        self.path = Path(os.path.abspath(path))  # symlinks kept: a ConfigMap update replaces what they point to
        self.task: Optional[asyncio.Task] = None
        self.seen = config.digest
        self.last: dict[str, Any] = {
            "ok": True,
            "at": _now(),
            "version": config.digest,
            "message": "loaded at start",
            "problems": [],
        }

    def reload(self, asked: bool = False) -> dict[str, Any]:
        """Load the file now; apply it if valid. Returns the result (also kept in ``last``).

        ``asked`` (a SIGHUP): read and report even a file seen before; otherwise
        (the watch, the poll) a file seen before is left alone, silently.
        """
        current = self.current
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raw = f"unreadable: {exc}".encode()
        digest = hashlib.sha256(raw).hexdigest()[:12]
        if digest == self.seen and not asked:
            return self.last
        self.seen = digest
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            return self._result(False, "invalid", "not applied: the file has problems; the previous config keeps serving", exc.problems, current.digest)
        if config.digest == current.digest:
            if not self.last["ok"]:
                # A bad edit was undone: what serves is what the file says again.
                return self._result(True, "unchanged", "the file is valid again and matches the serving config", [], current.digest)
            if asked:
                return self._result(True, "unchanged", UNCHANGED, [], current.digest, log_message="config unchanged")
            return self.last
        restart = self.restart_needed(config)
        if restart:
            return self._result(False, "restart_required", "not applied: these changes need a restart", restart, current.digest)
        self.apply(config)
        self.current = config
        return self._result(True, "applied", "applied", [], config.digest)

    def _result(
        self, ok: bool, result: str, message: str, problems: list[str], version: str, log_message: Optional[str] = None
    ) -> dict[str, Any]:
        metrics.RELOADS.labels(result).inc()
        self.last = {"ok": ok, "at": _now(), "version": version, "message": message, "problems": problems}
        log = logger.info if ok else logger.error
        extra = {"config": str(self.path), "config_version": version, "problems": problems}
        log(log_message or f"config reload: {message}", extra=extra)
        return self.last

    async def start(self) -> None:
        on_sighup(self._on_sighup)
        self.task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass

    def _on_sighup(self) -> None:
        self._reload_logged(lambda: self.reload(asked=True))

    def _reload_logged(self, reload: Optional[Callable[[], Any]] = None) -> None:
        try:
            (reload or self.reload)()
        except Exception:  # a bug must not end the watch: the next edit (or poll) tries again
            self.seen = None
            logger.exception("config reload failed", extra={"config": str(self.path)})

    async def _watch(self) -> None:
        from watchfiles import awatch

        # Watch the folder: editors (and Kubernetes ConfigMaps) replace the file rather
        # than write it. The file is also read at least every POLL_MS, whatever else
        # happens in the folder (a log file beside it changes all the time): that catches
        # an edit made before the watch began and file systems without inotify.
        target = str(self.path)
        folder = os.path.dirname(target)
        # A ConfigMap update renames a new ..data symlink over the old one: the file's own name sees no event.
        ours_names = {target, os.path.join(folder, "..data")}
        self._reload_logged()
        while True:
            try:
                last_read = time.monotonic()
                async for changes in awatch(
                    folder, debounce=DEBOUNCE_MS, step=STEP_MS, recursive=False, rust_timeout=POLL_MS, yield_on_timeout=True
                ):
                    ours = any(os.path.abspath(changed) in ours_names for _, changed in changes)
                    if ours or time.monotonic() - last_read >= POLL_MS / 1000:
                        last_read = time.monotonic()
                        self._reload_logged()
            except Exception as exc:  # the folder went away, or the watcher failed: poll until it works again
                logger.warning("watching %s failed (%r); polling every %g s", folder, exc, POLL_MS / 1000)
                await asyncio.sleep(POLL_MS / 1000)
                self._reload_logged()
