"""Prometheus metrics, correct under ``--workers N``.

``stackgate run`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before
any worker starts, so every worker writes its samples there and any worker
can answer ``/_stackgate/metrics`` with the sum over all of them. Without that
variable (tests, another ASGI server) the process's own registry is used.

Label children are cached per label tuple: the hot path is a dict lookup and
an increment.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CONTENT_TYPE_LATEST

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()

REQUESTS = Counter(
    "stackgate_requests",
    "Requests answered, by route, backend and status class.",
    ["route", "backend", "status_class"],
)
LATENCY = Histogram(
    "stackgate_request_duration_seconds",
    "Time from request to the end of the response, by route and backend.",
    ["route", "backend"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
AUTH_FAILURES = Counter("stackgate_auth_failures", "Requests refused by authentication (401) or authorisation (403).", ["route", "status"])
AUTH_FAILURES_THROTTLED = Counter(
    "stackgate_auth_failures_throttled",
    "Requests refused (429) because their client address, or address and claimed identity, failed authentication too often.",
    ["limit"],
)
AUTH_PASSWORD_CHECKS = Counter(
    "stackgate_auth_password_checks",
    "HTTP Basic password hash verifications by result (ok, failed; unknown users included), and refusals with the pool full (busy).",
    ["result"],
)
HOSTS_REFUSED = Counter(
    "stackgate_hosts_refused",
    "Requests refused for their Host: bad_host (invalid or missing, 400), host_not_allowed (not in [gateway] allowed_hosts, 421).",
    ["code"],
)
THROTTLED = Counter("stackgate_throttled", "Requests refused by a throttle policy (429).", ["route"])
THROTTLE_STORE_ERRORS = Counter("stackgate_throttle_store_errors", "Requests for which the throttle storage failed.", ["route"])
MIRROR = Counter("stackgate_mirror_results", "Shadow comparisons by result (match, mismatch, not_comparable, error, skipped).", ["route", "result"])
#: The ``result`` label of ``MIRROR`` -> its count's name in the mirror stats and totals.
MIRROR_RESULTS = {"match": "matches", "mismatch": "mismatches", "not_comparable": "not_comparable", "error": "errors", "skipped": "skipped"}
# -- noise-aware comparison and the migration report (gateway/shadow/noise.py, docs/migration.md) --
# Field and endpoint labels are capped per route (compare.FIELDS_MAX, noise.FIELD_LABELS_MAX,
# endpoints.ENDPOINTS_MAX), so these stay of bounded cardinality.
MIRROR_FIELDS = Counter(
    "stackgate_mirror_field_differences",
    "Mirrored pairs that differed at a JSON field path, by pair (cross: the two stacks; self: one stack answering one request twice).",
    ["route", "field", "pair", "backend"],
)
MIRROR_SELF_CHECKS = Counter("stackgate_mirror_self_checks", "Requests replayed on one stack a second time to learn its noise.", ["route", "backend"])
MIRROR_ENDPOINT = Counter("stackgate_mirror_endpoint_results", "Shadow comparisons by endpoint and result.", ["route", "endpoint", "result"])
MIRROR_ENDPOINT_FIELDS = Counter(
    "stackgate_mirror_endpoint_field_differences", "Cross-stack pairs that differed at a field, by endpoint.", ["route", "endpoint", "field"]
)
ENDPOINT_5XX = Counter(
    "stackgate_endpoint_5xx", "5xx answers of split routes, by endpoint and backend (all answers: the duration's _count).", ["route", "endpoint", "backend"]
)
ENDPOINT_LATENCY = Histogram(
    "stackgate_endpoint_duration_seconds",
    "Time from request to the end of the response on split routes, by endpoint and backend.",
    ["route", "endpoint", "backend"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BACKEND_BUSY = Gauge("stackgate_backend_busy", "Requests holding or waiting for a backend's threads.", ["backend"], multiprocess_mode="livesum")
BACKEND_THREADS = Gauge("stackgate_backend_threads", "Worker threads of a WSGI backend's pool.", ["backend"], multiprocess_mode="livesum")
BACKEND_REJECTED = Counter("stackgate_backend_rejected", "Requests a backend refused: pool full (503) or too slow (504).", ["backend", "reason"])
REBALANCED = Counter(
    "stackgate_connections_rebalanced",
    "Keep-alive connections a worker closed (Connection: close) because it held more than its share (--workers N).",
)
TRACE_SPANS_EXPORTED = Counter("stackgate_trace_spans_exported", "Spans the OTLP endpoint took ([telemetry]).")
TRACE_SPANS_DROPPED = Counter(
    "stackgate_trace_spans_dropped",
    "Spans not exported ([telemetry]): queue_full (the export queue was full), export_failed (the OTLP endpoint did not take them).",
    ["reason"],
)
RELOADS = Counter("stackgate_config_reloads", "Config reloads by result (applied, invalid, restart_required).", ["result"])

# OpenID Connect keys and token introspection (gateway.policies.auth.jwks, .introspection), by [auth.jwt.NAME].
JWKS_FETCHES = Counter(
    "stackgate_jwks_fetches",
    "Fetches of an issuer's signing keys (discovery document and JWKS) by outcome (ok, error, invalid, limited).",
    ["issuer", "outcome"],
)
JWKS_KEY_AGE = Gauge(
    "stackgate_jwks_key_age_seconds",
    "Seconds since an issuer's signing keys were last fetched successfully (the oldest worker's).",
    ["issuer"],
    multiprocess_mode="livemax",
)
JWKS_KEYS = Gauge("stackgate_jwks_keys", "Signing keys held for an issuer.", ["issuer"], multiprocess_mode="livemin")
INTROSPECTIONS = Counter(
    "stackgate_token_introspections",
    "Opaque tokens checked at an issuer's introspection endpoint by outcome (active, inactive, error), and answers from the cache (cached).",
    ["issuer", "outcome"],
)
_before_scrape: list[Any] = []


def before_scrape(hook: Any) -> None:
    """Call ``hook()`` before each exposition (to bring ages up to date)."""
    if hook not in _before_scrape:
        _before_scrape.append(hook)


def forget_before_scrape(hook: Any) -> None:
    if hook in _before_scrape:
        _before_scrape.remove(hook)


_request_children: dict[tuple[str, str, str], Any] = {}
_latency_children: dict[tuple[str, str], Any] = {}
_STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def observe_request(route: str, backend: str, status: int, seconds: float) -> None:
    status_class = _STATUS_CLASS.get(status // 100, "other")
    key = (route, backend, status_class)
    child = _request_children.get(key)
    if child is None:
        child = _request_children[key] = REQUESTS.labels(route, backend, status_class)
    child.inc()
    lkey = (route, backend)
    lchild = _latency_children.get(lkey)
    if lchild is None:
        lchild = _latency_children[lkey] = LATENCY.labels(route, backend)
    lchild.observe(seconds)


_endpoint_latency_children: dict[tuple[str, str, str], Any] = {}


def observe_endpoint(route: str, endpoint: str, backend: str, status: int, seconds: float) -> None:
    """One answer of a split route, by endpoint (``gateway.shadow.endpoints``): the migration report's figures."""
    key = (route, endpoint, backend)
    child = _endpoint_latency_children.get(key)
    if child is None:
        child = _endpoint_latency_children[key] = ENDPOINT_LATENCY.labels(*key)
    child.observe(seconds)
    if status >= 500:
        ENDPOINT_5XX.labels(*key).inc()


