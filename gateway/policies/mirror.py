"""Shadow comparison: replay a safe request on the backend that did not serve it, and compare.

The copy runs after the client's response, as the same identity, for GET and
HEAD only; ``gateway.shadow.compare`` compares, field by field, and
``gateway.shadow.noise`` learns which fields are noise: a pair that differs
only there counts as a match. Mismatches are kept per route
(``[split].mirror_keep``). It pauses while the other backend's pool is
saturated, and skips (and counts) copies beyond ``IN_FLIGHT`` per route and backend.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from gateway import metrics, telemetry
from gateway.context import SCOPE_KEY
from gateway.backends.wsgi import make_environ
from gateway.shadow.compare import Answer, Check, Mismatch, content_type, outcome, self_fields
from gateway.shadow.noise import NoiseModel
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
    noise: NoiseModel = None  # type: ignore[assignment]
    """What this route learned of its fields (``gateway.shadow.noise``)."""

    def __post_init__(self) -> None:
        if self.noise is None:
            self.noise = NoiseModel(self.route, ())

    def record(self, result: str) -> None:
        """Count one result: ``match``, ``mismatch``, ``not_comparable``, ``error`` or ``skipped``.

        ``mismatch`` is a pair that differs on a field that is not noise (nor ``mirror_ignore``d);
        one that differs on noise only is a ``match``.
        """
        attribute = metrics.MIRROR_RESULTS[result]
        setattr(self, attribute, getattr(self, attribute) + 1)
        metrics.MIRROR.labels(self.route, result).inc()
        if self.rollout is not None:
            self.rollout.observe_mirror(result)

    def as_dict(self, shared: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """This route's figures; ``shared`` (``gateway.shadow.report.mirror_totals``): the counts
        summed over every worker, which replace this worker's. The examples are this worker's."""
        counts = {attr: getattr(self, attr) for attr in metrics.MIRROR_RESULTS.values()}
        if shared is not None:
            counts.update({attr: int(shared.get("results", {}).get(attr, 0)) for attr in counts})
        compared = counts["matches"] + counts["mismatches"]
        return {
            **counts,
            "match_rate": round(counts["matches"] / compared, 4) if compared else None,
            "recent_mismatches": list(self.recent),
            **self.noise.as_dict(shared),
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
        self, route: Any, backends: dict[bytes, Any], stats: RouteMirrorStats, max_body: int, process: Any = None,
        noise_share: float = 0.0,
    ) -> None:
        self.route_label = route.label
        self.process = process
        self.noise_share = noise_share
        self.backends = backends
        self.ignore = frozenset(route.mirror_ignore)
        self.stats = stats
        self.max_body = max_body
        self.in_flight: dict[bytes, int] = {}
        self.tasks: set[asyncio.Task] = set()

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, name: bytes, backend: Any, endpoint: str = ""
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
            shadow = self._shadow(shadow_scope, name, primary, other_name, other, endpoint)
            task = asyncio.ensure_future(telemetry.mirror_copy(shadow, self.route_label, other_name))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _copy(self, scope: Scope, backend: Any) -> Optional[Answer]:
        """Run one copy of the request on ``backend`` here, in the gateway's process: its answer, or
        None when its body is over ``max_body``."""
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

        try:
            await backend(dict(scope, headers=list(scope["headers"])), receive, send)
        finally:
            done.set()
        return None if shadow.too_big else shadow.answer()

    async def _check_here(self, scope: Scope, backend: Any, first: Answer) -> Optional[dict[str, Any]]:
        """Replay on ``backend`` in this process and name the fields its answer differs from ``first`` on;
        None when it failed or cannot be compared (a failed check never fails the copy it checks)."""
        try:
            return self_fields(first, await self._copy(scope, backend), self.ignore)
        except Exception as exc:
            logger.warning("a noise check on %s failed: %r", getattr(backend, "name", "?"), exc)
            return None

    async def _shadow(self, scope: Scope, served: bytes, primary: _Captured, name: bytes, backend: Any, endpoint: str = "") -> None:
        started = time.perf_counter()
        served_name, other_name = served.decode(), name.decode()
        served_answer = primary.answer()
        model = self.stats.noise
        # A check replays the request once more on each stack: on a share of requests whatever the
        # outcome, else only when the pair differs on a field whose verdict is not settled yet.
        force = self.noise_share > 0 and random.random() < self.noise_share
        checks: dict[str, Any] = {}
        try:
            served_backend = self.backends.get(served)
            if self.process is not None and getattr(backend, "kind", None) == "wsgi":
                environ = make_environ(scope, io.BytesIO(b""), 0)
                served_in_shadow = getattr(served_backend, "kind", None) == "wsgi" and served_name in self.process.apps
                check = Check(None if force else model.settled(), served_name if served_in_shadow else None)
                result, checks = await self.process.run(backend.name, environ, self.max_body, served_answer, self.ignore, served_name, check)
                if checks and not served_in_shadow and served_backend is not None:
                    checks[served_name] = await self._check_here(scope, served_backend, served_answer)
            else:
                other = await self._copy(scope, backend)
                result = outcome(served_answer, other, self.ignore, served_name, other_name)
                if other is not None and Check(None if force else model.settled()).wanted(result):
                    checks[other_name] = await self._check_here(scope, backend, other)
                    if served_backend is not None:
                        checks[served_name] = await self._check_here(scope, served_backend, served_answer)
        except Exception as exc:
            result = ("error", repr(exc))
        finally:
            self.in_flight[name] -= 1
        kind = result[0]
        if kind == "error":
            logger.warning("mirror request to %s failed: %s", other_name, result[1])
        in_question = result[1].fields if kind == "mismatch" else {}
        for stack, differing in checks.items():
            if differing is not None:
                model.learn(stack, in_question, differing, 0 if stack == served_name else 1)
        real: list[str] = []
        if kind == "mismatch" and result[1].fields:
            mismatch: Mismatch = result[1]
            request = {"method": scope["method"], "path": scope["path"], "request_id": scope[SCOPE_KEY].request_id}
            model.count_cross(mismatch.fields, request, served_name, other_name, endpoint)
            real = model.real_fields(mismatch.fields)
            if not real:
                kind = "match"  # it differs on noise only
        self.stats.record(kind)
        if endpoint:
            metrics.MIRROR_ENDPOINT.labels(self.route_label, endpoint, kind).inc()
        if kind == "mismatch":
            self._keep(scope, served_name, other_name, result[1], time.perf_counter() - started, real, endpoint)

    def _keep(self, scope: Scope, served_name: str, other_name: str, mismatch: Mismatch, seconds: float,
              real: Optional[list[str]] = None, endpoint: str = "") -> None:
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
                "endpoint": endpoint,
                "fields": list(real if real is not None else mismatch.fields),
                "noise_fields": [f for f in mismatch.fields if real is not None and f not in real],
            }
        )
