"""``[telemetry]``: validated like every table, off by default (and then not even imported), reloaded in part."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from gateway.config import ConfigError, parse_config
from gateway.telemetry import TelemetrySettings, restart_needed
from tests.services import base_env
from tests.telemetry.conftest import start_gateway
from tests.telemetry.receiver import wait_until
from tests.users import USERS

BASE = """
[backends.echo]
kind = "wsgi"
app = "tests.telemetry.apps:echo"

[[routes]]
prefix = "/echo"
backend = "echo"
auth = "none"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text.encode(), "c.toml", {})
    return info.value.problems


def test_tracing_is_off_by_default():
    settings = parse_config(BASE.encode(), "c.toml", {}).telemetry
    assert settings.enabled is False and settings.trust_incoming == "never" and settings.sample_ratio == 1.0


def test_a_full_table_is_accepted():
    text = BASE + """
[telemetry]
enabled = true
endpoint = "https://collector.example.com:4318/v1/traces"
headers = { "x-api-key" = "k" }
service_name = "edge"
resource = { "deployment.environment.name" = "prod", "service.version" = "1.2" }
sample_ratio = 0.25
trust_incoming = ["10.0.0.0/8", "::1"]
schedule_delay = 1
export_timeout = 3
"""
    settings = parse_config(text.encode(), "c.toml", {}).telemetry
    assert settings.enabled and settings.sample_ratio == 0.25 and settings.trust_incoming == ["10.0.0.0/8", "::1"]


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('endpoint = "ftp://x/v1/traces"', 'c.toml: telemetry.endpoint: "ftp://x/v1/traces" must be an http(s) URL'),
        ("sample_ratio = 1.5", "c.toml: telemetry.sample_ratio: Input should be less than or equal to 1"),
        ('trust_incoming = ["lan"]', 'c.toml: telemetry.trust_incoming: "lan": not an IP address or CIDR'),
        ('trust_incoming = "sometimes"', 'c.toml: telemetry.trust_incoming: must be "always", "never" or a list of IPs/CIDRs'),
        ("resource = { a = [1] }", 'c.toml: telemetry.resource: "a": a resource attribute is a string, a number or a boolean'),
        ('instrument = ["rails"]', "c.toml: telemetry.instrument[0]: Input should be 'django' or 'flask'"),
        ('instrument = ["django"]', 'c.toml: telemetry.instrument: "django" needs a wsgi backend with django_settings'),
        ("sampel_ratio = 0.5", 'c.toml: telemetry.sampel_ratio: unknown key; did you mean "sample_ratio"?'),
    ],
    ids=["endpoint", "ratio", "network", "trust-word", "resource", "instrument", "django-settings", "typo"],
)
def test_bad_values_are_reported_with_their_key(table, expected):
    found = problems(BASE + "\n[telemetry]\n" + table + "\n")
    assert any(line.startswith(expected) for line in found), found


def test_stackgate_check_reports_the_table(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BASE + '\n[telemetry]\nenabled = true\nendpoint = "collector:4318"\n')
    done = subprocess.run([sys.executable, "-m", "gateway", "check", "--no-import", str(path)], capture_output=True, text=True, env=base_env())
    assert done.returncode == 1
    assert f'{path}: telemetry.endpoint: "collector:4318" must be an http(s) URL' in done.stdout + done.stderr


def test_a_reload_changes_the_ratio_and_the_trust_only():
    old = TelemetrySettings(enabled=True)
    assert restart_needed(old, old.model_copy(update={"sample_ratio": 0.1, "trust_incoming": "always"}), "c.toml") == []
    assert restart_needed(old, old.model_copy(update={"endpoint": "http://other:4318/v1/traces", "enabled": False}), "c.toml") == [
        "c.toml: telemetry.enabled, endpoint: changed; a restart is needed to change the tracer"
    ]


OFF_PROBE = """
import sys, asyncio, httpx
from gateway.app import create_app
from gateway.config import parse_config
app = create_app(parse_config(sys.argv[1].encode(), "c.toml", {}))
async def main():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        assert (await client.get("/echo/x")).status_code == 200
asyncio.run(main())
from opentelemetry import trace
print(sorted(m for m in sys.modules if m.startswith(("gateway.telemetry.", "opentelemetry.sdk.trace", "opentelemetry.instrumentation"))))
print(type(trace.get_tracer_provider()).__name__)
"""


def test_with_tracing_off_no_tracer_is_loaded():
    """Off: neither the gateway's tracing module nor the SDK's tracer is imported, and no provider is set."""
    done = subprocess.run([sys.executable, "-c", OFF_PROBE, BASE], capture_output=True, text=True, env=base_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "ProxyTracerProvider"], done.stdout


def test_a_reload_applies_a_new_ratio_and_refuses_a_new_endpoint(tmp_path, receiver):
    server = start_gateway(tmp_path, endpoint=receiver.endpoint, sample_ratio=0.0)
    config = tmp_path / "config.toml"
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/echo/before").status_code == 200
            config.write_text(config.read_text().replace("sample_ratio = 0.0", "sample_ratio = 1.0"))

            def traced():  # each worker reloads on its own: ask until a request is recorded
                client.get("/echo/after")
                return [s for s in receiver.snapshot() if s.kind == "SERVER"]

            roots = wait_until(traced, what="a trace after the reload")
            assert all(s.attributes["url.path"] == "/echo/after" for s in roots)

            config.write_text(config.read_text().replace(receiver.endpoint, "http://127.0.0.1:9/v1/traces"))

            def refused():
                last = client.get("/_stackgate/status", headers=USERS["admin"].headers()).json()["last_reload"]
                return last if "restart" in last["message"] else None

            last = wait_until(refused, what="the reload result")
            assert any("telemetry.endpoint: changed; a restart is needed" in p for p in last["problems"]), last
    finally:
        server.stop()
        print(server.log()[-4000:])
