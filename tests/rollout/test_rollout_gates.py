"""Gated rollouts end to end: real stacks behind a real gateway, the decisions read back from the admin API and the log."""

from __future__ import annotations

import json

import pytest

import httpx

from tests.rollout.support import Traffic, config_text, wait_for, wait_status
from tests.services import GatewayProcess, base_env
from tests.users import USERS

NO_LATENCY = "latency_slack_ms = 100000\n"  # a test of another gate must not trip on a scheduling hiccup
LOOSE = "max_5xx_increase = 0.01\nlatency_percentile = 95\nmax_latency_ratio = 10\nlatency_slack_ms = 25\n"


def transitions(log: str) -> list[dict]:
    events = []
    for line in log.splitlines():
        if '"rollout_transition"' in line:
            events.append(json.loads(line))
    return events


def test_a_clean_target_advances_through_every_step_to_100(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(config_text("tests.rollout.apps:clean_too", gates=LOOSE))
    server = GatewayProcess(config, base_env(), workers=2).start(60)
    try:
        with Traffic(server.url) as traffic:
            state = wait_status(server, ("completed", "rolled_back", "held"))
        assert state["status"] == "completed", state
        assert state["percent"] == 100
        actions = [(e["action"], e["to_percent"]) for e in state["history"]]
        assert actions == [("start", 10), ("advance", 50), ("complete", 100)], actions
        for event in state["history"][1:]:
            assert all(g["ok"] is not False for g in event["gates"]), event
        wait_for(lambda: len(transitions(server.log())) >= 3, 30, server.log)  # log lines are written in batches
        logged = [e["rollout"]["action"] for e in transitions(server.log())]
        assert logged == ["start", "advance", "complete"], logged
        assert traffic.served.get("new", 0) > 0
        metrics = httpx.get(server.url + "/_stackgate/metrics").text
        assert 'stackgate_rollout_transitions_total{action="advance",route="api"} 1.0' in metrics, metrics
    finally:
        server.stop()


@pytest.mark.parametrize(
    "target_app, gates, mirror, failing",
    [
        ("tests.rollout.apps:errors", "max_5xx_increase = 0.01\n" + NO_LATENCY, False, "5xx_rate_increase"),
        ("tests.rollout.apps:slow", "latency_percentile = 95\nmax_latency_ratio = 2\nlatency_slack_ms = 20\nmax_5xx_increase = 0.01\n", False, "p95_latency_ratio"),
        ("tests.rollout.apps:drift", "min_match_rate = 0.97\n" + NO_LATENCY, True, "mirror_match_rate"),
    ],
    ids=["5xx-on-5-percent", "50ms-slower", "one-field-on-10-percent"],
)
def test_a_regressed_target_is_rolled_back_with_the_failing_gate_named(tmp_path, target_app, gates, mirror, failing):
    config = tmp_path / "config.toml"
    config.write_text(config_text(target_app, gates=gates, mirror=mirror, min_time=30, min_requests=100))
    server = GatewayProcess(config, base_env()).start(60)
    try:
        with Traffic(server.url):
            state = wait_status(server, ("completed", "rolled_back", "held"), timeout=120)
        assert state["status"] == "rolled_back", state
        assert state["percent"] == 0
        assert state["last_failure"]["gates"] == failing, state["last_failure"]
        last = state["history"][-1]
        assert last["action"] == "rollback" and last["from_percent"] == 10, last
        gate = next(g for g in last["gates"] if g["gate"] == failing)
        assert gate["ok"] is False and gate["value"] is not None and gate["threshold"] is not None, gate
        wait_for(lambda: [e for e in transitions(server.log()) if e["rollout"]["action"] == "rollback"], 30, server.log)
        logged = [e for e in transitions(server.log()) if e["rollout"]["action"] == "rollback"]
        assert len(logged) == 1 and logged[0]["rollout"]["failed"] == failing, logged
        assert logged[0]["level"] == "warning"
        # rolled back: nobody is sent to the target any more
        with Traffic(server.url) as traffic:
            wait_for(lambda: traffic.sent >= 50)
        assert set(traffic.served) == {"old"}, traffic.served
    finally:
        server.stop()


def test_an_unsticky_plan_moves_a_single_consumer_request_by_request(tmp_path):
    """One API key only: with sticky = false the steps are shares of requests, so the rollout still advances."""
    config = tmp_path / "config.toml"
    config.write_text(config_text("tests.rollout.apps:clean_too", gates=LOOSE, extra_plan="sticky = false")
                      .replace('auth = "none"', 'auth = "required"'))
    server = GatewayProcess(config, base_env()).start(60)
    try:
        with Traffic(server.url, headers=USERS["alice"].headers()) as traffic:
            state = wait_status(server, ("completed", "rolled_back", "held"))
        assert state["status"] == "completed", state
        assert traffic.served.get("new", 0) > 0 and traffic.served.get("old", 0) > 0, traffic.served
    finally:
        server.stop()
