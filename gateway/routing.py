"""The route table: which backend serves a canonical path.

Prefixes match on segment boundaries (``/v1`` matches ``/v1`` and
``/v1/...``, never ``/v1admin``); the longest matching prefix wins, then the
first route in file order. A route may narrow itself to methods and hosts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from pydantic import field_validator, model_validator

from gateway.paths import BadPath, canonical_path, valid_method
from gateway.policies.auth.schema import RouteAuthFields
from gateway.policies.split import RouteSplitFields
from gateway.policies.throttle import RouteThrottleFields
from gateway.schema import ByteSize, Schema

ADMIN_PREFIX = "/_stackgate"
_HOST = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class RouteConfig(RouteAuthFields, RouteThrottleFields, RouteSplitFields, Schema):
    """One ``[[routes]]`` entry (policies add their keys as mixins)."""

    prefix: str
    """Public path prefix, e.g. ``/v1``; ``/`` matches everything."""
    backend: Optional[str] = None
    """Name of a ``[backends.NAME]`` table (or give ``split``)."""
    name: Optional[str] = None
    """Label used in logs and metrics; defaults to the prefix."""
    methods: Optional[list[str]] = None
    """Only these methods (upper case); others get 405. Default: all."""
    hosts: Optional[list[str]] = None
    """Only these Host names (``api.example.com``, ``*.example.com``). Default: any."""
    version: Optional[str] = None
    """Name of a ``[versions.NAME]`` table; sent to the backend as ``X-API-Version``."""
    strip_prefix: bool = True
    """Pass the prefix as ``SCRIPT_NAME`` (true) or leave it in ``PATH_INFO`` (false)."""
    max_body_size: Optional[ByteSize] = None
    """Overrides ``gateway.max_body_size`` for this route."""

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        form = 'must be a path such as "/v1" (a leading "/", no trailing "/", no "//", "." or "..")'
        if value != "/" and (not value.startswith("/") or value.endswith("/")):
            raise ValueError(form)
        try:
            if canonical_path(value.encode("utf-8")) != value:
                raise ValueError(form + "; write it unescaped")
        except BadPath as exc:
            raise ValueError(f"{form}: {exc}") from None
        if value == ADMIN_PREFIX or value.startswith(ADMIN_PREFIX + "/"):
            raise ValueError(f'"{ADMIN_PREFIX}" is reserved for the gateway\'s own endpoints')
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None:
            if not value:
                raise ValueError("must list at least one method, or be left out for all methods")
            for method in value:
                if not valid_method(method):
                    raise ValueError(f'"{method}" is not an upper-case HTTP method such as "GET"')
        return value

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None:
            if not value:
                raise ValueError("must list at least one host, or be left out for any host")
            for host in value:
                if not _HOST.match(host):
                    raise ValueError(f'"{host}" is not a lower-case host name such as "api.example.com" or "*.example.com"')
        return value

    @model_validator(mode="after")
    def _one_target(self) -> "RouteConfig":
        if (self.backend is None) == (self.split is None):
            raise ValueError('give either "backend" or "split", not both' if self.backend else 'needs "backend" (a backend\'s name) or "split" (backend weights)')
        return self

    @property
    def label(self) -> str:
        return self.name or self.prefix


@dataclass(frozen=True, slots=True)
class Route:
    """A compiled route: its config plus whatever its policies built."""

    config: RouteConfig
    backend: object
    handler: Any
    root_path: str
    methods: Optional[frozenset[str]]
    hosts: Optional[tuple[str, ...]]
    extra_request_headers: tuple[tuple[bytes, bytes], ...] = ()
    extra_response_headers: tuple[tuple[bytes, bytes], ...] = ()
    policies: tuple = field(default=())

    @property
    def prefix(self) -> str:
        return self.config.prefix

    def matches_path(self, path: str) -> bool:
        prefix = self.config.prefix
        return prefix == "/" or path == prefix or path.startswith(prefix + "/")

    def matches_host(self, host: str) -> bool:
        if self.hosts is None:
            return True
        for pattern in self.hosts:
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                    return True
            elif host == pattern:
                return True
        return False


class NoRoute(Exception):
    pass


class MethodNotAllowed(Exception):
    def __init__(self, allowed: set[str]) -> None:
        super().__init__(allowed)
        self.allowed = allowed


class RouteTable:
    """Routes ordered for matching: longest prefix first, then file order."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = sorted(routes, key=lambda r: -len(r.prefix) if r.prefix != "/" else 0)

    def match(self, path: str, method: str, host: str) -> Route:
        allowed: set[str] = set()
        path_matched = False
        for route in self.routes:
            if not route.matches_path(path) or not route.matches_host(host):
                continue
            path_matched = True
            if route.methods is None or method in route.methods:
                return route
            if method == "HEAD" and "GET" in route.methods:
                return route
            allowed |= route.methods
        if path_matched:
            raise MethodNotAllowed(allowed)
        raise NoRoute()
