"""The rollout plan's checks, the sticky weights it moves, the decisions and the stores, without a server."""

from __future__ import annotations

import json
import logging
import secrets
import threading

import pytest

from gateway.config import ConfigError, parse_config
from gateway.policies.split import choose
from gateway.rollout import engine
from gateway.rollout.manager import RolloutManager, RouteRollout
from gateway.rollout.measure import Figures, Tally, bucket, bucket_upper
from gateway.rollout.plan import RolloutPlan
from gateway.rollout.store import FileStore, RedisStore

BASE = """
[backends.old]
kind = "wsgi"
app = "tests.rollout.apps:clean"
[backends.new]
kind = "wsgi"
app = "tests.rollout.apps:clean_too"
[backends.third]
kind = "wsgi"
app = "tests.rollout.apps:clean"
[[routes]]
prefix = "/api"
auth = "none"
"""


def problems(route_keys: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config((BASE + route_keys).encode(), "c.toml")
    return caught.value.problems


@pytest.mark.parametrize(
    "keys, expected",
    [
        ('split = { old = 100, new = 0 }\nrollout = { target = "nope" }',
         'c.toml: routes[0].rollout: target "nope" is not a backend of the split; its backends: new, old'),
        ('backend = "old"\nrollout = { target = "new" }',
         'c.toml: routes[0].rollout: needs "split" with two backends: the source and the target'),
        ('split = { old = 1, new = 0, third = 0 }\nrollout = { target = "new" }',
         "c.toml: routes[0].rollout: needs a split of exactly two backends (the source and the target), not 3"),
        ('split = { old = 100, new = 0 }\nrollout = { target = "new", steps = [5, 1] }',
         "c.toml: routes[0].rollout.steps: steps must increase, e.g. [1, 5, 25, 50, 100]"),
        ('split = { old = 100, new = 0 }\nrollout = { target = "new", steps = [0, 50] }',
         "c.toml: routes[0].rollout.steps: step 0 must be a percentage above 0 and at most 100"),
        ('split = { old = 100, new = 0 }\nrollout = { target = "new", min_time = 0.1 }',
         "c.toml: routes[0].rollout.min_time: Input should be greater than or equal to 1"),
        ('split = { old = 100, new = 0 }\nrollout = { target = "new", on_failure = "panic" }',
         "c.toml: routes[0].rollout.on_failure: Input should be 'rollback' or 'hold'"),
        ('split = { old = 100, new = 0 }\nrollout = { target = "new", gates = { latency_percentile = 90 } }',
         "c.toml: routes[0].rollout.gates.latency_percentile: Input should be 95 or 99"),
    ],
    ids=["unknown-target", "no-split", "three-backends", "decreasing", "zero-step", "too-short", "bad-action", "bad-percentile"],
)
def test_bad_plans_are_reported_as_file_key_path_message(keys, expected):
    assert expected in problems(keys)


def test_an_unknown_plan_key_gets_a_did_you_mean():
    found = problems('split = { old = 100, new = 0 }\n[routes.rollout]\ntarget = "new"\nmin_requets = 5\n')
    assert any(p.startswith('c.toml: routes[0].rollout.min_requets: unknown key; did you mean "min_requests"?') for p in found), found


def test_steps_may_carry_their_own_minimums():
    config = parse_config((BASE + 'split = { old = 100, new = 0 }\nrollout = { target = "new", min_time = 60, steps = [1, { percent = 50, min_time = 600, min_requests = 7 }, 100] }').encode())
    plan = config.routes[0].rollout
    assert plan.percents == [1, 50, 100]
    assert (plan.min_time_at(0), plan.min_time_at(1), plan.min_requests_at(1), plan.min_requests_at(2)) == (60, 600, 7, 100)


def test_raising_the_target_weight_only_moves_consumers_toward_the_target():
    keys = [b"a:" + secrets.token_hex(16).encode() for _ in range(4000)]
    previous: set = set()
    for percent in (1, 5, 25, 50, 75, 100):
        on_target = {k for k in keys if choose(b"api", k, [(b"new", float(percent)), (b"old", 100.0 - percent)]) == b"new"}
        assert previous <= on_target, f"{len(previous - on_target)} consumers left the target at {percent} %"
        assert abs(len(on_target) / len(keys) - percent / 100) < 0.04, (percent, len(on_target))
        previous = on_target
    assert len(previous) == len(keys)


def test_percentiles_come_from_fixed_buckets_within_ten_percent():
    tally = Tally()
    for ms in range(1, 101):
        tally.response("w", "t", 200, ms / 1000)
        tally.response("w", "s", 500 if ms % 10 == 0 else 200, ms / 2000)
    figures = Figures.of(tally.take()["w"])
    assert 0.095 <= figures.percentile("t", 95) <= 0.095 * 1.1
    assert figures.error_rate("s") == 0.1 and figures.error_rate("t") == 0.0
    assert bucket_upper(bucket(0.05)) >= 0.05


def plan(**keys) -> RolloutPlan:
    return RolloutPlan(**{"target": "new", "steps": [10, 50, 100], "min_time": 1, "min_requests": 10, **keys})


def figures(target_5xx=0, target_ms=1.0, source_ms=1.0, n=20, mismatches=0) -> Figures:
    tally = Tally()
    for i in range(n):
        tally.response("w", "t", 500 if i < target_5xx else 200, target_ms / 1000)
        tally.response("w", "s", 200, source_ms / 1000)
    tally.add("w", "m:match", 100 - mismatches)
    tally.add("w", "m:mismatch", mismatches)
    return Figures.of(tally.take()["w"])


def test_decisions_follow_the_gates():
    p = plan()
    state, event = engine.start(p, "api", "old", 1000.0)
    assert (state["percent"], event["action"]) == (10, "start")
    assert engine.decide(state, p, figures(n=5), 2000.0, False) is None  # too few requests
    assert engine.decide(state, p, figures(), 1000.5, False) is None  # too soon
    new, event = engine.decide(state, p, figures(), 1002.0, False)
    assert (new["percent"], new["version"], event["action"]) == (50, 2, "advance")
    done, event = engine.decide(new, p, figures(), 1004.0, False)
    assert (done["status"], done["percent"], event["action"]) == ("completed", 100, "complete")
    back, event = engine.decide(state, p, figures(target_5xx=2), 1000.5, False)  # fails at once, before min_time
    assert (back["status"], back["percent"], event["failed"]) == ("rolled_back", 0, "5xx_rate_increase")
    slow, event = engine.decide(state, p, figures(target_ms=60), 1002.0, False)
    assert event["failed"] == "p99_latency_ratio"
    assert engine.decide(state, p, figures(target_ms=4, source_ms=1), 1000.5, False) is None  # 4x, but within the 5 ms slack
    drift, event = engine.decide(state, p, figures(mismatches=10), 1002.0, True)
    assert event["failed"] == "mirror_match_rate"
    held, event = engine.decide(state, plan(on_failure="hold"), figures(target_5xx=2), 1002.0, False)
    assert (held["status"], held["percent"], event["action"]) == ("held", 10, "hold")


def test_operator_actions():
    p = plan()
    state, _ = engine.start(p, "api", "old", 0.0)
    paused, _ = engine.operate(state, p, "pause", 1.0)
    assert engine.decide(paused, p, figures(), 99.0, False) is None
    with pytest.raises(engine.RefusedAction):
        engine.operate(paused, p, "pause", 2.0)
    resumed, _ = engine.operate(paused, p, "resume", 2.0)
    assert resumed["status"] == "running" and resumed["window"] == state["window"]  # figures kept
    promoted, _ = engine.operate(resumed, p, "promote", 3.0)
    assert promoted["percent"] == 50 and promoted["window"] != state["window"]
    last, _ = engine.operate(state, p, "promote", 3.0, full=True)
    assert (last["status"], last["percent"]) == ("completed", 100)
    aborted, event = engine.operate(last, p, "abort", 4.0)
    assert (aborted["status"], aborted["percent"], event["from_percent"]) == ("aborted", 0, 100)
    again, _ = engine.operate(aborted, p, "resume", 5.0)
    assert (again["status"], again["percent"]) == ("running", 10)


def test_plan_edits_keep_the_step_and_its_figures_unless_told():
    p = plan()
    state, _ = engine.start(p, "api", "old", 0.0)
    state, _ = engine.operate(state, p, "promote", 1.0)  # at 50 %
    new, event, words = engine.apply_plan(state, plan(gates={"max_latency_ratio": 3}), "api", "old", 2.0)
    assert (new["percent"], new["window"], event["action"]) == (50, state["window"], "plan_change")
    assert "keeps its figures" in words
    new, _, words = engine.apply_plan(state, plan(restart_step_on_change=True, min_time=5), "api", "old", 2.0)
    assert new["window"] != state["window"] and "new window" in words
    moved, _, words = engine.apply_plan(state, RolloutPlan(target="new", steps=[5, 25, 100]), "api", "old", 2.0)
    assert moved["percent"] == 25 and "step 2 of 3" in words
    unchanged = engine.apply_plan(state, p, "api", "old", 2.0)
    assert unchanged[0] is None and unchanged[2].startswith("unchanged: running at 50 %")


def test_the_file_store_writes_each_version_once_under_contention(tmp_path):
    store = FileStore(tmp_path / "c.rollout.json")
    p = plan()
    first, _ = engine.start(p, "api", "old", 0.0)
    assert store.save("api", 0, first)
    wins = []
    together = threading.Barrier(8)

    def contend() -> None:
        current = store.load("api")
        together.wait()  # all read version 1, then all try to write version 2
        new, _ = engine.operate(current, p, "promote", 1.0)
        if store.save("api", current["version"], new):
            wins.append(new)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert store.load("api") == wins[0] and wins[0]["version"] == 2
    store.add("api", {"w": {"t:n": 2}})
    store.add("api", {"w": {"t:n": 3, "s:n": 1}})
    assert store.figures("api", "w") == {"t:n": 5, "s:n": 1}
    assert store.lease("api", "me", 5) and not store.lease("api", "other", 5) and store.lease("api", "me", 5)


def test_a_worker_never_follows_a_state_older_than_one_it_read_and_writes_it_back(tmp_path, caplog):
    """A store that went back (a Redis failover lost a write, a store emptied): the newest state read wins."""
    store = FileStore(tmp_path / "c.rollout.json")
    p = plan(min_requests=10_000)  # nothing gets decided here
    worker = RolloutManager()
    worker.store = store
    route = RouteRollout("api", p, "old", False)
    first, _ = engine.start(p, "api", "old", 0.0)
    second, _ = engine.operate(first, p, "promote", 1.0)
    assert store.save("api", 0, first) and store.save("api", 1, second)
    assert worker._sync([(route, {})]) == [second]

    store.path.write_text(json.dumps({"routes": {"api": {"state": first, "windows": {}, "lease": None}}}))
    assert worker._sync([(route, {})]) == [second] and store.load("api") == second  # back to version 1: version 2 again
    store.path.unlink()
    assert worker._sync([(route, {})]) == [second] and store.load("api") == second  # emptied: not started again
    history = store.load("api")["history"]
    assert [(e["seq"], e["action"]) for e in history] == [(1, "start"), (2, "promote")]

    # An operator who acted on the older state since (e.g. in the second after a failover) is not undone.
    third, _ = engine.operate(second, p, "promote", 3.0)
    assert store.save("api", 2, third) and worker._sync([(route, {})]) == [third]
    paused, _ = engine.operate(first, p, "pause", 4.0, who="cli:ops")
    assert paused["version"] < third["version"]
    store.path.write_text(json.dumps({"routes": {"api": {"state": paused, "windows": {}, "lease": None}}}))
    with caplog.at_level(logging.INFO, "stackgate.rollout"):
        assert worker._sync([(route, {})]) == [paused] and store.load("api") == paused
    assert [r.rollout["action"] for r in caplog.records if hasattr(r, "rollout")] == ["pause"]  # logged once, by the decider


@pytest.mark.parametrize(
    "url, where",
    [("redis://10.0.0.5:6379/0", "redis 10.0.0.5:6379/0"),
     ("rediss://:s3cret@10.0.0.5:6380/1", "redis 10.0.0.5:6380/1"),
     ("redis+sentinel://user:pw@h1:26379,h2:26379/mymaster", "redis h1:26379,h2:26379/mymaster")],
)
def test_the_redis_store_names_its_server_without_scheme_or_credentials(url, where):
    """The name in `stackgate check` and `stackgate routes` messages, as docs/rollouts.md shows it."""
    assert RedisStore(url).where == where
