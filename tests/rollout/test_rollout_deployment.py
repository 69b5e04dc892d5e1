"""One rollout state for a whole deployment: two gateways on one Redis, restarts, operators from the CLI."""

from __future__ import annotations

import json
import shutil

import httpx

from tests.rollout.support import ADMIN, Traffic, config_text, rollout, stackgate, wait_for, wait_status
from tests.services import GatewayProcess, base_env

LOOSE = "max_5xx_increase = 0.01\nlatency_percentile = 95\nmax_latency_ratio = 10\nlatency_slack_ms = 25\n"


def transitions(*servers) -> list[dict]:
    return [json.loads(line)["rollout"] for s in servers for line in s.log().splitlines() if '"rollout_transition"' in line]


def test_two_gateways_on_one_redis_agree_on_the_step_and_decide_each_step_once(tmp_path, redis):
    config = tmp_path / "config.toml"
    config.write_text(config_text("tests.rollout.apps:clean_too", steps="[10, 25, 50, 75, 100]", min_requests=20,
                                  gates=LOOSE, storage=redis.url))
    first = GatewayProcess(config, base_env(), workers=2).start(60)
    second = GatewayProcess(config, base_env()).start(60)
    try:
        seen = []
        with Traffic(first.url, second.url) as traffic:
            def both_done():
                a, b = rollout(first.url), rollout(second.url)
                seen.append((a["percent"], b["percent"]))
                return a["status"] == b["status"] == "completed" and (a, b)

            a, b = wait_for(both_done, 120, lambda: f"{seen[-5:]}\n{first.log()[-3000:]}\n{second.log()[-3000:]}")
        assert a["history"] == b["history"] and a["state"]["window"] == b["state"]["window"]
        history = a["history"]
        assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
        assert [(e["action"], e["to_percent"]) for e in history] == [
            ("start", 10), ("advance", 25), ("advance", 50), ("advance", 75), ("complete", 100)
        ], history
        assert {"new", "old"} <= set(traffic.served)
        # each transition was written (and logged) by exactly one process of the four
        wait_for(lambda: len(transitions(first, second)) >= len(history), 30)
        logged = transitions(first, second)
        assert sorted(e["seq"] for e in logged) == [e["seq"] for e in history], logged
    finally:
        first.stop()
        second.stop()


def test_a_restart_in_the_middle_of_a_step_resumes_it_with_its_figures(tmp_path):
    config = tmp_path / "config.toml"
    # The second step needs more time than the test takes: the restart lands in its middle.
    config.write_text(config_text("tests.rollout.apps:clean_too", steps="[10, { percent = 50, min_time = 3600 }, 100]",
                                  min_requests=20, gates=LOOSE))
    server = GatewayProcess(config, base_env()).start(60)
    try:
        with Traffic(server.url):
            wait_for(lambda: rollout(server.url)["percent"] == 50, 90, server.log)
            wait_for(lambda: rollout(server.url)["figures"]["target"]["requests"] >= 10, 60, server.log)
        before = rollout(server.url)
        server.stop()
        gathered = before["figures"]["target"]["requests"]

        server = GatewayProcess(config, base_env(), port=server.port).start(60)
        after = rollout(server.url)
        assert (after["status"], after["percent"], after["state"]["window"]) == ("running", 50, before["state"]["window"])
        assert after["state"]["window_started"] == before["state"]["window_started"]
        assert after["figures"]["target"]["requests"] >= gathered
        assert [e["action"] for e in after["history"]] == ["start", "advance"]
        with Traffic(server.url) as traffic:  # it serves the step it resumed: half on the target
            wait_for(lambda: traffic.served.get("new", 0) >= 20 and traffic.served.get("old", 0) >= 20, 60)
        wait_for(lambda: rollout(server.url)["figures"]["target"]["requests"] >= gathered + 20, 30)
    finally:
        server.stop()


