"""The only reader of ``config.toml``: TOML in, typed and validated objects out.

Every problem is reported as ``FILE: key.path: what is wrong`` — all of them
at once, not just the first — by ``load_config`` (and so by
``stackgate check`` and the hot reloader, which share this code). An unknown
key, the likeliest typo, also gets its line, its route and the closest known
key:
``FILE: routes[2].mirorr: unknown key; did you mean "mirror"? (route "/v2", line 41)``.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator

from gateway.backends import KINDS
from gateway.config_lines import KeyLines
from gateway.edge.settings import ServerSettings
from gateway import policies
from gateway.policies.auth import AuthSettings, ConsumerConfig
from gateway.policies.auth import check as check_auth
from gateway.policies.auth import resolve as resolve_auth
from gateway.policies.split import SplitSettings
from gateway.policies.throttle import ThrottleSettings
from gateway.policies.versions import VersionConfig
from gateway.routing import RouteFields
from gateway.schema import ByteSize, Schema, format_loc
from gateway.telemetry import TelemetrySettings

DEFAULT_PATH = "config.toml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class ConfigError(Exception):
    """A config file that cannot be used; ``problems`` are ``FILE: key.path: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_IMPORT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class MiddlewareConfig(Schema):
    """One ``[gateway] middleware`` entry: an ASGI middleware class and its keyword arguments."""

    use: str
    """``"package.module:Class"``; called as ``Class(app, **options)``."""
    options: dict[str, Any] = {}
    """Keyword arguments for the class."""

    @field_validator("use")
    @classmethod
    def _use(cls, value: str) -> str:
        if not _IMPORT.match(value):
            raise ValueError(f'"{value}" must be an import string such as "package.module:Class"')
        return value


class GatewaySettings(Schema):
    """The ``[gateway]`` table."""

    trusted_proxies: list[str] = []
    """Peers (IPs or CIDRs) whose ``X-Forwarded-For``/``-Proto``/``-Host`` are believed."""
    max_body_size: ByteSize = 10 << 20
    """Largest request body accepted (413 beyond), chunked bodies included."""
    admin_roles: list[str] = ["admin"]
    """Roles that may use the dashboard and the /_stackgate/ status, stats and mirror endpoints."""
    allowed_hosts: list[str] = []
    """Hosts the gateway serves (``api.example.com``, ``*.example.com``, ``.example.com``,
    ``127.0.0.1``, ``[::1]``); other valid hosts get 421. Empty: any valid host (``gateway.host``)."""
    middleware: list[MiddlewareConfig] = []
    """ASGI middleware inside the request-id/error layer, outermost first (docs/extending.md)."""

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f'"{entry}" is not an IP address or CIDR such as "10.0.0.0/8"') from None
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: list[str]) -> list[str]:
        from gateway.host import BadHost, parse_pattern

        patterns, bad = [], []
        for entry in value:
            try:
                patterns.append(parse_pattern(entry))
            except BadHost:
                bad.append(f'"{entry}"')
        if bad:
            raise ValueError(
                f'{", ".join(bad)} {"is not a host" if len(bad) == 1 else "are not hosts"} such as "api.example.com", '
                '"*.example.com" (its subdomains), ".example.com" (it and its subdomains), "127.0.0.1" or "[::1]", without a port'
            )
        return patterns


def _route_model() -> type:
    """``[[routes]]``: the route's own keys, each built-in policy's keys, one key per third-party policy."""
    registered = policies.registry()
    mixins = tuple(p.fields for p in reversed(registered) if p.fields is not None)
    extra: dict[str, Any] = {p.name: (Optional[p.schema], None) for p in registered if p.schema is not None}
    return create_model(
        "RouteConfig", __base__=(*mixins, RouteFields), __module__=__name__, __doc__="One ``[[routes]]`` entry.", **extra
    )


RouteConfig = _route_model()


class Config(Schema):
    """A whole, validated ``config.toml``."""

    gateway: GatewaySettings = GatewaySettings()
    backends: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, VersionConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    auth: AuthSettings = AuthSettings()
    consumers: dict[str, ConsumerConfig] = Field(default_factory=dict)
    throttle: ThrottleSettings = ThrottleSettings()
    split: SplitSettings = SplitSettings()
    server: ServerSettings = ServerSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    source: str = "<memory>"
    digest: str = ""

    def backend_names(self) -> list[str]:
        return list(self.backends)


