"""A real OTLP/HTTP receiver on loopback, and real ``stackgate run --workers 2`` gateways exporting to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from tests.services import GatewayProcess, base_env
from tests.telemetry.receiver import OTLPReceiver
from tests.users import consumers_toml

STACKS = """
[backends.flask]
kind = "wsgi"
app = "backends.flask_site.wsgi:app"

[backends.django]
kind = "wsgi"
app = "backends.django_site.wsgi:application"
django_settings = "backends.django_site.settings"
migrate = true

[backends.echo]
kind = "wsgi"
app = "tests.telemetry.apps:echo"

[backends.aecho]
kind = "asgi"
app = "tests.telemetry.apps:asgi_echo"

[backends.fail]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:fail"

[backends.a]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_a"

[backends.b]
kind = "wsgi"
app = "tests.fixtures.wsgi_apps:variant_b"

[throttle.policies.t]
rates = ["100000/minute"]

[[routes]]
name = "todos-v1"
prefix = "/v1"
backend = "flask"
auth = "required"
throttle = "t"

[[routes]]
name = "todos-v2"
prefix = "/v2"
backend = "django"
auth = "required"
throttle = "t"

[[routes]]
name = "echo"
prefix = "/echo"
backend = "echo"
auth = "none"

[[routes]]
name = "aecho"
prefix = "/aecho"
backend = "aecho"
auth = "none"

[[routes]]
name = "fail"
prefix = "/fail"
backend = "fail"
auth = "none"

[[routes]]
name = "ab"
prefix = "/ab"
split = { a = 50, b = 50 }
mirror = true
auth = "none"
""" + consumers_toml()


def telemetry_toml(**settings) -> str:
    lines = ["", "[telemetry]"]
    for key, value in {"enabled": True, "schedule_delay": 0.2, **settings}.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    server = OTLPReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def start_gateway(tmp_path: Path, workers: int = 2, more: str = "", **telemetry) -> GatewayProcess:
    """``stackgate run --workers 2`` with the test stacks, ``more`` tables and a ``[telemetry]`` table."""
    config = tmp_path / "config.toml"
    config.write_text(STACKS + more + telemetry_toml(**telemetry))
    return GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(tmp_path)), workers=workers).start(90)