def test_pause_promote_abort_and_resume_from_the_cli(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(config_text("tests.rollout.apps:clean_too", min_time=3600, gates=LOOSE))
    server = GatewayProcess(config, base_env()).start(60)
    env = base_env()
    args = ("--config", str(config))

    def cli(*words: str) -> str:
        done = stackgate("rollout", *words, *args, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def all_served_by(name: str) -> bool:
        with Traffic(server.url) as traffic:
            wait_for(lambda: traffic.sent >= 40, 30)
        return set(traffic.served) == {name}

    try:
        wait_status(server, ("running",))
        assert "api: running at 10 % on new (from old), step 1 of 3" in cli("status")
        assert "api: paused at 10 %" in cli("pause", "api")
        assert rollout(server.url)["status"] == "paused"
        refused = stackgate("rollout", "pause", *args, env=env)
        assert refused.returncode == 1 and "only a running rollout can be paused; it is paused" in refused.stderr
        assert "api: running at 50 %" in cli("promote")
        assert "api: completed at 100 %" in cli("promote", "--to-last")
        wait_for(lambda: all_served_by("new"), 30)
        assert "api: aborted at 0 %" in cli("abort")
        wait_for(lambda: all_served_by("old"), 30)
        assert "api: running at 10 %" in cli("resume")
        actions = [(e["action"], e["by"].split(":")[0]) for e in rollout(server.url)["history"]]
        assert actions == [("start", "config"), ("pause", "cli"), ("promote", "cli"), ("promote", "cli"),
                           ("abort", "cli"), ("resume", "cli")], actions
        # the CLI wrote the store; the gateway's deciding worker logged each action once
        wait_for(lambda: len(transitions(server)) >= 6, 30, server.log)
        assert [e["action"] for e in transitions(server)] == ["start", "pause", "promote", "promote", "abort", "resume"]
    finally:
        server.stop()


def test_the_admin_api_acts_for_admins_only_and_check_tells_what_an_edit_does(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(config_text("tests.rollout.apps:clean_too", min_time=3600, gates=LOOSE))
    server = GatewayProcess(config, base_env()).start(60)
    try:
        wait_status(server, ("running",))
        url = server.url + "/_stackgate/rollouts/api/"
        assert httpx.post(url + "pause").status_code == 401
        response = httpx.post(url + "pause", headers=ADMIN)
        assert response.status_code == 200 and response.json()["status"] == "paused", response.text
        again = httpx.post(url + "pause", headers=ADMIN)
        assert again.status_code == 409 and again.json()["error"]["code"] == "rollout_action_refused", again.text
        assert httpx.post(url + "explode", headers=ADMIN).status_code == 404
        no_action = httpx.post(url.rstrip("/"), headers=ADMIN)
        assert no_action.status_code == 405 and no_action.json()["error"]["code"] == "method_not_allowed", no_action.text
        missing = httpx.get(server.url + "/_stackgate/rollouts/nope", headers=ADMIN)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "rollout_not_found"
        promoted = httpx.post(url + "promote?to=last", headers=ADMIN).json()
        assert (promoted["status"], promoted["percent"]) == ("completed", 100)
        assert httpx.post(url + "resume", headers=ADMIN).status_code == 409
        assert httpx.post(url + "abort", headers=ADMIN).json()["status"] == "aborted"
        # The migration report carries the same rollout, history included.
        report = httpx.get(server.url + "/_stackgate/migration", headers=ADMIN).json()
        reported = {r["route"]: r["rollout"] for r in report["routes"]}["api"]
        assert reported["status"] == "aborted" and [e["action"] for e in reported["history"]][-2:] == ["promote", "abort"], reported
        assert httpx.post(url + "resume", headers=ADMIN).json()["percent"] == 10
        window = rollout(server.url)["state"]["window"]

        # An edit of the running plan: check says what it will do, the reload does it, the step keeps its figures.
        # (checked on a copy first: the running gateway reloads the real file as soon as it changes)
        edited = config_text("tests.rollout.apps:clean_too", min_time=1800, gates=LOOSE)
        (tmp_path / "edit").mkdir()
        draft = tmp_path / "edit" / "config.toml"
        draft.write_text(edited)
        shutil.copy(tmp_path / "config.rollout.json", tmp_path / "edit" / "config.rollout.json")
        checked = stackgate("check", "--no-import", str(draft), env=base_env())
        assert checked.returncode == 0, checked.stderr
        assert f"{draft}: routes[0].rollout: the plan changed: running at 10 % (step 1 of 3); the step keeps its figures" in checked.stdout
        config.write_text(edited)
        state = wait_for(lambda: (s := rollout(server.url))["history"][-1]["action"] == "plan_change" and s, 60, server.log)
        assert state["state"]["window"] == window and state["plan"]["min_time"] == 1800
        assert httpx.get(server.url + "/_stackgate/rollouts", headers=ADMIN).json()["rollouts"]["api"]["percent"] == 10
    finally:
        server.stop()
