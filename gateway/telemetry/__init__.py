"""``[telemetry]``: OpenTelemetry traces of the gateway and its stacks, exported over OTLP/HTTP.

This module is the table's schema and the few hooks the rest of the gateway
calls; it imports nothing from OpenTelemetry. ``gateway.telemetry.tracing``
does, and is imported only when ``enabled = true``: with tracing off, the
hooks are ``None`` checks made when a config is compiled, not per request.
See docs/observability.md.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal, Optional, Union
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from gateway.schema import Schema

class TelemetrySettings(Schema):
    """The ``[telemetry]`` table."""

    enabled: bool = False
    """Trace requests and export the spans. Off: OpenTelemetry is not even imported."""
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    """The OTLP/HTTP traces URL of a collector (protobuf over HTTP), path included."""
    headers: dict[str, str] = {}
    """Extra HTTP headers on each export (an API key: ``{ "x-api-key" = "${OTLP_KEY}" }``)."""
    service_name: str = Field("stackgate", min_length=1)
    """The ``service.name`` resource attribute."""
    resource: dict[str, Union[str, int, float, bool]] = {}
    """More resource attributes, such as ``"deployment.environment.name" = "prod"``."""
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)
    """Share of new traces recorded (by trace id); a continued trace follows its parent's decision."""
    trust_incoming: Union[Literal["always", "never"], list[str]] = "never"
    """Whose ``traceparent`` the gateway continues: ``"always"``, ``"never"``, or clients in these
    networks (``["10.0.0.0/8"]``, the peer's address). Others get a new trace linked to theirs."""
    instrument: list[Literal["django", "flask"]] = []
    """The stacks' own instrumentation to turn on: their spans nest under the gateway's backend span."""
    schedule_delay: float = Field(2.0, gt=0, le=300)
    """Seconds between batch exports (the batch span processor's schedule)."""
    export_timeout: float = Field(5.0, gt=0, le=60)
    """Seconds one export may take, retries included; a batch that fails is dropped and counted."""
    max_queue_size: int = Field(2048, ge=1)
    """Spans waiting for export, per worker; beyond it new spans are dropped and counted."""
    max_export_batch_size: int = Field(512, ge=1)
    """Spans per export request."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f'"{value}" must be an http(s) URL such as "http://127.0.0.1:4318/v1/traces"')
        return value

    @field_validator("resource", mode="before")
    @classmethod
    def _resource(cls, value: Any) -> Any:
        if isinstance(value, dict):
            bad = [f'"{key}"' for key, item in value.items() if not isinstance(item, (str, int, float, bool))]
            if bad:
                raise ValueError(f"{', '.join(bad)}: a resource attribute is a string, a number or a boolean")
        return value

    @field_validator("trust_incoming", mode="before")
    @classmethod
    def _trust(cls, value: Any) -> Any:
        if not (value in ("always", "never") or isinstance(value, list) and all(isinstance(e, str) for e in value)):
            raise ValueError('must be "always", "never" or a list of IPs/CIDRs such as ["10.0.0.0/8"]')
        if isinstance(value, list):
            bad = []
            for entry in value:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except (TypeError, ValueError):
                    bad.append(f'"{entry}"')
            if bad:
                raise ValueError(f'{", ".join(bad)}: not an IP address or CIDR such as "10.0.0.0/8"; or use "always" or "never"')
        return value

    def restart_key(self) -> "TelemetrySettings":
        """What a reload cannot change: all but ``sample_ratio`` and ``trust_incoming``."""
        return self.model_copy(update={"sample_ratio": 1.0, "trust_incoming": "never"})


def restart_needed(old: TelemetrySettings, new: TelemetrySettings, source: str) -> list[str]:
    """Reload problems: ``[telemetry]`` keys other than ``sample_ratio`` and ``trust_incoming`` changed."""
    if old.restart_key() == new.restart_key():
        return []
    changed = sorted(key for key in TelemetrySettings.model_fields if getattr(old, key) != getattr(new, key))
    changed = [key for key in changed if key not in ("sample_ratio", "trust_incoming")]
    return [f"{source}: telemetry.{', '.join(changed)}: changed; a restart is needed to change the tracer"]


active: Optional[Any] = None
"""This process's ``gateway.telemetry.tracing.Tracing`` once ``install`` ran with tracing on; else None."""


def install(config: Any) -> Optional[Any]:
    """Set up tracing for this process when ``config.telemetry.enabled`` (idempotent; starts no thread).

    Called before the stacks are imported, so that their instrumentation applies:
    by the supervisor before it preloads them, and by ``Gateway`` before it builds its backends.
    Export threads start later, in each worker (``Tracing.start``).
    """
    global active
    settings: TelemetrySettings = config.telemetry
    if not settings.enabled:
        return None
    if active is None:
        from gateway.telemetry.tracing import Tracing

        active = Tracing(settings)
    active.instrument(config)
    return active


def policy_tracer() -> Optional[Any]:
    """``wrap(name, build, app, route, config, services)`` for ``build_chain``; None with tracing off."""
    return active.wrap_policy if active is not None else None


def backend_class(cls: type) -> type:
    """``cls`` itself with tracing off; else a subclass whose calls are spans."""
    return cls if active is None else active.backend_class(cls)


def mirror_copy(coro: Any, route: str, backend: str) -> Any:
    """A mirror copy's coroutine, run inside a ``mirror`` span when tracing is on."""
    return coro if active is None else active.mirror_copy(coro, route, backend)
