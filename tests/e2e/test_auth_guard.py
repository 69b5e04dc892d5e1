"""Failed authentication against a real ``stackgate run``: the path an attacker takes.

Clients bind distinct loopback source addresses (127.0.0.0/8 is all
loopback), so the gateway sees distinct client addresses without any
proxy header. "Not hashed" is shown by the gateway's own counter of
password verifications in ``/_stackgate/metrics``, not by timing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.policies.auth.basic import hash_password
from tests.services import GatewayProcess, base_env

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
# Real argon2id at the costs `stackgate password` uses: the cost an attacker would make the gateway pay.
RATES = """
[auth.failure_rates]
address = ["12/minute"]
address_identity = ["4/minute"]

# Exact counts: the default sliding-window counter forgets part of a window at its boundary.
[throttle]
strategy = "moving-window"
"""
BODY = f"""
[consumers.alice]
roles = ["user"]
password = "{hash_password(PASSWORD)}"

[backends.rec]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:recorder"

[[routes]]
name = "v1"
prefix = "/v1"
backend = "rec"
"""
CONFIG = RATES + BODY


@pytest.fixture
def gateway(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path))).start()
    yield server
    server.stop()
    print(f"--- gateway on {server.url} ---\n{server.log()[-20000:]}")  # shown when the test fails


def client_from(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of ``/_stackgate/metrics`` (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name:
            got = ",".join(sorted(filter(None, (match.group(2) or "").split(","))))
            if got == wanted:
                return float(match.group(3))
    return 0.0


def assert_too_many(response: httpx.Response, which: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"status", "code", "message", "request_id"}
    assert error["status"] == 429 and error["code"] == "too_many_auth_failures"
    assert error["request_id"] == response.headers["x-request-id"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert f"retry in {retry_after} seconds" in error["message"]
    assert ("for this identity" in error["message"]) == (which == "identity")


def test_guessing_is_refused_before_hashing_and_other_addresses_are_unaffected(gateway):
    url = gateway.url + "/v1/x"
    with client_from("127.0.0.2") as attacker, client_from("127.0.0.3") as owner, client_from("127.0.0.4") as prober:
        # N wrong passwords from one address: 401, then 429 — and no more hashing
        for i in range(4):
            response = attacker.get(url, auth=("alice", f"guess-{i}"))
            assert response.status_code == 401, response.text
            assert response.json()["error"]["code"] == "unauthorized"
        for i in range(4, 10):
            assert_too_many(attacker.get(url, auth=("alice", f"guess-{i}")), "identity")
        assert_too_many(attacker.get(url, auth=("alice", PASSWORD)), "identity")  # not even the right one is tried

        text = owner.get(gateway.url + "/_stackgate/metrics").text
        assert metric(text, "stackgate_auth_password_checks_total", result="failed") == 4, "a refused guess was hashed"
        assert metric(text, "stackgate_auth_failures_throttled_total", limit="identity") == 7
        assert metric(text, "stackgate_auth_failures_total", route="v1", status="401") == 4

        # the same consumer from another address is not locked out
        response = owner.get(url, auth=("alice", PASSWORD))
        assert response.status_code == 200, response.text
        assert response.json()["remote_user"] == "alice"

        # unknown names: hashed like known ones, counted the same
        for i in range(4):
            assert prober.get(url, auth=("nobody", f"guess-{i}")).status_code == 401
        assert_too_many(prober.get(url, auth=("nobody", "guess-4")), "identity")
        # and the address counter covers every name that address tries
        for name in ("carol", "dave"):
            for i in range(4):
                assert prober.get(url, auth=(name, f"guess-{i}")).status_code == 401
        assert_too_many(prober.get(url, auth=("erin", "guess")), "address")

        text = owner.get(gateway.url + "/_stackgate/metrics").text
        assert metric(text, "stackgate_auth_password_checks_total", result="failed") == 4 + 12
        assert metric(text, "stackgate_auth_password_checks_total", result="ok") == 1
        assert metric(text, "stackgate_auth_failures_throttled_total", limit="identity") == 8
        assert metric(text, "stackgate_auth_failures_throttled_total", limit="address") == 1

        # the owner's address is still fine, the attacker's still refused
        assert owner.get(url, auth=("alice", PASSWORD)).status_code == 200
        assert_too_many(attacker.get(url, auth=("alice", "again")), "identity")


@pytest.mark.parametrize(
    "table, message",
    [
        ('[auth.failure_rates]\naddress = ["often"]\n', 'auth.failure_rates.address[0]: must be a rate such as "100/minute"'),
        ('[auth.failure_rates]\naddress_identity = "0/minute"\n', "auth.failure_rates.address_identity[0]: must be a rate"),
        ('[auth.failure_rates]\nper_user = ["5/minute"]\n', "auth.failure_rates.per_user: unknown key"),
    ],
    ids=["not-a-rate", "zero", "unknown-key"],
)
def test_stackgate_check_reports_bad_rates(tmp_path, table, message):
    config = tmp_path / "config.toml"
    config.write_text(table + BODY)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(config)], capture_output=True, text=True, cwd=ROOT, env=base_env()
    )
    assert result.returncode != 0
    assert any(line.startswith(f"{config}: {message}") for line in result.stderr.splitlines()), result.stderr
