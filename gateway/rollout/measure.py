"""Per-step figures: request counts, 5xx counts and fixed latency buckets per variant, mirror results.

A worker counts into a ``Tally`` (plain dict increments on the request path)
and hands its deltas to the store about once a second; the store sums them over
every worker and host, under the step's window id. Buckets are fixed, so sums
of buckets are exact and a percentile is read off the summed buckets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

TARGET, SOURCE = "t", "s"
"""Variant prefixes of the figure names."""
MATCH, MISMATCH = "m:match", "m:mismatch"

_FIRST = 0.0001  # 0.1 ms
_RATIO = 1.1  # each bucket 10 % wider than the one before: percentile error under 10 %
_COUNT = 160  # up to ~400 s


def bucket(seconds: float) -> int:
    if seconds <= _FIRST:
        return 0
    return min(_COUNT - 1, int(math.log(seconds / _FIRST, _RATIO)) + 1)


def bucket_upper(index: int) -> float:
    """The upper bound of a bucket, in seconds."""
    return _FIRST * _RATIO**index


class Tally:
    """Figures counted since the last flush, keyed by window id then figure name."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, window: str, name: str, amount: int = 1) -> None:
        figures = self.counts.get(window)
        if figures is None:
            figures = self.counts[window] = {}
        figures[name] = figures.get(name, 0) + amount

    def response(self, window: str, variant: str, status: int, seconds: float) -> None:
        self.add(window, variant + ":n")
        if status >= 500:
            self.add(window, variant + ":5xx")
        self.add(window, f"{variant}:b{bucket(seconds)}")

    def take(self) -> dict[str, dict[str, int]]:
        counts, self.counts = self.counts, {}
        return counts


@dataclass(frozen=True)
class Figures:
    """One step's summed figures, as the gates read them."""

    target_requests: int
    source_requests: int
    target_5xx: int
    source_5xx: int
    target_buckets: dict[int, int]
    source_buckets: dict[int, int]
    matches: int
    mismatches: int

    @classmethod
    def of(cls, raw: dict[str, int]) -> "Figures":
        def buckets(variant: str) -> dict[int, int]:
            prefix = variant + ":b"
            return {int(k[len(prefix):]): v for k, v in raw.items() if k.startswith(prefix)}

        return cls(
            target_requests=raw.get(TARGET + ":n", 0), source_requests=raw.get(SOURCE + ":n", 0),
            target_5xx=raw.get(TARGET + ":5xx", 0), source_5xx=raw.get(SOURCE + ":5xx", 0),
            target_buckets=buckets(TARGET), source_buckets=buckets(SOURCE),
            matches=raw.get(MATCH, 0), mismatches=raw.get(MISMATCH, 0),
        )

    def error_rate(self, variant: str) -> Optional[float]:
        n = self.target_requests if variant == TARGET else self.source_requests
        errors = self.target_5xx if variant == TARGET else self.source_5xx
        return errors / n if n else None

    def percentile(self, variant: str, q: float) -> Optional[float]:
        """The ``q`` (0-100) latency percentile in seconds: the upper bound of its bucket."""
        counts = self.target_buckets if variant == TARGET else self.source_buckets
        total = sum(counts.values())
        if not total:
            return None
        rank = math.ceil(total * q / 100)
        seen = 0
        for index in sorted(counts):
            seen += counts[index]
            if seen >= rank:
                return bucket_upper(index)
        return bucket_upper(max(counts))

    def match_rate(self) -> Optional[float]:
        compared = self.matches + self.mismatches
        return self.matches / compared if compared else None

    def summary(self, percentile: int) -> dict:
        def ms(value: Optional[float]) -> Optional[float]:
            return None if value is None else round(value * 1000, 3)

        def rate(value: Optional[float]) -> Optional[float]:
            return None if value is None else round(value, 4)

        return {
            "target": {"requests": self.target_requests, "5xx": self.target_5xx, "5xx_rate": rate(self.error_rate(TARGET)),
                       f"p{percentile}_ms": ms(self.percentile(TARGET, percentile))},
            "source": {"requests": self.source_requests, "5xx": self.source_5xx, "5xx_rate": rate(self.error_rate(SOURCE)),
                       f"p{percentile}_ms": ms(self.percentile(SOURCE, percentile))},
            "mirror": {"matches": self.matches, "mismatches": self.mismatches, "match_rate": rate(self.match_rate())},
        }
