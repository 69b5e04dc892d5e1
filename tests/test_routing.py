"""Route matching on segment boundaries, longest prefix first, methods and hosts."""

import pytest

from gateway.config import RouteConfig
from gateway.routing import MethodNotAllowed, NoRoute, Route, RouteTable


def table(*specs):
    routes = []
    for spec in specs:
        config = RouteConfig(**spec)
        routes.append(
            Route(
                config=config,
                backend=spec["backend"],
                handler=None,
                root_path=config.prefix,
                methods=frozenset(config.methods) if config.methods else None,
                hosts=tuple(config.hosts) if config.hosts else None,
            )
        )
    return RouteTable(routes)


ROUTES = table(
    {"prefix": "/v1", "backend": "flask"},
    {"prefix": "/v1/admin", "backend": "admin", "methods": ["GET"]},
    {"prefix": "/v2", "backend": "django", "hosts": ["api.example.com", "*.example.org"]},
    {"prefix": "/", "backend": "fallback", "methods": ["GET"]},
)


@pytest.mark.parametrize(
    "path, method, host, backend",
    [
        ("/v1", "GET", "x", "flask"),
        ("/v1/todos", "POST", "x", "flask"),
        ("/v1admin", "GET", "x", "fallback"),
        ("/v1/admin/x", "GET", "x", "admin"),
        ("/v1/admin/x", "POST", "x", "flask"),
        ("/v1/admin/x", "HEAD", "x", "admin"),
        ("/v2/todos", "GET", "api.example.com", "django"),
        ("/v2/todos", "GET", "eu.example.org", "django"),
        ("/v2/todos", "GET", "example.org", "fallback"),
        ("/v2/todos", "GET", "evil.com", "fallback"),
    ],
)
def test_match(path, method, host, backend):
    assert ROUTES.match(path, method, host).backend == backend


def test_method_not_allowed_lists_allowed():
    with pytest.raises(MethodNotAllowed) as info:
        ROUTES.match("/v2/todos", "DELETE", "evil.com")
    assert info.value.allowed == {"GET"}


def test_no_route():
    t = table({"prefix": "/v1", "backend": "flask"})
    for path in ("/", "/v1admin", "/v", "/V1"):
        with pytest.raises(NoRoute):
            t.match(path, "GET", "x")


@pytest.mark.parametrize(
    "prefix, message",
    [
        ("v1", "must be a path"),
        ("/v1/", "must be a path"),
        ("/v1//x", "must be a path"),
        ("/v1/../x", "must be a path"),
        ("/v1%2Fx", "encoded '/'"),
        ("/v%31", "write it unescaped"),
        ("/_stackgate", "reserved"),
        ("/_stackgate/x", "reserved"),
    ],
)
def test_bad_prefix(prefix, message):
    with pytest.raises(ValueError) as info:
        RouteConfig(prefix=prefix, backend="x")
    assert message in str(info.value)
