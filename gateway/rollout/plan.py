"""The ``rollout`` key of a split route: target, steps, per-step minimums, gates."""

from __future__ import annotations

import hashlib
import json
from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from gateway.schema import Schema

MIN_STEP_SECONDS = 1.0
"""The shortest ``min_time`` allowed: figures are flushed and decided about once a second."""


class Gates(Schema):
    """``rollout.gates``: what must hold over a step's window, target against source."""

    max_5xx_increase: float = Field(0.01, ge=0, le=1)
    """The target's 5xx rate minus the source's may be at most this (0.01: one point of percentage)."""
    latency_percentile: Literal[95, 99] = 99
    """Which latency percentile is compared."""
    max_latency_ratio: Optional[float] = Field(1.5, gt=0)
    """The target's percentile over the source's may be at most this (0 is refused)."""
    latency_slack_ms: float = Field(5.0, ge=0)
    """The latency gate fails only when the target's percentile is also this many ms above the source's:
    ratios of millisecond times are mostly scheduling noise."""
    min_match_rate: Optional[float] = Field(0.99, ge=0, le=1)
    """With ``mirror = true``: matches / (matches + mismatches) must be at least this."""


class Step(Schema):
    """One step given as a table, to override the plan's minimums for it."""

    percent: float
    """Percent of consumers on the target."""
    min_time: Optional[float] = Field(None, ge=MIN_STEP_SECONDS)
    """Seconds this step lasts at least (default: the plan's ``min_time``)."""
    min_requests: Optional[int] = Field(None, ge=1)
    """Requests the target must answer in this step before its gates are judged (default: the plan's)."""


class RolloutPlan(Schema):
    """A route's ``rollout`` table (the route needs ``split`` with exactly two backends)."""

    target: str
    """The backend the route moves to; the other backend of ``split`` is the source."""
    steps: list[Union[float, Step]] = [1, 5, 25, 50, 100]
    """Percent of consumers on the target at each step, increasing, each in (0, 100]; a step may be a table
    ``{ percent = 25, min_time = 600, min_requests = 500 }`` with minimums of its own."""
    min_time: float = Field(300, ge=MIN_STEP_SECONDS)
    """Seconds each step lasts at least before it may advance (at least 1)."""
    min_requests: int = Field(100, ge=1)
    """Requests the target must have answered in a step before its gates are judged."""
    sticky: bool = True
    """Each consumer stays on one stack and only ever moves to the target; ``false`` splits each request on its own
    (for an API with few consumers, where a small step would put none of them on the target)."""
    on_failure: Literal["rollback", "hold"] = "rollback"
    """A failing gate sends the route back to 0 % on the target (``rollback``) or keeps the step (``hold``)."""
    restart_step_on_change: bool = False
    """A plan edit of a running rollout starts the current step's window afresh (default: its figures are kept)."""
    gates: Gates = Gates()

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[Union[float, Step]]) -> list[Union[float, Step]]:
        if not value:
            raise ValueError("needs at least one step, e.g. [1, 5, 25, 50, 100]")
        percents = [s.percent if isinstance(s, Step) else s for s in value]
        for index, step in enumerate(percents):
            if not 0 < step <= 100:
                raise ValueError(f"step {step:g} must be a percentage above 0 and at most 100")
            if index and step <= percents[index - 1]:
                raise ValueError("steps must increase, e.g. [1, 5, 25, 50, 100]")
        return value

    @model_validator(mode="after")
    def _gates(self) -> "RolloutPlan":
        if self.gates.max_latency_ratio == 0:
            raise ValueError("gates.max_latency_ratio must be above 0; leave it out to turn the gate off")
        return self

    def percent(self, index: int) -> float:
        step = self.steps[index]
        return float(step.percent if isinstance(step, Step) else step)

    @property
    def percents(self) -> list[float]:
        return [self.percent(i) for i in range(len(self.steps))]

    def min_time_at(self, index: int) -> float:
        step = self.steps[index]
        return step.min_time if isinstance(step, Step) and step.min_time is not None else self.min_time

    def min_requests_at(self, index: int) -> int:
        step = self.steps[index]
        return step.min_requests if isinstance(step, Step) and step.min_requests is not None else self.min_requests

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:12]


def check_route(route: object) -> Optional[str]:
    """The problem with a route's ``rollout`` given its ``split`` (None when fine)."""
    plan: Optional[RolloutPlan] = getattr(route, "rollout", None)
    if plan is None:
        return None
    split = getattr(route, "split", None)
    if not split:
        return 'needs "split" with two backends: the source and the target'
    if len(split) != 2:
        return f"needs a split of exactly two backends (the source and the target), not {len(split)}"
    if plan.target not in split:
        return f'target "{plan.target}" is not a backend of the split; its backends: {", ".join(sorted(split))}'
    return None


def source_of(route: object) -> str:
    plan: RolloutPlan = getattr(route, "rollout")
    return next(name for name in route.split if name != plan.target)  # type: ignore[attr-defined]