def registry() -> Any:
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        collecting = CollectorRegistry()
        multiprocess.MultiProcessCollector(collecting)
        return collecting
    return DEFAULT_REGISTRY


def exposition() -> bytes:
    for hook in _before_scrape:
        hook()
    return generate_latest(registry())


def samples(name: str) -> Iterable[Any]:
    """Every sample of one metric family (summed over workers)."""
    for family in registry().collect():
        if family.name == name:
            yield from family.samples


def totals() -> dict[str, Any]:
    """Request counts by backend and status class, and the refusal counters."""
    by_backend: dict[str, dict[str, float]] = {}
    requests = throttled = auth_failures = 0.0
    mirror: dict[str, float] = {"matches": 0, "mismatches": 0, "not_comparable": 0}
    for family in registry().collect():
        if family.name == "stackgate_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    entry = by_backend.setdefault(sample.labels["backend"], {"requests": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0})
                    entry["requests"] += sample.value
                    entry[sample.labels["status_class"]] = entry.get(sample.labels["status_class"], 0) + sample.value
                    requests += sample.value
        elif family.name == "stackgate_throttled":
            throttled += sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "stackgate_auth_failures":
            auth_failures += sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "stackgate_mirror_results":
            for s in family.samples:
                key = MIRROR_RESULTS.get(s.labels["result"])
                if s.name.endswith("_total") and key in mirror:
                    mirror[key] += s.value
    return {
        "requests": int(requests),
        "by_backend": {name: {k: int(v) for k, v in entry.items()} for name, entry in by_backend.items()},
        "throttled": int(throttled),
        "auth_failures": int(auth_failures),
        "mirror": {k: int(v) for k, v in mirror.items()},
    }


def forget_dead_workers() -> list[int]:
    """Drop the live gauges (busy, threads) of workers that are gone, e.g. killed and replaced by uvicorn.

    A worker forgets itself at shutdown; one that was killed cannot, so each
    worker does it for the others when it starts.
    """
    if not MULTIPROCESS:
        return []
    import glob
    import re

    from prometheus_client import multiprocess

    gone = set()
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "gauge_live*_*.db")):
        match = re.search(r"_(\d+)\.db$", path)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            gone.add(int(match.group(1)))
    for pid in gone:
        multiprocess.mark_process_dead(pid)
    return sorted(gone)


def mark_process_dead(pid: int) -> None:
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
