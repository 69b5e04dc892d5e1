"""Rollout decisions as pure functions: (state, plan, figures, now) -> new state and the event that explains it.

The state is a plain JSON object (what the store keeps); every change bumps
its ``version`` and is written by compare-and-set, so a decision made twice
(two workers, two hosts) is written once. ``history`` lists the transitions.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Optional

from gateway.rollout.measure import SOURCE, TARGET, Figures
from gateway.rollout.plan import RolloutPlan

RUNNING, PAUSED, HELD, ROLLED_BACK, ABORTED, COMPLETED = "running", "paused", "held", "rolled_back", "aborted", "completed"
STATUSES = (RUNNING, PAUSED, HELD, ROLLED_BACK, ABORTED, COMPLETED)
ACTIONS = ("pause", "resume", "promote", "abort")
"""What an operator may do (the admin API's and the CLI's verbs)."""
HISTORY = 200
"""Transitions kept in the state."""


class RefusedAction(Exception):
    """An operator action that does not apply to the rollout's status (HTTP 409)."""


def _window() -> str:
    return uuid.uuid4().hex[:16]


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def percent_of(plan: RolloutPlan, step: int) -> float:
    return 0.0 if step < 0 else plan.percent(step)


def weights(state: Optional[dict], target: str, source: str) -> dict[str, float]:
    """Split weights for the state: the target's share in percent; no state: all on the source."""
    percent = float(state["percent"]) if state else 0.0
    return {target: percent, source: 100.0 - percent}


def _next(state: dict, plan: RolloutPlan, now: float, /, **changes: Any) -> dict:
    new = {**state, **changes, "version": state.get("version", 0) + 1, "updated_at": now}
    if "step" in changes:
        new["percent"] = percent_of(plan, changes["step"])
    return new


def _event(old: Optional[dict], new: dict, action: str, by: str, now: float, reason: str, **extra: Any) -> dict:
    event = {
        "seq": new["version"], "time": _stamp(now), "at": round(now, 3), "action": action, "by": by,
        "from_percent": old["percent"] if old else 0.0, "to_percent": new["percent"],
        "from_step": old["step"] if old else -1, "to_step": new["step"], "status": new["status"], "reason": reason,
    }
    event.update(extra)
    new["history"] = [*(old or {}).get("history", ()), event][-HISTORY:]
    return event


def start(plan: RolloutPlan, route: str, source: str, now: float, old: Optional[dict] = None, reason: str = "") -> tuple[dict, dict]:
    """A new rollout at its first step (``old``: a state of another target, replaced)."""
    state = {
        "version": (old or {}).get("version", 0) + 1, "route": route, "target": plan.target, "source": source,
        "plan": plan.digest(), "plan_applied_at": now, "status": RUNNING, "step": 0, "percent": percent_of(plan, 0),
        "window": _window(), "window_started": now, "updated_at": now, "history": list((old or {}).get("history", ())),
    }
    return state, _event(None if old is None else old, state, "start", "config", now, reason or "the plan's first step")


def evaluate(plan: RolloutPlan, figures: Figures, mirror: bool) -> list[dict]:
    """Each gate's value, threshold and verdict (``ok`` None: no data to judge, which does not fail)."""
    gates = plan.gates
    results = []
    target_rate, source_rate = figures.error_rate(TARGET), figures.error_rate(SOURCE)
    increase = None if target_rate is None else target_rate - (source_rate or 0.0)
    results.append({
        "gate": "5xx_rate_increase", "value": None if increase is None else round(increase, 4),
        "threshold": gates.max_5xx_increase, "ok": None if increase is None else increase <= gates.max_5xx_increase,
        "target": target_rate, "source": source_rate,
    })
    if gates.max_latency_ratio is not None:
        q = gates.latency_percentile
        target_p, source_p = figures.percentile(TARGET, q), figures.percentile(SOURCE, q)
        ratio = target_p / source_p if target_p is not None and source_p else None
        ok = None
        if ratio is not None:
            ok = ratio <= gates.max_latency_ratio or (target_p - source_p) * 1000 < gates.latency_slack_ms
        results.append({
            "gate": f"p{q}_latency_ratio", "value": None if ratio is None else round(ratio, 3),
            "threshold": gates.max_latency_ratio, "ok": ok, "slack_ms": gates.latency_slack_ms,
            "target_ms": None if target_p is None else round(target_p * 1000, 3),
            "source_ms": None if source_p is None else round(source_p * 1000, 3),
        })
    if mirror and gates.min_match_rate is not None:
        rate = figures.match_rate()
        results.append({
            "gate": "mirror_match_rate", "value": None if rate is None else round(rate, 4),
            "threshold": gates.min_match_rate, "ok": None if rate is None else rate >= gates.min_match_rate,
            "matches": figures.matches, "mismatches": figures.mismatches,
        })
    return results


