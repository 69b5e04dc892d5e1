"""A stand-in for the gateway's admin endpoints, to develop and test the dashboard.

Serves the real dashboard files and a ``/_stackgate/stats`` that follows
docs/admin-api.md and grows every ``STEP`` seconds. ``FakeStats`` switches:
``frozen_at`` pins the clock (the same JSON until a test moves it),
``failing`` answers 503, ``reload_failed`` reports a rejected config reload,
``fresh`` is a gateway that has served nothing yet, ``long_diffs`` keeps
mismatches whose diffs have very long lines (and were cut).

Look at it: ``uvicorn tests.admin.fake_stats_app:app --port 8765``, then open
http://127.0.0.1:8765/_stackgate/ (``STACKGATE_FAKE_FROZEN=1``,
``STACKGATE_FAKE_FAILING=1``, ``STACKGATE_FAKE_RELOAD_FAILED=1``,
``STACKGATE_FAKE_FRESH=1``, ``STACKGATE_FAKE_LONG_DIFFS=1`` set the switches).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.admin.app import DASHBOARD_DIR

STEP = 5
POINTS = 120
FROZEN_NOW = 1795334400
HISTORY = 240
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"

RATES = {"django": 38, "flask": 9, "static": 14}
ROUTES = [
    {"name": "todos-v1", "prefix": "/v1", "backends": {"django": 90, "flask": 10},
     "auth": "required", "roles": ["user"], "throttle": "standard", "mirror": True, "version": "v1"},
    {"name": "todos-v2", "prefix": "/v2", "backends": {"django": 100},
     "auth": "required", "roles": ["user", "tester"], "throttle": "standard", "mirror": True, "version": "v2"},
    {"name": "django-admin", "prefix": "/admin", "backends": {"django": 100},
     "auth": "none", "roles": [], "throttle": None, "mirror": False, "version": None},
    {"name": "static", "prefix": "/static", "backends": {"static": 100},
     "auth": "none", "roles": [], "throttle": None, "mirror": False, "version": None},
]
PROBLEMS = [
    'routes[1].backend: unknown backend "djang" (known: django, flask, static)',
    "throttle.policies.standard.rates[0]: \"100/minit\" must look like \"100/minute\"",
]


def requests_in(backend: str, i: int) -> int:
    wave = 1 + 0.35 * math.sin(i / 9 + len(backend)) + 0.15 * math.sin(i / 2.3)
    return max(0, round(RATES[backend] * wave))


def errors_in(backend: str, i: int) -> int:
    if backend == "flask":
        return 3 + i % 4 if 80 <= i % 150 <= 92 else (1 if i % 17 == 0 else 0)
    if backend == "django":
        return 1 if i % 41 == 0 else 0
    return 0


def client_errors_in(backend: str, i: int) -> int:
    return 0 if backend == "static" else (i * 7 + len(backend)) % 3


def stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def diff(todo: int, served: str, other: str, key: str, old: str, new: str) -> str:
    return "\n".join([
        f"--- {served}",
        f"+++ {other}",
        "@@ -1,6 +1,6 @@",
        " status: 200",
        " {",
        '   "done": false,',
        f'   "id": {todo},',
        f'-  "{key}": {old},',
        f'+  "{key}": {new},',
        '   "title": "water the plants"',
    ])


def mismatches(end: int, count: int) -> list[dict[str, Any]]:
    out = []
    for k in range(count):
        todo = 7 + k * 5
        late = k % 2 == 0
        out.append({
            "time": stamp(end - (count - k) * 37),
            "request_id": f"{0x5eed0000 + k * 977:08x}{k:024x}",
            "method": "GET",
            "path": f"/v1/todos/{todo}",
            "identity": ["alice", "bob", "tester"][k % 3],
            "served_by": "django",
            "compared_with": "flask",
            "status": [200, 200],
            "diff": diff(todo, "django", "flask", "updated_at" if late else "owner",
                         '"2026-11-22T07:41:09.512Z"' if late else '"alice"',
                         '"2026-11-22T07:41:09Z"' if late else '"Alice"'),
            "truncated": False,
            "shadow_ms": round(1.7 + k * 0.45, 2),
        })
    return out


def long_mismatches(end: int) -> list[dict[str, Any]]:
    """A cut diff of minified JSON and one of an unbroken token: lines far wider than any screen."""
    minified = ", ".join(f'"key_{i}": "value number {i} for a very long line"' for i in range(120))
    token = "A" * 3000
    diffs = [
        "\n".join(["--- django", "+++ flask", "@@ -1,3 +1,3 @@", " status: 200", f"-{{{minified}, \"owner\": \"alice\"}}",
                   f"+{{{minified}, \"owner\": \"Alice\"}}", "… diff cut here (more than 200 lines or 16 KiB)"]),
        "\n".join(["--- flask", "+++ django", "@@ -1,4 +1,4 @@", " status: 200", " {", f'-  "token": "{token}"',
                   f'+  "token": "{token}B"', " }"]),
    ]
    return [{
        "time": stamp(end - 60 * (k + 1)),
        "request_id": f"{0x10ff0000 + k:08x}{k:024x}",
        "method": "GET",
        "path": "/v2/todos?" + "&".join(f"filter_{i}=x" for i in range(60)),
        "identity": "alice",
        "served_by": "django" if k == 0 else "flask",
        "compared_with": "flask" if k == 0 else "django",
        "status": [200, 200],
        "diff": diff,
        "truncated": k == 0,
        "shadow_ms": 3.2,
    } for k, diff in enumerate(diffs)]


@dataclass
class FakeStats:
    frozen_at: int | None = None
    failing: bool = False
    reload_failed: bool = False
    fresh: bool = False
    long_diffs: bool = False
    started: float = field(default_factory=time.time)

    def now(self) -> int:
        return int(time.time()) if self.frozen_at is None else self.frozen_at

    def index(self, end: int) -> int:
        """Intervals since the fake's history began (``HISTORY`` before it started)."""
        origin = int(self.started) // STEP * STEP if self.frozen_at is None else FROZEN_NOW
        return HISTORY + (end - origin) // STEP

    def snapshot(self) -> dict[str, Any]:
        return self.empty() if self.fresh else self.busy()

    def empty(self) -> dict[str, Any]:
        now = self.now()
        return {
            "generated_at": stamp(now),
            "config": self.config(now),
            "routes": ROUTES,
            "backends": {"django": {"kind": "wsgi", "threads": 16, "busy": 0, "saturated": False},
                         "flask": {"kind": "wsgi", "threads": 16, "busy": 0, "saturated": False},
                         "static": {"kind": "static"}},
            "totals": {"requests": 0, "by_backend": {}, "throttled": 0, "auth_failures": 0, "mirror": {"matches": 0, "mismatches": 0, "not_comparable": 0}},
            "series": {"step_seconds": STEP, "points": POINTS, "timestamps": [], "backends": {}},
            "mirror": {"todos-v1": self.mirror_route({"matches": 0, "mismatches": 0, "not_comparable": 0}, errors=0, skipped=0, recent=[])},
        }

    def busy(self) -> dict[str, Any]:
        now = self.now()
        end = now // STEP * STEP
        last = self.index(end)
        window = range(max(0, last - POINTS + 1), last + 1)
        by_backend = {}
        for name in sorted(RATES):
            every = range(last + 1)
            total = sum(requests_in(name, i) for i in every)
            five = sum(errors_in(name, i) for i in every)
            four = sum(client_errors_in(name, i) for i in every)
            three = last // 6 if name == "django" else 0
            by_backend[name] = {"requests": total, "2xx": total - five - four - three, "3xx": three, "4xx": four, "5xx": five}
        v1 = {"matches": 118 + last // 2, "mismatches": 3 + last // 60, "not_comparable": 0}
        v2 = {"matches": 40 + last // 3, "mismatches": 0, "not_comparable": 12 + last // 7}
        if self.long_diffs:
            v2["mismatches"] = 2
        return {
            "generated_at": stamp(now),
            "config": self.config(now),
            "routes": ROUTES,
            "backends": {
                "django": {"kind": "wsgi", "threads": 16, "busy": 4 + last % 5, "capacity": 272, "saturated": False, "rejected": 0, "timeouts": 0},
                "flask": {"kind": "wsgi", "threads": 16, "busy": 13 if last % 3 else 16, "capacity": 272,
                          "saturated": last % 3 == 0, "rejected": 2 + last // 50, "timeouts": 1},
                "static": {"kind": "static"},
            },
            "totals": {
                "requests": sum(b["requests"] for b in by_backend.values()),
                "by_backend": by_backend,
                "throttled": 17 + last // 4,
                "auth_failures": 5 + last // 9,
                "mirror": {k: v1[k] + v2[k] for k in v1},
            },
            "series": {
                "step_seconds": STEP,
                "points": POINTS,
                "timestamps": [end - (last - i) * STEP for i in window],
                "backends": {
                    name: {"requests": [requests_in(name, i) for i in window], "errors": [errors_in(name, i) for i in window]}
                    for name in sorted(RATES)
                },
            },
            "mirror": {
                "todos-v1": self.mirror_route(v1, errors=2, skipped=1, recent=mismatches(end, min(v1["mismatches"], 7))),
                "todos-v2": self.mirror_route(v2, errors=0, skipped=0, recent=long_mismatches(end) if self.long_diffs else []),
            },
        }

    def config(self, now: int) -> dict[str, Any]:
        if self.reload_failed:
            last = {"ok": False, "at": stamp(now - 42), "version": "99f5be0a4951",
                    "message": "not applied: the file has problems; the previous config keeps serving", "problems": PROBLEMS}
        else:
            last = {"ok": True, "at": stamp(now - 3600), "version": "99f5be0a4951", "message": "applied", "problems": []}
        return {"version": "99f5be0a4951", "source": "/srv/stackgate/config.toml", "watching": True, "last_reload": last}

    @staticmethod
    def mirror_route(counts: dict[str, int], errors: int, skipped: int, recent: list) -> dict[str, Any]:
        compared = counts["matches"] + counts["mismatches"]
        return {**counts, "errors": errors, "skipped": skipped,
                "match_rate": round(counts["matches"] / compared, 4) if compared else None, "recent_mismatches": recent}


def create_app(fake: FakeStats | None = None) -> Starlette:
    fake = fake or FakeStats()
    headers = {"cache-control": "no-store", "content-security-policy": CSP}
    assets = {p.name for p in DASHBOARD_DIR.iterdir() if not p.name.startswith(".")}

    async def page(request: Request) -> Response:
        return FileResponse(DASHBOARD_DIR / "index.html", headers=headers)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            return JSONResponse({"error": {"status": 404, "code": "not_found", "message": "Not found."}}, 404)
        return FileResponse(DASHBOARD_DIR / name, headers=headers)

    async def stats(request: Request) -> Response:
        if fake.failing:
            body = {"error": {"status": 503, "code": "stats_unavailable", "message": "metrics store unreachable", "request_id": None}}
            return JSONResponse(body, 503, headers=headers)
        return JSONResponse(fake.snapshot(), headers=headers)

    app = Starlette(routes=[
        Route("/_stackgate/", page),
        Route("/_stackgate/dashboard/{name}", asset),
        Route("/_stackgate/stats", stats),
    ])
    app.state.fake = fake
    return app


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes", "on"}


app = create_app(FakeStats(
    frozen_at=FROZEN_NOW if _flag("STACKGATE_FAKE_FROZEN") else None,
    failing=_flag("STACKGATE_FAKE_FAILING"),
    reload_failed=_flag("STACKGATE_FAKE_RELOAD_FAILED"),
    fresh=_flag("STACKGATE_FAKE_FRESH"),
    long_diffs=_flag("STACKGATE_FAKE_LONG_DIFFS"),
))
