"""A gated rollout on Redis as production runs it: Sentinel and Cluster, the primary holding the state killed.

Real redis-server processes on loopback ports (tests/redis_ha.py) and
``stackgate run --workers 2`` in front, serving steady traffic on a split route
under a plan. Once the rollout has advanced, the primary that holds the route's
keys (``KEY_PREFIX:rollout:{api}:…``) is killed. Through the failover no request
may fail (the request path never waits on the store: workers serve the last
step they read), the rollout never goes back to a step it left nor starts
again, every transition is decided and logged once, and it completes afterwards.

Redis replicates asynchronously; a state write waits for a replica (``WAIT``),
so the write a deployment acted on survives the failover. When it cannot (the
replica is not connected: here, stopped with SIGSTOP and its link cut), the
workers that read the lost state write it back rather than decide the step again.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest
import redis as redis_py

from gateway.rollout import engine
from gateway.rollout.plan import RolloutPlan
from gateway.rollout.store import REPLICA_WAIT_MS, RedisStore
from tests.redis_ha import cluster_set, sentinel_set, wait  # noqa: F401 (fixtures)
from tests.rollout.support import ADMIN, Traffic, config_text
from tests.services import GatewayProcess, base_env

LOOSE = "max_5xx_increase = 0.01\nlatency_percentile = 95\nmax_latency_ratio = 10\nlatency_slack_ms = 25\n"
STATE_KEY = "stackgate:rollout:{api}:state"  # RedisStore._key: the default key_prefix, the route's hash tag


def view(server: GatewayProcess, odd: list[str]):
    """The route's rollout as the admin API shows it (read from the store), or None while the store cannot answer.

    Any other answer is added to ``odd``.
    """
    try:
        response = httpx.get(server.url + "/_stackgate/rollouts/api", headers=ADMIN, timeout=10)
    except httpx.HTTPError as exc:
        odd.append(repr(exc))
        return None
    if response.status_code == 503 and "rollout_store_unavailable" in response.text:  # the failover is under way
        return None
    if response.status_code != 200:
        odd.append(f"{response.status_code} {response.text[:300]}")
        return None
    return response.json()


class Watch:
    """Reads the admin view ten times a second from a thread: each answer's version, step, window and status."""

    def __init__(self, server: GatewayProcess) -> None:
        self.server = server
        self.seen: list[tuple[float, int, int, str, str]] = []
        self.last: dict = {}
        self.odd: list[str] = []
        """Answers of the admin API other than 200 and 503 rollout_store_unavailable."""
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.is_set():
            current = view(self.server, self.odd)
            if current is not None and current.get("state"):
                self.last = current
                state = current["state"]
                self.seen.append((time.time(), state["version"], state["step"], state["window"], state["status"]))
            time.sleep(0.1)

    def until(self, condition, what: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while not (self.last and condition(self.last)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not after {timeout} s; last seen {self.last.get('state')}")
            time.sleep(0.1)
        return self.last

    def __enter__(self) -> "Watch":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(30)
        if exc[0] is None:
            assert not self.odd, f"the admin API answered otherwise than 200 or 503: {self.odd[:5]}"


def transitions(server: GatewayProcess) -> list[dict]:
    return [json.loads(line)["rollout"] for line in server.log().splitlines() if '"rollout_transition"' in line]


def gateway_log(server: GatewayProcess) -> str:
    return "\n".join(line for line in server.log().splitlines() if '"stackgate.access"' not in line)[-12000:]


def assert_went_forward(server: GatewayProcess, history: list[dict], expected: list[tuple[str, float]]) -> None:
    """One decision per step, in order, each written and logged once."""
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1)), history
    assert [(e["action"], e["to_percent"]) for e in history] == expected, history
    wait(lambda: len(transitions(server)) >= len(history), "every transition logged", timeout=30)  # logged after the write
    logged = transitions(server)
    assert sorted((e["seq"], e["action"], e["to_percent"]) for e in logged) == [
        (e["seq"], e["action"], e["to_percent"]) for e in history
    ], logged


def fail_over_mid_rollout(tmp_path, url: str, kill, failed_over) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text("tests.rollout.apps:clean_too", steps="[10, 25, 50, 75, 100]", min_time=2,
                                  min_requests=20, gates=LOOSE, storage=url))
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2, log_dir=tmp_path)
    try:
        server.start(60)
        with Traffic(server.url) as traffic, Watch(server) as watch:
            advanced = watch.until(lambda v: v["step"] >= 1, "the rollout advancing once")
            # Killed once the advance is acknowledged to its decider (logged after the write returns).
            wait(lambda: any(e["seq"] == advanced["state"]["version"] for e in transitions(server)), "the advance logged",
                 timeout=30)
            kill()
            killed_at = time.time()
            wait(failed_over, "the failover", timeout=90)
            done = watch.until(lambda v: v["status"] == "completed", "the rollout completing after the failover")
        history = done["history"]
        print(f"\n{url.split(':')[0]}: killed at step {advanced['step'] + 1}; seen {len(watch.seen)} states; "
              f"served {traffic.statuses}; history {[(e['action'], e['to_percent'], e['time']) for e in history]}")
        assert not traffic.errors, traffic.errors[:5]
        assert set(traffic.statuses) == {200}, f"no request may fail through a failover: {traffic.statuses}"
        # Never back: the versions read grow, and with them the step, and a version is one state only.
        versions = [v for _, v, *_ in watch.seen]
        steps = [s for _, _, s, *_ in watch.seen]
        assert versions == sorted(versions) and steps == sorted(steps), watch.seen
        assert len({v for v in versions}) == len({(v, s, w) for _, v, s, w, _ in watch.seen}), watch.seen
        assert_went_forward(server, history, [("start", 10), ("advance", 25), ("advance", 50), ("advance", 75), ("complete", 100)])
        assert any(e["at"] > killed_at for e in history), "the rollout must go on deciding after the failover"
    finally:
        server.stop()
        print("--- gateway ---\n" + gateway_log(server))


