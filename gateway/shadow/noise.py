"""Noise: JSON fields that differ between two answers of one stack to one request (the Diffy way).

When a mirrored pair differs on a field not yet settled, the request is
checked: replayed once more on each stack of the pair, each second answer
compared with that stack's first. A field whose second answers differed in at
least ``NOISE_MIN_RATE`` of its last ``WINDOW`` checks, on every stack of the
split, is noise, left out of the match rate; otherwise it is real. A field
checked ``CHECKS_TO_SETTLE`` times on each stack is settled: not checked again
for its own sake. A share of the mirrored requests
(``[split].mirror_noise_share``) is checked whatever its pair's outcome, which
keeps every verdict fresh. Fields of ``mirror_significant``, the status and a
body that is not JSON are never noise. See docs/migration.md.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterable, Optional

from gateway.shadow.compare import BODY_FIELD, MISSING, OTHER_FIELDS, STATUS_FIELD

#: Checks on each stack after which a field's verdict is settled (it asks for no more checks of its own).
CHECKS_TO_SETTLE = 3
#: A field is noise when, on every stack, at least this share of its recent checks differed ...
NOISE_MIN_RATE = 0.5
#: ... of its last this many checks on that stack (older ones are forgotten: a verdict can change).
WINDOW = 20
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


def is_noise(self_diffs: dict[str, int], checks: dict[str, int], backends: Iterable[str], field: str, significant: Significant) -> bool:
    """The rule, on counts (from one worker's recent checks, or summed over every worker): on every
    stack, at least ``NOISE_MIN_RATE`` of the checks that looked at ``field`` found it differing."""
    if field in significant or field == OTHER_FIELDS:
        return False
    backends = list(backends)
    return bool(backends) and all(checks.get(b, 0) > 0 and self_diffs.get(b, 0) >= NOISE_MIN_RATE * checks[b] for b in backends)


class FieldRecord:
    __slots__ = ("cross", "self_diffs", "checks", "recent", "examples")

    def __init__(self) -> None:
        self.cross = 0
        """Cross-stack pairs that differed here."""
        self.self_diffs: dict[str, int] = {}
        """Backend -> second answers of that stack that differed here."""
        self.checks: dict[str, int] = {}
        """Backend -> checks on that stack that looked at this field (it was in question, or differed)."""
        self.recent: dict[str, deque] = {}
        """Backend -> the last ``WINDOW`` of those checks: True where the field differed."""
        self.examples: deque = deque(maxlen=EXAMPLES)

    def recent_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        return {b: sum(w) for b, w in self.recent.items()}, {b: len(w) for b, w in self.recent.items()}


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
        return record is not None and is_noise(*record.recent_counts(), self.backends, field, self.significant)

    def settled(self) -> frozenset[str]:
        """Fields whose verdict a check would not change: noise, significant, or checked enough."""
        out = set()
        for field, record in self.fields.items():
            if field in self.significant or self.noise(field) or field == OTHER_FIELDS:
                out.add(field)
            elif all(len(record.recent.get(b, ())) >= CHECKS_TO_SETTLE for b in self.backends):
                out.add(field)
        return frozenset(out)

    def needs_check(self, fields: Iterable[str]) -> bool:
        settled = self.settled()
        return any(f not in settled and f not in self.significant for f in fields)

    def learn(self, backend: str, in_question: dict[str, Any], differing: dict[str, Any], side: int = 0) -> None:
        """One check on ``backend``: the cross pair's differing fields (field -> its two values), and
        those its second answer differed on. ``side``: ``backend``'s value in the pair (0 served,
        1 the copy); a field ``backend``'s answer does not have tells nothing of its noise."""
        from gateway import metrics

        self.self_checks[backend] = self.self_checks.get(backend, 0) + 1
        metrics.MIRROR_SELF_CHECKS.labels(self.route, backend).inc()
        looked_at: dict[str, bool] = {}
        for field, values in in_question.items():
            if values and values[side] == MISSING:
                continue
            looked_at[self._record(field)[0]] = False
        for field in differing:
            looked_at[self._record(field)[0]] = True
        for field, differed in looked_at.items():
            record = self.fields[field]
            record.checks[backend] = record.checks.get(backend, 0) + 1
            record.recent.setdefault(backend, deque(maxlen=WINDOW)).append(differed)
            metrics.MIRROR_FIELDS.labels(self.route, field, "checked", backend).inc()
            if differed:
                record.self_diffs[backend] = record.self_diffs.get(backend, 0) + 1
                metrics.MIRROR_FIELDS.labels(self.route, field, "self", backend).inc()
        for field, values in differing.items():
            self.fields[self._record(field)[0]].examples.append(_example(None, f"{backend} twice", values))

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
            if counts:  # summed over every worker, since each started
                cross, self_diffs, checks = counts["cross"], counts["self"], counts["checked"]
                noise = is_noise(self_diffs, checks, self.backends, field, self.significant)
            else:
                cross, self_diffs, checks = record.cross, record.self_diffs, record.checks
                noise = self.noise(field)
            fields[field] = {
                "verdict": "noise" if noise else "real",
                "significant": field in self.significant,
                "cross_differences": int(cross),
                "self_differences": {b: int(n) for b, n in self_diffs.items()},
                "self_checks": {b: int(n) for b, n in checks.items()},
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
