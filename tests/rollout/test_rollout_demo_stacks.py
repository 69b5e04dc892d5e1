"""A rollout from the demo's Flask stack to its Django stack, with a regression injected into Django part-way."""

from __future__ import annotations

from tests.rollout.support import Traffic, wait_for, wait_status, rollout
from tests.services import GatewayProcess, base_env
from tests.users import consumers_toml

CONFIG = """
[backends.flask]
kind = "wsgi"
app = "backends.flask_site.wsgi:app"

[backends.django]
kind = "wsgi"
app = "tests.rollout.apps:django_with_fault"

[[routes]]
name = "api"
prefix = "/api"
auth = "none"
split = { flask = 100, django = 0 }
mirror = true

[routes.rollout]
target = "django"
steps = [10, 30, 60, 100]
min_time = 2
min_requests = 30

[routes.rollout.gates]
max_5xx_increase = 0.02
latency_percentile = 95
max_latency_ratio = 10
latency_slack_ms = 100
min_match_rate = 0.9
""" + consumers_toml()


def test_flask_to_django_rolls_back_on_its_own_when_django_regresses_part_way(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    fault = tmp_path / "fault"
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path), ROLLOUT_FAULT_FILE=str(fault)), workers=2).start(90)
    try:
        with Traffic(server.url) as traffic:
            wait_for(lambda: rollout(server.url)["percent"] >= 30, 120, server.log)
            fault.touch()  # from now on Django answers 500 on one request in ten
            state = wait_status(server, ("rolled_back", "completed"), timeout=120)
        assert state["status"] == "rolled_back", state
        assert "5xx_rate_increase" in state["last_failure"]["gates"], state["last_failure"]
        assert state["history"][-1]["from_percent"] >= 30
        assert [e["action"] for e in state["history"]][:2] == ["start", "advance"]
        assert traffic.served.get("django", 0) > 0 and traffic.served.get("flask", 0) > 0
    finally:
        server.stop()