@dataclass
class _Problems:
    source: str
    items: list[str]
    unresolved: set[str] = field(default_factory=set)
    """Key paths whose ``${NAME}`` is unset: that is their one problem."""
    to_serve: bool = False
    environ: dict = field(default_factory=dict)
    """Where ``[server]``'s environment overrides are read (``gateway.edge.settings.ENVIRONMENT``)."""
    text: str = ""
    routes: list = field(default_factory=list)
    """The raw ``[[routes]]`` tables, to name a route in a problem."""
    _lines: Optional[KeyLines] = None

    def add(self, loc: Iterable[Any], message: str) -> None:
        path = format_loc(loc)
        if path not in self.unresolved:
            self.items.append(f"{self.source}: {path or '(top level)'}: {message}")

    def unknown_key(self, loc: tuple, known: Iterable[str], otherwise: str = "") -> None:
        """``FILE: key.path: unknown key; did you mean "KEY"? (route "NAME", line N)`` (else ``; otherwise``)."""
        message = "unknown key"
        close = difflib.get_close_matches(str(loc[-1]), list(known), n=1)
        if close:
            message += f'; did you mean "{close[0]}"?'
        elif otherwise:
            message += f"; {otherwise}"
        if self._lines is None:
            self._lines = KeyLines(self.text)
        where = []
        if len(loc) > 2 and loc[0] == "routes" and isinstance(loc[1], int) and loc[1] < len(self.routes):
            table = self.routes[loc[1]]
            label = table.get("name") or table.get("prefix") if isinstance(table, dict) else None
            if isinstance(label, str):
                where.append(f'route "{label}"')
        line = self._lines.line(loc)
        if line:
            where.append(f"line {line}")
        if where:
            message += f" ({', '.join(where)})"
        self.items.append(f"{self.source}: {format_loc(loc)}: {message}")


def _message(error: dict) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    message = error["msg"]
    return message.removeprefix("Value error, ")


def load_config(path: str | os.PathLike[str] | None = None, environ: Optional[dict[str, str]] = None) -> Config:
    """Read, interpolate and validate a config file to serve; raise ConfigError with every problem.

    What ``run``, ``check``, the reloader and ``gateway.asgi`` use: besides valid tables,
    a file to serve must have settings and at least one route (an empty or truncated
    file is refused, never applied).
    """
    path = Path(path or os.environ.get("STACKGATE_CONFIG") or DEFAULT_PATH)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the file: {exc.strerror or exc}"]) from None
    return parse_config(raw, source, environ, to_serve=True)


def parse_config(
    raw: bytes, source: str = "<memory>", environ: Optional[dict[str, str]] = None, to_serve: bool = False
) -> Config:
    """Validate config text; ``to_serve`` (as ``load_config``) also refuses a text without routes."""
    problems = _Problems(source, [], to_serve=to_serve)
    try:
        problems.text = raw.decode("utf-8")
        data = tomllib.loads(problems.text)
    except UnicodeDecodeError:
        raise ConfigError([f"{source}: the file is not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: invalid TOML: {exc}"]) from None
    if to_serve and not data:
        raise ConfigError([f"{source}: {EMPTY}"])
    problems.environ = environ if environ is not None else dict(os.environ)
    data = _interpolate(data, (), problems.environ, problems)
    config = _validate(data, problems)
    if problems.items or config is None:
        raise ConfigError(problems.items)
    return config.model_copy(update={"source": source, "digest": hashlib.sha256(raw).hexdigest()[:12]})