def test_a_rollout_goes_on_through_a_sentinel_failover(tmp_path, sentinel_set):
    primary = sentinel_set.primary_port()
    fail_over_mid_rollout(
        tmp_path, sentinel_set.url,
        kill=lambda: sentinel_set.kill(primary),
        failed_over=lambda: sentinel_set.primary_port() != primary,
    )


def test_a_rollout_goes_on_through_a_cluster_failover(tmp_path, cluster_set):
    primary = cluster_set.primary_of(STATE_KEY)
    fail_over_mid_rollout(
        tmp_path, cluster_set.url,
        kill=lambda: cluster_set.kill(primary),
        failed_over=lambda: cluster_set.all_slots_served() and cluster_set.primary_of(STATE_KEY) != primary,
    )


def test_a_transition_the_failover_lost_is_written_back_not_decided_again(tmp_path, sentinel_set):
    """The replica cut off: the advance is on the primary only when it dies; the workers write it back."""
    config = tmp_path / "config.toml"
    # Room before the advance (to cut the replica off) and after it (to kill the primary before the last step).
    steps = "[{ percent = 10, min_time = 4 }, { percent = 50, min_time = 6 }, 100]"
    config.write_text(config_text("tests.rollout.apps:clean_too", steps=steps, min_requests=20, gates=LOOSE,
                                  storage=sentinel_set.url))
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=2, log_dir=tmp_path)
    primary, replica = sentinel_set.primary_port(), sentinel_set.replica
    try:
        server.start(60)
        with Traffic(server.url) as traffic, Watch(server) as watch:
            watch.until(lambda v: v["status"] == "running", "the rollout starting")
            # The replica stopped, and its link cut by the primary: from here on the primary's writes stay on it
            # (a stopped process still receives into its socket: the link must be closed, not only left unread).
            sentinel_set.freeze(replica)
            try:
                redis_py.Redis(port=primary).client_kill_filter(_type="replica")
                wait(lambda: redis_py.Redis(port=primary).info("replication")["connected_slaves"] == 0, "the link cut")
                assert view(server, watch.odd)["step"] == 0, "the advance came before the replica was cut off"
                lost = watch.until(lambda v: v["step"] == 1, "the advance to 50 %", timeout=90)["state"]
                # acknowledged to its decider, logged, and only on the primary
                wait(lambda: any(e["seq"] == lost["version"] for e in transitions(server)), "the advance logged", timeout=30)
                sentinel_set.kill(primary)
            finally:
                sentinel_set.thaw(replica)
            wait(lambda: sentinel_set.primary_port() != primary, "the failover", timeout=90)
            # The new primary had the state of before the advance; a worker that read the advance writes it back.
            wait(lambda: "rollout_state_restored" in server.log(), "the state written back", timeout=60)
            watch.until(lambda v: v["state"]["version"] >= lost["version"], "the advance back in the store")
            done = watch.until(lambda v: v["status"] == "completed", "the rollout completing")
        assert not traffic.errors and set(traffic.statuses) == {200}, (traffic.statuses, traffic.errors[:5])
        # The step at 50 % kept the window decided before the failover: it was not decided a second time.
        windows = {(v, w) for _, v, _, w, _ in watch.seen if v == lost["version"]}
        assert windows == {(lost["version"], lost["window"])}, windows
        assert_went_forward(server, done["history"], [("start", 10), ("advance", 50), ("complete", 100)])
    finally:
        server.stop()
        print("--- gateway ---\n" + gateway_log(server))


def plan() -> RolloutPlan:
    return RolloutPlan(target="new", steps=[10, 50, 100])


def test_a_state_write_returns_once_a_replica_has_it(sentinel_set, caplog):
    store = RedisStore(sentinel_set.url)
    replica = redis_py.Redis(port=sentinel_set.replica)
    state, _ = engine.start(plan(), "api", "old", time.time())
    assert store.save("api", 0, state)
    assert json.loads(replica.get(STATE_KEY)) == state  # at once: the write waited for it

    sentinel_set.freeze(sentinel_set.replica)
    try:
        moved, _ = engine.operate(state, plan(), "promote", time.time())
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, "stackgate.rollout"):
            assert store.save("api", state["version"], moved)  # written all the same, on the primary
        assert time.monotonic() - started >= REPLICA_WAIT_MS / 1000 * 0.9
        assert "not acknowledged by a replica" in caplog.text
    finally:
        sentinel_set.thaw(sentinel_set.replica)
    assert not store.save("api", state["version"], moved)  # the compare-and-set still refuses a stale version


def test_a_state_write_on_redis_without_replicas_does_not_wait(redis):
    store = RedisStore(redis.url)
    state, _ = engine.start(plan(), "api", "old", time.time())
    started = time.monotonic()
    assert store.save("api", 0, state) and store.load("api") == state
    assert time.monotonic() - started < REPLICA_WAIT_MS / 1000 / 2
