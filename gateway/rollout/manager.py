"""Each worker's side of the rollouts: count, flush, follow the shared state, and decide under a lease.

The request path only adds to an in-memory ``Tally`` and reads the weights
the last sync left (``RouteRollout``). Once a second (``TICK_SECONDS``) a task
takes the tallies, and in a thread flushes them to the store, reads the state,
and, if this worker holds the route's lease, applies a plan change or judges
the step (``gateway.rollout.engine``). A transition is written by
compare-and-set, logged as JSON (logger ``stackgate.rollout``) and counted
(``stackgate_rollout_transitions``).

A worker never goes back to a state older than one it has read: if the store
returns one (a Redis failover lost writes, a store emptied), the worker keeps
serving the newest state it knows, writes it back (compare-and-set on the
older version), and decides nothing until the store has it again (unless an
operator acted on the older state since: that action stands). Nor does it
decide in its first sync after the store was unreachable: every worker first
gets a tick to write back what it knows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from typing import Any, Optional

from prometheus_client import Counter, Gauge

from gateway.rollout import engine
from gateway.rollout.measure import MATCH, MISMATCH, SOURCE, TARGET, Figures, Tally
from gateway.rollout.plan import RolloutPlan, source_of
from gateway.rollout.store import StoreError, store_for

logger = logging.getLogger("stackgate.rollout")

TICK_SECONDS = 1.0
"""How often a worker flushes its figures and reads the state."""
LEASE_SECONDS = 5.0
"""How long the deciding worker's lease lasts without renewal (it renews every tick)."""
CAS_TRIES = 5

TRANSITIONS = Counter(
    "stackgate_rollout_transitions",
    "Rollout transitions by route and action (start, advance, complete, rollback, hold, pause, resume, promote, abort, plan_change).",
    ["route", "action"],
)
PERCENT = Gauge(
    "stackgate_rollout_target_percent", "Share of consumers (percent) a rollout sends to its target, by route.",
    ["route"], multiprocess_mode="livemax",
)


class RouteRollout:
    """One split route's rollout as this worker follows it: weights to serve by, figures to flush."""

    def __init__(self, label: str, plan: RolloutPlan, source: str, mirror: bool) -> None:
        self.label = label
        self.tally = Tally()
        self.state: Optional[dict] = None
        self.window = "-"
        self.config_digest = ""
        """The config that last named this rollout; one not in the serving config is dropped."""
        self.configure(plan, source, mirror)

    def configure(self, plan: RolloutPlan, source: str, mirror: bool) -> None:
        self.plan = plan
        self.target, self.source = plan.target, source
        self.target_key, self.source_key = plan.target.encode(), source.encode()
        self.sticky = plan.sticky
        self.mirror = mirror
        self.follow(self.state)

    def follow(self, state: Optional[dict]) -> None:
        """Serve by ``state`` (None, or another target's: everyone on the source)."""
        if state is not None and state.get("target") != self.target:
            state = None
        self.state = state
        self.window = state["window"] if state else "-"
        w = engine.weights(state, self.target, self.source)
        self.weights = [(name.encode(), w[name]) for name in (self.target, self.source)]
        self.share = w[self.target] / 100
        PERCENT.labels(self.label).set(w[self.target])

    def draw(self) -> bytes:
        """A backend for one request of a plan with ``sticky = false``."""
        return self.target_key if random.random() < self.share else self.source_key

    def observe(self, name: bytes, status: int, seconds: float) -> None:
        """One answer of the route (the split's hook)."""
        self.tally.response(self.window, TARGET if name == self.target_key else SOURCE, status, seconds)

    def observe_mirror(self, result: str) -> None:
        """One mirror result (``RouteMirrorStats.record``'s hook): matches and mismatches count."""
        if result == "match":
            self.tally.add(self.window, MATCH)
        elif result == "mismatch":
            self.tally.add(self.window, MISMATCH)


