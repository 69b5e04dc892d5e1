"""Shadow comparison: replay a safe request on the backend that did not serve it, and compare.

The copy runs after the client's response, as the same identity, for GET and
HEAD only; ``gateway.shadow.compare`` compares. Mismatches are kept per route
(``[split].mirror_keep``). It pauses while the other backend's pool is
saturated, and skips (and counts) copies beyond ``IN_FLIGHT`` per route and backend.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from gateway import metrics, telemetry
from gateway.context import SCOPE_KEY
from gateway.backends.wsgi import make_environ
from gateway.shadow.compare import Answer, Mismatch, content_type, outcome
from gateway.types import Receive, Scope, Send

logger = logging.getLogger("stackgate.mirror")

# Copies per route and backend that may run or wait at once: enough to absorb
# a burst (each copy waits its turn; none is dropped for being second), few
# enough that a shadow backend falling behind costs bounded memory. Beyond it,
# copies are skipped and counted.
IN_FLIGHT = 32


@dataclass
class RouteMirrorStats:
    matches: int = 0
    mismatches: int = 0
    not_comparable: int = 0
    errors: int = 0
    skipped: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=50))
    route: str = ""
    rollout: Any = None
    """The route's rollout (``gateway.rollout.manager.RouteRollout``): told each result, for its match-rate gate."""

    def record(self, result: str) -> None:
        """Count one result: ``match``, ``mismatch``, ``not_comparable``, ``error`` or ``skipped``."""
        attribute = metrics.MIRROR_RESULTS[result]
        setattr(self, attribute, getattr(self, attribute) + 1)
        metrics.MIRROR.labels(self.route, result).inc()
        if self.rollout is not None:
            self.rollout.observe_mirror(result)

    def as_dict(self) -> dict[str, Any]:
        compared = self.matches + self.mismatches
        return {
            "matches": self.matches,
            "mismatches": self.mismatches,
            "not_comparable": self.not_comparable,
            "errors": self.errors,
            "skipped": self.skipped,
            "match_rate": round(self.matches / compared, 4) if compared else None,
            "recent_mismatches": list(self.recent),
        }


class MirrorRegistry(dict):
    """Route label -> RouteMirrorStats; lives in the services, so it survives reloads."""

    def for_route(self, label: str, keep: int) -> RouteMirrorStats:
        stats = self.get(label)
        if stats is None:
            stats = self[label] = RouteMirrorStats(route=label)
        if stats.recent.maxlen != keep:
            stats.recent = deque(stats.recent, maxlen=keep)
        return stats


@dataclass
class _Captured:
    status: int = 0
    content_type: bytes = b""
    body: bytearray = field(default_factory=bytearray)
    too_big: bool = False

    def answer(self) -> Answer:
        return Answer(self.status, self.content_type, bytes(self.body))


class Mirror:
    def __init__(
        self, route: Any, backends: dict[bytes, Any], stats: RouteMirrorStats, max_body: int, process: Any = None
    ) -> None:
        self.route_label = route.label
        self.process = process
        self.backends = backends
        self.ignore = frozenset(route.mirror_ignore)
        self.stats = stats
        self.max_body = max_body
        self.in_flight: dict[bytes, int] = {}
        self.tasks: set[asyncio.Task] = set()

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, name: bytes, backend: Any
    ) -> None:
        primary = _Captured()

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                primary.status = message["status"]
                primary.content_type = content_type(message.get("headers", ()))
            elif message["type"] == "http.response.body" and not primary.too_big:
                primary.body += message.get("body", b"")
                if len(primary.body) > self.max_body:
                    primary.too_big = True
                    primary.body = bytearray()
            await send(message)

        shadow_scope = dict(scope)
        await backend(scope, receive, capture)
        if primary.too_big or primary.status == 0:
            return
        for other_name, other in self.backends.items():
            if other_name == name:
                continue
            running = self.in_flight.get(other_name, 0)
            if running >= IN_FLIGHT or getattr(other, "saturated", False):
                self.stats.record("skipped")
                continue
            self.in_flight[other_name] = running + 1
            copy = telemetry.mirror_copy(self._shadow(shadow_scope, name, primary, other_name, other), self.route_label, other_name)
            task = asyncio.ensure_future(copy)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _shadow(self, scope: Scope, served: bytes, primary: _Captured, name: bytes, backend: Any) -> None:
        shadow = _Captured()
        done = asyncio.Event()
        sent_body = False

        async def receive() -> dict:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                shadow.status = message["status"]
                shadow.content_type = content_type(message.get("headers", ()))
            elif message["type"] == "http.response.body" and not shadow.too_big:
                shadow.body += message.get("body", b"")
                if len(shadow.body) > self.max_body:
                    shadow.too_big = True

        started = time.perf_counter()
        served_name, other_name = served.decode(), name.decode()
        try:
            if self.process is not None and getattr(backend, "kind", None) == "wsgi":
                environ = make_environ(scope, io.BytesIO(b""), 0)
                result = await self.process.run(backend.name, environ, self.max_body, primary.answer(), self.ignore, served_name)
            else:
                await backend(dict(scope, headers=list(scope["headers"])), receive, send)
                other = None if shadow.too_big else shadow.answer()
                result = outcome(primary.answer(), other, self.ignore, served_name, other_name)
        except Exception as exc:
            result = ("error", repr(exc))
        finally:
            done.set()
            self.in_flight[name] -= 1
        if result[0] == "error":
            logger.warning("mirror request to %s failed: %s", other_name, result[1])
        self.stats.record(result[0])
        if result[0] == "mismatch":
            self._keep(scope, served_name, other_name, result[1], time.perf_counter() - started)

    def _keep(self, scope: Scope, served_name: str, other_name: str, mismatch: Mismatch, seconds: float) -> None:
        query = scope.get("query_string", b"").decode("latin1")
        self.stats.recent.append(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "request_id": scope[SCOPE_KEY].request_id,
                "method": scope["method"],
                "path": scope["path"] + (f"?{query}" if query else ""),
                "identity": scope[SCOPE_KEY].identity,
                "served_by": served_name,
                "compared_with": other_name,
                "status": mismatch.status,
                "diff": mismatch.diff,
                "truncated": mismatch.truncated,
                "shadow_ms": round(seconds * 1000, 2),
            }
        )