def decide(state: dict, plan: RolloutPlan, figures: Figures, now: float, mirror: bool) -> Optional[tuple[dict, dict]]:
    """What the gates make of a running step: advance, complete, roll back, hold, or nothing yet (None)."""
    if state["status"] != RUNNING:
        return None
    if figures.target_requests < plan.min_requests_at(state["step"]):
        return None
    results = evaluate(plan, figures, mirror)
    summary = figures.summary(plan.gates.latency_percentile)
    failed = [g for g in results if g["ok"] is False]
    if failed:
        names = ", ".join(g["gate"] for g in failed)
        detail = "; ".join(f'{g["gate"]} {g["value"]} beyond {g["threshold"]}' for g in failed)
        if plan.on_failure == "hold":
            new = _next(state, plan, now, status=HELD)
            return new, _event(state, new, "hold", "gates", now, f"gate failed: {detail}", failed=names, gates=results, figures=summary)
        new = _next(state, plan, now, status=ROLLED_BACK, step=-1, window=_window(), window_started=now)
        return new, _event(state, new, "rollback", "gates", now, f"gate failed: {detail}", failed=names, gates=results, figures=summary)
    if now - state["window_started"] < plan.min_time_at(state["step"]):
        return None
    step = state["step"] + 1
    if step >= len(plan.steps) - 1:
        step = len(plan.steps) - 1
        new = _next(state, plan, now, status=COMPLETED, step=step, window=_window(), window_started=now)
        return new, _event(state, new, "complete", "gates", now, "every gate held at every step", gates=results, figures=summary)
    new = _next(state, plan, now, step=step, window=_window(), window_started=now)
    return new, _event(state, new, "advance", "gates", now, "every gate held", gates=results, figures=summary)


def operate(state: Optional[dict], plan: RolloutPlan, action: str, now: float, full: bool = False, who: str = "operator") -> tuple[dict, dict]:
    """An operator's ``pause``, ``resume``, ``promote`` (next step; ``full``: the last) or ``abort``."""
    if state is None:
        raise RefusedAction("the rollout has not started yet (the gateway starts it within a second of serving the plan)")
    status = state["status"]
    last = len(plan.steps) - 1
    if action == "pause":
        if status != RUNNING:
            raise RefusedAction(f"only a running rollout can be paused; it is {status}")
        new = _next(state, plan, now, status=PAUSED)
        return new, _event(state, new, "pause", who, now, "paused by an operator: no automatic decision until resumed")
    if action == "resume":
        if status == PAUSED:
            new = _next(state, plan, now, status=RUNNING)
            reason = "resumed; the step keeps its figures"
        elif status == HELD:
            new = _next(state, plan, now, status=RUNNING, window=_window(), window_started=now)
            reason = "resumed after a hold; the step starts a new window"
        elif status in (ROLLED_BACK, ABORTED):
            new = _next(state, plan, now, status=RUNNING, step=0, window=_window(), window_started=now)
            reason = "restarted from the first step"
        else:
            raise RefusedAction(f"nothing to resume: the rollout is {status}")
        return new, _event(state, new, "resume", who, now, reason)
    if action == "promote":
        if status == COMPLETED:
            raise RefusedAction("the rollout is already complete")
        step = last if full else min(state["step"] + 1, last)
        new = _next(state, plan, now, status=COMPLETED if step == last else RUNNING, step=step, window=_window(), window_started=now)
        return new, _event(state, new, "promote", who, now, "promoted by an operator, gates skipped" + (" (to the last step)" if full else ""))
    if action == "abort":
        if status == ABORTED:
            raise RefusedAction("the rollout is already aborted")
        new = _next(state, plan, now, status=ABORTED, step=-1, window=_window(), window_started=now)
        return new, _event(state, new, "abort", who, now, "aborted by an operator: every consumer back on the source")
    raise RefusedAction(f'unknown action "{action}"; one of {", ".join(ACTIONS)}')


def apply_plan(state: Optional[dict], plan: RolloutPlan, route: str, source: str, now: float) -> tuple[Optional[dict], Optional[dict], str]:
    """What serving ``plan`` does to the stored state: (new state or None if unchanged, its event, one sentence)."""
    if state is None:
        new, event = start(plan, route, source, now)
        return new, event, f"no rollout yet: it starts at {_pct(new['percent'])} on {plan.target}"
    if state.get("target") != plan.target or state.get("source") != source:
        new, event = start(plan, route, source, now, state, f'the target changed from {state.get("target")} to {plan.target}')
        return new, event, f'the target changed ({state.get("target")} -> {plan.target}): a new rollout starts at {_pct(new["percent"])}'
    if state.get("plan") == plan.digest():
        return None, None, f"unchanged: {state['status']} at {_pct(state['percent'])} (step {state['step'] + 1} of {len(plan.steps)})"
    status, percent = state["status"], float(state["percent"])
    if status in (ROLLED_BACK, ABORTED):
        step = -1
    else:
        below = [i for i, p in enumerate(plan.percents) if p <= percent]
        step = below[-1] if below else 0
    if status == COMPLETED and step < len(plan.steps) - 1:
        status = RUNNING
    moved = percent_of(plan, step) != percent
    fresh = moved or plan.restart_step_on_change
    changes: dict[str, Any] = {"status": status, "step": step, "plan": plan.digest(), "plan_applied_at": now}
    if fresh:
        changes.update(window=_window(), window_started=now)
    new = _next(state, plan, now, **changes)
    words = f"the plan changed: {status} at {_pct(new['percent'])} (step {step + 1} of {len(plan.steps)})"
    words += "; the step starts a new window" if fresh else "; the step keeps its figures"
    return new, _event(state, new, "plan_change", "config", now, words), words


def _pct(value: float) -> str:
    return f"{value:g} %"