class RolloutManager:
    """This worker's rollouts, kept in ``Services`` across reloads."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteRollout] = {}
        self.store: Any = None
        self._store_key: Any = None
        self.config: Any = None
        self.loaded_at = 0.0
        """When this worker first served the current config: a plan edit applies only if newer than the state's."""
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._task: Optional[asyncio.Task] = None
        self._store_failing = False
        self._seen: dict[str, int] = {}
        """Route -> the state version this worker last read (to log the CLI's actions once)."""
        self._newest: dict[str, dict] = {}
        """Route -> the newest state (highest version) this worker read or wrote in the current store."""

    def follow_route(self, route: Any, config: Any) -> RouteRollout:
        """The route's rollout (made, or given its new plan), for the split policy at compile time."""
        if config is not self.config:
            if self.config is None or config.digest != self.config.digest:
                self.loaded_at = time.time()
            self.config = config
            key = (config.throttle.storage, config.throttle.key_prefix, config.source)
            if key != self._store_key:
                self.store, self._store_key = store_for(config), key
                self._newest.clear()  # another store: what this worker knew was of the old one
        plan: RolloutPlan = route.rollout
        runtime = self.routes.get(route.label)
        if runtime is None:
            runtime = self.routes[route.label] = RouteRollout(route.label, plan, source_of(route), bool(route.mirror))
        else:
            runtime.configure(plan, source_of(route), bool(route.mirror))
        runtime.config_digest = config.digest
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # at create_app: the lifespan starts the loop
        else:
            self._ensure_task()
        return runtime

    async def start(self) -> None:
        """First sync before serving (a restart resumes its step at once), then every tick."""
        try:
            await self.tick()
        except Exception:
            logger.exception("rollout sync failed")
        self._ensure_task()

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        try:
            await self.tick()  # the last figures
        except Exception:
            pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self.tick()
            except Exception:
                logger.exception("rollout sync failed")

    def _current(self) -> list[RouteRollout]:
        digest = self.config.digest if self.config is not None else None
        for label in [label for label, rt in self.routes.items() if rt.config_digest != digest]:
            del self.routes[label]  # its plan left the config
        return list(self.routes.values())

    async def tick(self) -> None:
        runtimes = self._current()
        if not runtimes or self.store is None:
            return
        batch = [(rt, rt.tally.take()) for rt in runtimes]
        states = await asyncio.to_thread(self._sync, batch)
        for rt, state in zip(runtimes, states):
            if state is not False:
                rt.follow(state)

    def _sync(self, batch: list[tuple[RouteRollout, dict]]) -> list[Any]:
        """In a thread: flush, read, maybe decide; the state to follow per route (False: unknown, keep serving)."""
        out: list[Any] = []
        recovering = self._store_failing  # the first sync after an outage decides nothing
        for rt, deltas in batch:
            try:
                self.store.add(rt.label, deltas)
                state = self.store.load(rt.label)
                state, behind = self._not_older(rt.label, state)
                if self.store.lease(rt.label, self.owner, LEASE_SECONDS) and not behind and not recovering:
                    self._log_cli_actions(rt.label, state)
                    state = self._decide(rt, state)
                if state is not None:
                    self._seen[rt.label] = state["version"]
                    if not behind:
                        self._newest[rt.label] = state
            except StoreError as exc:
                if not self._store_failing:
                    logger.error("rollout state store unreachable; serving the last known step", extra={"error": str(exc)})
                self._store_failing = True
                out.append(False)
                continue
            if self._store_failing:
                logger.info("rollout state store reachable again", extra={"store": self.store.where})
                self._store_failing = False
            out.append(state)
        return out

    def _not_older(self, label: str, state: Optional[dict]) -> tuple[Optional[dict], bool]:
        """``state`` as read, or the newest this worker knows if the store went back (True: it had, decide nothing).

        Versions only grow, so a stored version below one this worker has read means the store lost
        writes (a Redis primary died before its replica had them, a store emptied). The worker serves
        what it knows and writes it back, by compare-and-set on what is stored, so that no step already
        decided is decided again (and possibly otherwise) and no consumer moves back.
        """
        known = self._newest.get(label)
        if known is None or (state is not None and state["version"] >= known["version"]):
            return state, False
        if state is not None and _operator_since(state, known):
            self._newest[label] = state  # an operator acted on the older state since: that decision stands
            if label in self._seen:  # and its action is logged, though its version is below one already read
                self._seen[label] = min(self._seen[label], state["history"][-1]["seq"] - 1)
            return state, False
        found = state["version"] if state is not None else None
        if self.store.save(label, found or 0, known):
            logger.warning(
                f"rollout state of route {label} went back in {self.store.where} (version {found}; this worker had "
                f"read version {known['version']}): wrote it back",
                extra={"event": "rollout_state_restored", "route": label, "found_version": found,
                       "restored_version": known["version"], "store": self.store.where},
            )
            return known, False
        return known, True  # something else was written meanwhile: read it next tick

    def _log_cli_actions(self, label: str, state: Optional[dict]) -> None:
        """The CLI writes the store, not a gateway log: the deciding worker logs and counts its actions."""
        seen = self._seen.get(label)
        if state is None or seen is None:
            return
        for event in state.get("history", ()):
            if event["seq"] > seen and str(event.get("by", "")).startswith("cli:"):
                record(label, event, event["by"])

    def _decide(self, rt: RouteRollout, state: Optional[dict]) -> Optional[dict]:
        now = time.time()
        plan = rt.plan
        result: Any = None
        if state is None or state.get("target") != plan.target or (
            state.get("plan") != plan.digest() and self.loaded_at >= state.get("plan_applied_at", 0)
        ):
            new, event, _ = engine.apply_plan(state, plan, rt.label, rt.source, now)
            if new is not None:
                result = (new, event)
        elif state["status"] == engine.RUNNING:
            figures = Figures.of(self.store.figures(rt.label, state["window"]))
            result = engine.decide(state, plan, figures, now, rt.mirror)
        if result is None:
            return state
        new, event = result
        if self.store.save(rt.label, state["version"] if state else 0, new):
            record(rt.label, event, self.owner)
            return new
        return self.store.load(rt.label)  # another decider was first: follow it


