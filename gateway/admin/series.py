"""Requests and errors per backend over the last minutes, for the dashboard's charts.

Sampled from the (multi-process) metrics at most once per step, so every
worker shows the same series and nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from gateway import metrics

STEP_SECONDS = 5
POINTS = 120


class TrafficSeries:
    def __init__(self, step: int = STEP_SECONDS, points: int = POINTS) -> None:
        self.step = step
        self.points = points
        self.timestamps: deque[int] = deque(maxlen=points)
        self.values: dict[str, dict[str, deque[int]]] = {}
        self.previous: dict[str, tuple[int, int]] = {}

    def sample(self, now: float | None = None) -> None:
        """Close the current interval if it is over; cheap to call on every read."""
        end = int(now if now is not None else time.time()) // self.step * self.step
        if self.timestamps and end <= self.timestamps[-1]:
            return
        totals = metrics.totals()["by_backend"]
        for name, counts in totals.items():
            current = (counts["requests"], counts.get("5xx", 0))
            before = self.previous.get(name, current if not self.timestamps else (0, 0))
            series = self.values.setdefault(
                name, {"requests": deque([0] * len(self.timestamps), maxlen=self.points), "errors": deque([0] * len(self.timestamps), maxlen=self.points)}
            )
            series["requests"].append(max(0, current[0] - before[0]))
            series["errors"].append(max(0, current[1] - before[1]))
            self.previous[name] = current
        for name, series in self.values.items():
            if name not in totals:
                series["requests"].append(0)
                series["errors"].append(0)
        self.timestamps.append(end)

    async def run(self) -> None:
        """Sample at every interval's end from process start, so the charts have no gaps."""
        self.sample()
        while True:
            await asyncio.sleep(self.step - time.time() % self.step + 0.01)
            self.sample()

    def as_dict(self) -> dict[str, Any]:
        return {
            "step_seconds": self.step,
            "points": self.points,
            "timestamps": list(self.timestamps),
            "backends": {name: {k: list(v) for k, v in series.items()} for name, series in self.values.items()},
        }
