"""Noise: JSON fields that differ between two answers of one stack to one request (the Diffy way).

When a mirrored pair differs on a field not yet settled, the request is
checked: replayed once more on each stack of the pair, each second answer
compared with that stack's first. A field that differed so on every stack of
the split is noise, left out of the match rate; one checked
``CHECKS_TO_SETTLE`` times on each stack without differing is real, and is not
checked again. A share of the mirrored requests (``[split].mirror_noise_share``)
is checked whatever its pair's outcome, so that learning goes on. Fields of
``mirror_significant``, the status and a body that is not JSON are never noise.
See docs/migration.md.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterable, Optional

from gateway.shadow.compare import BODY_FIELD, OTHER_FIELDS, STATUS_FIELD

#: Checks on each stack after which a field that never differed there is settled as real.
CHECKS_TO_SETTLE = 3
#: Fields one route tracks (and labels in metrics); more are counted as ``OTHER_FIELDS``.
FIELD_LABELS_MAX = 48
#: Examples kept per field (bounded memory: FIELD_LABELS_MAX x EXAMPLES per route).
EXAMPLES = 3


class Significant:
    """``mirror_significant``: a full path (``results[].title``) or a key name at any depth (``title``)."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = list(entries)
        self.paths = frozenset(e for e in entries if "." in e or "[" in e)
        self.keys = frozenset(e for e in entries if e not in self.paths)

    def __contains__(self, field: str) -> bool:
        if field in (STATUS_FIELD, BODY_FIELD) or field in self.paths:
            return True
        last = field.rsplit(".", 1)[-1].removesuffix("[]")
        while last.endswith("[]"):
            last = last[:-2]
        return last in self.keys


def is_noise(self_diffs: dict[str, int], backends: Iterable[str], field: str, significant: Significant) -> bool:
    """The rule, on counts from one worker or summed over all: differed on a second answer of every stack."""
    if field in significant or field == OTHER_FIELDS:
        return False
    backends = list(backends)
    return bool(backends) and all(self_diffs.get(b, 0) > 0 for b in backends)


class FieldRecord:
    __slots__ = ("cross", "self_diffs", "checks", "examples")

    def __init__(self) -> None:
        self.cross = 0
        """Cross-stack pairs that differed here."""
        self.self_diffs: dict[str, int] = {}
        """Backend -> second answers of that stack that differed here."""
        self.checks: dict[str, int] = {}
        """Backend -> checks made on that stack while this field was in question."""
        self.examples: deque = deque(maxlen=EXAMPLES)


class NoiseModel:
    """One route's fields: what was learned, per-field counts, a few examples of each."""

    def __init__(self, route: str, backends: Iterable[str], significant: Iterable[str] = ()) -> None:
        self.route = route
        self.configure(backends, significant)
        self.fields: dict[str, FieldRecord] = {}
        self.self_checks: dict[str, int] = {}

    def configure(self, backends: Iterable[str], significant: Iterable[str]) -> None:
        """A reload may change the split's backends and ``mirror_significant``; what was learned stays."""
        self.backends = tuple(backends)
        self.significant = Significant(significant)

    def _record(self, field: str) -> tuple[str, FieldRecord]:
        record = self.fields.get(field)
        if record is None:
            if len(self.fields) >= FIELD_LABELS_MAX:
                field = OTHER_FIELDS
                record = self.fields.get(field)
            if record is None:
                record = self.fields[field] = FieldRecord()
        return field, record

    def noise(self, field: str) -> bool:
        record = self.fields.get(field)
        return record is not None and is_noise(record.self_diffs, self.backends, field, self.significant)

    def settled(self) -> frozenset[str]:
        """Fields whose verdict a check would not change: noise, significant, or checked enough."""
        out = set()
        for field, record in self.fields.items():
            if field in self.significant or self.noise(field) or field == OTHER_FIELDS:
                out.add(field)
            elif all(record.checks.get(b, 0) >= CHECKS_TO_SETTLE for b in self.backends):
                out.add(field)
        return frozenset(out)

    def needs_check(self, fields: Iterable[str]) -> bool:
        settled = self.settled()
        return any(f not in settled and f not in self.significant for f in fields)

    def learn(self, backend: str, in_question: Iterable[str], differing: dict[str, Any]) -> None:
        """One check on ``backend``: the fields the cross pair differed on, and those its second answer differed on."""
        from gateway import metrics

        self.self_checks[backend] = self.self_checks.get(backend, 0) + 1
        metrics.MIRROR_SELF_CHECKS.labels(self.route, backend).inc()
        for field in in_question:
            _, record = self._record(field)
            record.checks[backend] = record.checks.get(backend, 0) + 1
        for field, values in differing.items():
            field, record = self._record(field)
            record.self_diffs[backend] = record.self_diffs.get(backend, 0) + 1
            record.examples.append(_example(None, f"{backend} twice", values))
            metrics.MIRROR_FIELDS.labels(self.route, field, "self", backend).inc()

    def real_fields(self, fields: Iterable[str]) -> list[str]:
        """Of a cross pair's differing fields, those that are not noise."""
        return [f for f in fields if not self.noise(f)]

    def count_cross(self, fields: dict[str, Any], request: Optional[dict[str, Any]], served: str, other: str, endpoint: str) -> None:
        from gateway import metrics

        for field, values in fields.items():
            field, record = self._record(field)
            record.cross += 1
            record.examples.append(_example(request, f"{served} vs {other}", values))
            metrics.MIRROR_FIELDS.labels(self.route, field, "cross", other).inc()
            metrics.MIRROR_ENDPOINT_FIELDS.labels(self.route, endpoint, field).inc()

    def as_dict(self, shared: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Per field: cross and self counts, noise or real, examples. ``shared``: counts summed over
        every worker (``report.mirror_totals``), used instead of this worker's where given."""
        fields = {}
        names = set(self.fields) | set((shared or {}).get("fields", {}))
        for field in names:
            record = self.fields.get(field) or FieldRecord()
            counts = (shared or {}).get("fields", {}).get(field)
            cross = counts["cross"] if counts else record.cross
            self_diffs = counts["self"] if counts else record.self_diffs
            noise = is_noise(self_diffs, self.backends, field, self.significant)
            fields[field] = {
                "verdict": "noise" if noise else "real",
                "significant": field in self.significant,
                "cross_differences": int(cross),
                "self_differences": {b: int(n) for b, n in self_diffs.items()},
                "examples": list(record.examples),
            }
        checks = (shared or {}).get("self_checks") or self.self_checks
        ordered = dict(sorted(fields.items(), key=lambda kv: (-kv[1]["cross_differences"], kv[0])))
        return {"self_checks": {b: int(n) for b, n in checks.items()}, "fields": ordered}


def _example(request: Optional[dict[str, Any]], pair: str, values: Any) -> dict[str, Any]:
    out = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "pair": pair, "values": list(values)}
    if request:
        out.update(request)
    return out