def _operator_since(state: dict, known: dict) -> bool:
    """Whether ``state``'s last transition is an operator's (the CLI, the admin API), made after ``known``'s last."""
    last, mine = (state.get("history") or [{}])[-1], (known.get("history") or [{}])[-1]
    return last.get("by") not in (None, "gates", "config") and last.get("at", 0) > mine.get("at", 0)


def record(route: str, event: dict, owner: str) -> None:
    """Log and count one transition written by this process."""
    TRANSITIONS.labels(route, event["action"]).inc()
    level = logging.WARNING if event["action"] in ("rollback", "hold", "abort") else logging.INFO
    logger.log(
        level,
        f'rollout {event["action"]} on route {route}: {event["from_percent"]:g} % -> {event["to_percent"]:g} % ({event["reason"]})',
        extra={"event": "rollout_transition", "route": route, "rollout": event, "decided_by": owner},
    )


def operate(store: Any, route: str, plan: RolloutPlan, action: str, full: bool = False, who: str = "operator",
            log: bool = True) -> dict:
    """An operator's action on the stored state, by compare-and-set (retried if a decider wrote in between).

    ``log``: log and count it here (a gateway worker); the CLI leaves that to the deciding worker.
    """
    for _ in range(CAS_TRIES):
        state = store.load(route)
        if state is not None and state.get("target") != plan.target:
            state = None
        new, event = engine.operate(state, plan, action, time.time(), full=full, who=who)
        if store.save(route, state["version"], new):
            if log:
                record(route, event, who)
            return new
    raise StoreError("the state kept changing under the action; try again")


def describe(store: Any, route: Any) -> dict:
    """A route's rollout for ``/_stackgate/rollouts`` and ``stackgate rollout status``: state, plan, live figures, gates."""
    plan: RolloutPlan = route.rollout
    state = store.load(route.label)
    out: dict[str, Any] = {"route": route.label, "target": plan.target, "source": source_of(route), "plan": plan.model_dump(),
                           "store": store.where, "state": state and {k: v for k, v in state.items() if k != "history"}}
    if state is not None and state.get("target") == plan.target:
        figures = Figures.of(store.figures(route.label, state["window"]))
        out["status"], out["percent"], out["step"] = state["status"], state["percent"], state["step"]
        out["window_seconds"] = round(time.time() - state["window_started"], 1)
        if state["step"] >= 0:
            out["step_min_time"], out["step_min_requests"] = plan.min_time_at(state["step"]), plan.min_requests_at(state["step"])
            out["waiting_for"] = _waiting_for(state, plan, figures, out["window_seconds"])
        out["figures"] = figures.summary(plan.gates.latency_percentile)
        out["gates"] = engine.evaluate(plan, figures, bool(route.mirror))
        failed = next((e for e in reversed(state.get("history", ())) if e.get("failed")), None)
        out["last_failure"] = failed and {"gates": failed["failed"], "reason": failed["reason"], "time": failed["time"]}
        out["history"] = state.get("history", [])
    else:
        out.update(status="not_started", percent=0.0, step=-1, history=[])
    return out


def _waiting_for(state: dict, plan: RolloutPlan, figures: Figures, seconds: float) -> Optional[str]:
    """What the running step needs before its next decision, in words (None when not running)."""
    if state["status"] != engine.RUNNING:
        return None
    step = state["step"]
    missing = plan.min_requests_at(step) - figures.target_requests
    if missing > 0:
        if not figures.target_requests and figures.source_requests >= 10 * plan.min_requests_at(step):
            return (f"{missing} more requests to the target; none of the step's consumers is on it yet "
                    "(steps are shares of consumers: a larger step, promote, or sticky = false)")
        return f"{missing} more requests to the target"
    if seconds < plan.min_time_at(step):
        return f"{plan.min_time_at(step) - seconds:.0f} s more"
    return "the next decision (within a second)"
