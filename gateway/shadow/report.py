"""The migration report (``/_stackgate/migration``) and the mirror's figures for the whole process tree.

Counts come from the Prometheus metrics, which ``stackgate run --workers N``
sums over every worker (``gateway.metrics``); the examples and the endpoint
templates are the answering worker's. Per split route and per endpoint: the
match rate, the top differing fields (noise or real), and per variant
(backend) the 5xx rate and p50/p99 latency. See docs/migration.md.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

from gateway import metrics

#: Fields listed per route and per endpoint, most frequent first.
TOP_FIELDS = 5


def _total(sample: Any) -> bool:
    return sample.name.endswith("_total")


def mirror_totals() -> dict[str, dict[str, Any]]:
    """Route -> ``{"results": {matches: n, ...}, "fields": {field: {"cross": n, "self": {backend: n},
    "checked": {backend: n}}}, "self_checks": {backend: n}}``, summed over every worker."""
    out: dict[str, dict[str, Any]] = {}

    def route(label: str) -> dict[str, Any]:
        return out.setdefault(label, {"results": {}, "fields": {}, "self_checks": {}})

    for family in metrics.registry().collect():
        if family.name == "stackgate_mirror_results":
            for s in filter(_total, family.samples):
                results = route(s.labels["route"])["results"]
                key = metrics.MIRROR_RESULTS.get(s.labels["result"])
                if key:
                    results[key] = results.get(key, 0) + s.value
        elif family.name == "stackgate_mirror_field_differences":
            for s in filter(_total, family.samples):
                field = route(s.labels["route"])["fields"].setdefault(s.labels["field"], {"cross": 0, "self": {}, "checked": {}})
                pair, backend = s.labels["pair"], s.labels["backend"]
                if pair == "cross":
                    field["cross"] += s.value
                elif pair in ("self", "checked"):
                    field[pair][backend] = field[pair].get(backend, 0) + s.value
        elif family.name == "stackgate_mirror_self_checks":
            for s in filter(_total, family.samples):
                checks = route(s.labels["route"])["self_checks"]
                checks[s.labels["backend"]] = checks.get(s.labels["backend"], 0) + s.value
    return out


def quantile(q: float, buckets: list[tuple[float, float]]) -> Optional[float]:
    """The ``q`` quantile of a cumulative histogram ``[(upper bound, count), ...]``, interpolated
    within its bucket as Prometheus' ``histogram_quantile`` does; None without observations."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bound: that bound, as Prometheus answers
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _endpoint_figures() -> dict[str, dict[str, dict[str, Any]]]:
    """Route -> endpoint -> {"variants": {backend: {...}}, "mirror": {result: n}, "fields": {field: n}}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}

    def entry(labels: dict[str, str]) -> dict[str, Any]:
        return out.setdefault(labels["route"], {}).setdefault(labels["endpoint"], {"variants": {}, "mirror": {}, "fields": {}})

    def variant(labels: dict[str, str]) -> dict[str, Any]:
        return entry(labels)["variants"].setdefault(labels["backend"], {"requests": 0, "5xx": 0, "buckets": {}})

    for family in metrics.registry().collect():
        if family.name == "stackgate_endpoint_requests":
            for s in filter(_total, family.samples):
                v = variant(s.labels)
                v["requests"] += s.value
                if s.labels["status_class"] == "5xx":
                    v["5xx"] += s.value
        elif family.name == "stackgate_endpoint_duration_seconds":
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    buckets = variant(s.labels)["buckets"]
                    bound = float(s.labels["le"])
                    buckets[bound] = buckets.get(bound, 0) + s.value
        elif family.name == "stackgate_mirror_endpoint_results":
            for s in filter(_total, family.samples):
                mirror = entry(s.labels)["mirror"]
                key = metrics.MIRROR_RESULTS.get(s.labels["result"], s.labels["result"])
                mirror[key] = mirror.get(key, 0) + s.value
        elif family.name == "stackgate_mirror_endpoint_field_differences":
            for s in filter(_total, family.samples):
                fields = entry(s.labels)["fields"]
                fields[s.labels["field"]] = fields.get(s.labels["field"], 0) + s.value
    return out


def _variants(raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for backend, v in sorted(raw.items()):
        buckets = list(v["buckets"].items())
        p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
        requests = int(v["requests"])
        out[backend] = {
            "requests": requests,
            "5xx": int(v["5xx"]),
            "5xx_rate": round(v["5xx"] / requests, 4) if requests else None,
            "p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        }
    return out


def _merge_variants(endpoints: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for figures in endpoints.values():
        for backend, v in figures["variants"].items():
            m = merged.setdefault(backend, {"requests": 0, "5xx": 0, "buckets": {}})
            m["requests"] += v["requests"]
            m["5xx"] += v["5xx"]
            for bound, count in v["buckets"].items():
                m["buckets"][bound] = m["buckets"].get(bound, 0) + count
    return merged


def _rate(matches: float, mismatches: float) -> Optional[float]:
    compared = matches + mismatches
    return round(matches / compared, 4) if compared else None


def _top(fields: dict[str, float], verdict: Any) -> list[dict[str, Any]]:
    ranked = sorted(fields.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_FIELDS]
    return [{"field": f, "differences": int(n), "verdict": verdict(f)} for f, n in ranked if n]


def migration_report(config: Any, services: Any, rollouts: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Every split route of ``config``: its figures, per endpoint and per variant, and its rollout
    (``rollouts``: route -> the rollout as ``/_stackgate/rollouts`` shows it, gateway/rollout/admin.py)."""
    rollouts = rollouts or {}
    totals = mirror_totals() if metrics.MULTIPROCESS else {}
    endpoints = _endpoint_figures()
    registry = services.mirror or {}
    names = services.endpoints or {}
    routes = []
    for route in config.routes:
        split = getattr(route, "split", None)
        if not split:
            continue
        label = route.label
        stats = registry.get(label)
        shared = totals.get(label, {}) if metrics.MULTIPROCESS else None
        if stats is not None:  # a mirrored route: its figures as /_stackgate/mirror shows them
            shown = stats.as_dict(shared)
            results = {k: shown[k] for k in metrics.MIRROR_RESULTS.values()}
            fields = shown["fields"]
        else:
            results, fields = {}, {}

        def verdict(field: str, fields: dict = fields) -> str:
            return fields[field]["verdict"] if field in fields else "real"

        route_endpoints = endpoints.get(label, {})
        endpoint_names = names.get(label)
        rows = []
        for endpoint, figures in sorted(route_endpoints.items()):
            m = figures["mirror"]
            rows.append(
                {
                    "endpoint": endpoint,
                    "templates": endpoint_names.templates(endpoint) if endpoint_names is not None else {},
                    "matches": int(m.get("matches", 0)),
                    "mismatches": int(m.get("mismatches", 0)),
                    "match_rate": _rate(m.get("matches", 0), m.get("mismatches", 0)),
                    "top_fields": _top(figures["fields"], verdict),
                    "variants": _variants(figures["variants"]),
                }
            )
        routes.append(
            {
                "route": label,
                "prefix": route.prefix,
                "backends": dict(split),
                "mirror": bool(getattr(route, "mirror", False)),
                "matches": int(results.get("matches", 0)),
                "mismatches": int(results.get("mismatches", 0)),
                "match_rate": _rate(results.get("matches", 0), results.get("mismatches", 0)),
                "top_fields": _top({f: c["cross_differences"] for f, c in fields.items()}, verdict),
                "variants": _variants(_merge_variants(route_endpoints)),
                "endpoints": rows,
                "rollout": rollouts.get(label),
            }
        )
    return {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "workers_summed": metrics.MULTIPROCESS, "routes": routes}