def _interpolate(value: Any, loc: tuple, environ: dict[str, str], problems: _Problems) -> Any:
    """Replace ``${NAME}`` in strings with environment variables (``$${`` is a literal ``${``).

    ``${NAME:-default}`` gives ``default`` when NAME is unset or empty (as in a shell).
    """
    if isinstance(value, dict):
        return {k: _interpolate(v, (*loc, k), environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*loc, i), environ, problems) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def replace(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if default is not None and not environ.get(name):
                return default
            if name not in environ:
                problems.add(loc, f"environment variable {name} is not set (referenced as ${{{name}}})")
                problems.unresolved.add(format_loc(loc))
                return ""
            return environ[name]

        parts = value.split("$${")
        return "${".join(_ENV_REF.sub(replace, part) for part in parts)
    return value


def _validate(data: dict, problems: _Problems) -> Optional[Config]:
    """Validate each table on its own, so that one bad table hides no other problem."""
    for key in data:
        if key not in _TOP_LEVEL:
            problems.unknown_key((key,), _TOP_LEVEL, f"the top-level tables are {', '.join(_TOP_LEVEL)}")
    gateway = _model(GatewaySettings, data.get("gateway", {}), ("gateway",), problems)
    backends = {
        name: cfg
        for name, table in _table_of_tables(data, "backends", problems).items()
        if (cfg := _backend(name, table, problems)) is not None
    }
    versions = {
        name: cfg
        for name, table in _table_of_tables(data, "versions", problems).items()
        if (cfg := _model(VersionConfig, table, ("versions", name), problems)) is not None
    }
    routes_raw = data.get("routes", [])
    if not isinstance(routes_raw, list):
        problems.add(("routes",), "must be an array of [[routes]] tables")
        routes_raw = []
    elif not routes_raw and problems.to_serve:
        problems.add(("routes",), NO_ROUTES)
    problems.routes = routes_raw
    routes = [_model(RouteConfig, table, ("routes", i), problems) for i, table in enumerate(routes_raw)]
    auth = _model(AuthSettings, data.get("auth", {}), ("auth",), problems, {"config_dir": Path(problems.source).parent})
    consumers = {
        name: cfg
        for name, table in _table_of_tables(data, "consumers", problems).items()
        if (cfg := _model(ConsumerConfig, table, ("consumers", name), problems, {"name": name})) is not None
    }
    consumers_raw = data.get("consumers", {})
    check_auth(auth, consumers, isinstance(consumers_raw, dict) and len(consumers) == len(consumers_raw), routes, problems.add)
    throttle = _model(ThrottleSettings, data.get("throttle", {}), ("throttle",), problems)
    split = _model(SplitSettings, data.get("split", {}), ("split",), problems)
    server = _model(ServerSettings, data.get("server", {}), ("server",), problems, {"environ": problems.environ})
    telemetry = _model(TelemetrySettings, data.get("telemetry", {}), ("telemetry",), problems)
    _check_telemetry(telemetry, backends, problems)
    if problems.items or gateway is None or auth is None or throttle is None or split is None or server is None or telemetry is None:
        _check_references(data, routes, problems)
        return None
    routes = [resolve_auth(route, auth) for route in routes]
    config = Config(
        gateway=gateway,
        backends=backends,
        versions=versions,
        routes=routes,
        auth=auth,
        consumers=consumers,
        throttle=throttle,
        split=split,
        server=server,
        telemetry=telemetry,
    )
    _check_references(data, routes, problems)
    return config


def _check_telemetry(telemetry: Optional[TelemetrySettings], backends: dict[str, Any], problems: _Problems) -> None:
    """``instrument = ["django"]`` needs Django's settings module before the stack is imported."""
    if telemetry is None or "django" not in telemetry.instrument or problems.environ.get("DJANGO_SETTINGS_MODULE"):
        return
    if not any(getattr(b, "django_settings", None) for b in backends.values()):
        problems.add(
            ("telemetry", "instrument"),
            '"django" needs a wsgi backend with django_settings (e.g. django_settings = "mysite.settings"), '
            "or DJANGO_SETTINGS_MODULE in the environment",
        )


_TOP_LEVEL = ("gateway", "backends", "versions", "routes", "auth", "consumers", "throttle", "split", "server", "telemetry")
EMPTY = "the file has no settings; a config needs at least one [[routes]] table and the backends it names"
NO_ROUTES = "no [[routes]] table: the gateway would answer every request with 404; add one"


def _model(model: type, table: Any, loc: tuple, problems: _Problems, context: Optional[dict] = None) -> Any:
    if not isinstance(table, dict):
        problems.add(loc, "must be a table")
        return None
    try:
        return model.model_validate(table, context=context) if context else model.model_validate(table)
    except ValidationError as exc:
        for error in exc.errors():
            if error["type"] == "extra_forbidden":
                problems.unknown_key((*loc, *error["loc"]), _keys_of(model, error["loc"][:-1]))
            else:
                problems.add((*loc, *error["loc"]), _message(error))
        return None


def _keys_of(model: Any, path: Iterable[Any]) -> list[str]:
    """The keys the table at ``path`` inside ``model`` may have (for a "did you mean")."""
    candidates = [model]
    for part in path:
        inner = []
        for kind in _unwrap(candidates):
            if isinstance(part, str) and isinstance(kind, type) and issubclass(kind, BaseModel) and part in kind.model_fields:
                inner.append(kind.model_fields[part].annotation)
            elif typing.get_origin(kind) is dict and isinstance(part, str):
                inner.append(typing.get_args(kind)[1])
            elif typing.get_origin(kind) is list and isinstance(part, int):
                inner.append(typing.get_args(kind)[0])
        candidates = inner
    return [key for kind in _unwrap(candidates) if isinstance(kind, type) and issubclass(kind, BaseModel) for key in kind.model_fields]


def _unwrap(kinds: list[Any]) -> list[Any]:
    """``Optional[X]``, ``X | Y`` and ``Annotated[X, ...]`` -> their types."""
    out = []
    for kind in kinds:
        origin = typing.get_origin(kind)
        if origin in (typing.Union, types.UnionType):
            out.extend(_unwrap(list(typing.get_args(kind))))
        elif origin is typing.Annotated:
            out.extend(_unwrap([typing.get_args(kind)[0]]))
        else:
            out.append(kind)
    return out


def _table_of_tables(data: dict, key: str, problems: _Problems) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        problems.add((key,), f"must be a table of [{key}.NAME] tables")
        return {}
    named = {}
    for name, table in value.items():
        if not _NAME.match(name):
            problems.add((key, name), "a name must start with a letter and use only letters, digits, '_' and '-'")
        else:
            named[name] = table
    return named


def _backend(name: str, table: Any, problems: _Problems) -> Any:
    loc = ("backends", name)
    kind = table.get("kind") if isinstance(table, dict) else None
    if isinstance(table, dict) and kind not in KINDS:
        problems.add((*loc, "kind"), f"must be one of {', '.join(repr(k) for k in KINDS)}, not {kind!r}")
        return None
    return _model(KINDS[kind][0], table, loc, problems) if kind else _model(dict, table, loc, problems)


def _check_references(data: dict, routes: list[Optional[RouteConfig]], problems: _Problems) -> None:
    """Names that point at other tables must exist (checked even when tables had other problems)."""
    backends = data.get("backends") if isinstance(data.get("backends"), dict) else {}
    versions = data.get("versions") if isinstance(data.get("versions"), dict) else {}
    for name, version in versions.items():
        successor = version.get("successor") if isinstance(version, dict) else None
        if isinstance(successor, str) and successor not in versions:
            problems.add(("versions", name, "successor"), f'unknown version "{successor}"; known: {_known(versions)}')
    django = {n: b["django_settings"] for n, b in backends.items() if isinstance(b, dict) and isinstance(b.get("django_settings"), str)}
    first, first_module = next(iter(django.items()), (None, None))
    for name, module in django.items():
        if module == first_module:  # two backends of one Django project may share it
            continue
        problems.add(
            ("backends", name, "django_settings"),
            f'"{module}" beside "{first_module}" (backends.{first}): one process runs one Django settings module; '
            'serve the other Django project from a gateway of its own and reach it as an "http" backend',
        )
    seen: dict[tuple, int] = {}
    for index, route in enumerate(routes):
        if route is None:
            continue
        loc = ("routes", index)
        if route.backend is not None and route.backend not in backends:
            problems.add((*loc, "backend"), f'unknown backend "{route.backend}"; known: {_known(backends)}')
        for name in route.split or ():
            if name not in backends:
                problems.add((*loc, "split"), f'unknown backend "{name}"; known: {_known(backends)}')
        policies = _throttle_policies(data)
        if route.throttle is not None and route.throttle not in policies:
            problems.add((*loc, "throttle"), f'unknown throttle policy "{route.throttle}"; known: {_known(policies)}')
        if route.version is not None and route.version not in versions:
            problems.add((*loc, "version"), f'unknown version "{route.version}"; known: {_known(versions)}')
        key = (route.prefix, tuple(sorted(route.methods or ())), tuple(sorted(route.hosts or ())))
        if key in seen:
            problems.add((*loc, "prefix"), f"same prefix, methods and hosts as routes[{seen[key]}]; it could never match")
        else:
            seen[key] = index


def _throttle_policies(data: dict) -> dict:
    throttle = data.get("throttle")
    policies = throttle.get("policies") if isinstance(throttle, dict) else None
    return policies if isinstance(policies, dict) else {}


def _known(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(f'"{n}"' for n in names) if names else "(none)"
