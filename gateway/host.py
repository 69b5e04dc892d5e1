"""The request's host, read once: RFC 3986's grammar, normalised, then the allow-list.

A ``Host`` header (or a trusted proxy's ``X-Forwarded-Host``) is
``host [ ":" port ]`` where ``host`` is

- a DNS name: dot-separated labels of ASCII letters, digits and ``-`` (a
  label neither starts nor ends with ``-``; international names in their
  IDNA ``xn--`` form), at most 253 characters; one trailing dot is dropped;
  a name whose last label is a number (``127.1``, ``0x7f``) must be a whole
  dotted-quad IPv4 address, since browsers read such names as addresses;
- an IPv4 address in dotted-quad form, each part 0-255 without leading zeros;
- an IPv6 address in brackets, normalised (``[0:0::1]`` is ``[::1]``); zone
  ids and IPvFuture literals are refused;

and ``port`` is 1 to 5 digits, 1-65535. Letters are lower-cased; the
scheme's default port (80 for http, 443 for https) is dropped. Anything else
(userinfo ``@``, ``/ ? # %``, spaces, commas, non-ASCII, an empty port) is
refused with a 400. See docs/security.md ("Host").

Routing, the access log and both stacks get the one ``Host`` this module
returns: the gateway rewrites the backend's ``Host`` header to ``Host.value``
and its ASGI ``server`` (WSGI ``SERVER_NAME``/``SERVER_PORT``) to
``Host.server(scheme)``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from gateway.context import SCOPE_KEY
from gateway.types import Receive, Scope, Send

#: Scope key: the ``X-Forwarded-Host`` of a peer in ``[gateway] trusted_proxies`` (bytes).
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_NAME_LENGTH = 253

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC = re.compile(r"[0-9]+|0x[0-9a-f]*")  # what a WHATWG URL parser reads as a number
_DEC_OCTET = re.compile(r"25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]")
_PORT = re.compile(r"[0-9]{1,5}")
_IPV6_CHARS = frozenset("0123456789abcdef:.")

BAD_HOST = "bad_host"
HOST_NOT_ALLOWED = "host_not_allowed"
FORM = 'a name such as "api.example.com", an IPv4 address or an IPv6 address in brackets, and an optional ":port"'
MISSING = "The request must carry a Host header naming the server, such as \"Host: api.example.com\"."


class BadHost(ValueError):
    """The value is not a host by the grammar above; ``str(exc)`` says why, in one sentence."""


@dataclass(frozen=True, slots=True)
class Host:
    """A validated, normalised host."""

    name: str
    """``api.example.com``, ``127.0.0.1`` or ``[::1]``: lower case, no trailing dot."""
    port: Optional[int] = None
    """None when absent or the scheme's default port."""

    @property
    def value(self) -> str:
        """The ``Host`` header every backend gets."""
        return self.name if self.port is None else f"{self.name}:{self.port}"

    def server(self, scheme: str) -> tuple[str, int]:
        """ASGI ``server`` (WSGI ``SERVER_NAME``, ``SERVER_PORT``): IPv6 without brackets, the port always given."""
        name = self.name[1:-1] if self.name.startswith("[") else self.name
        return name, self.port if self.port is not None else DEFAULT_PORTS.get(scheme, 80)


def parse_name(text: str) -> str:
    """A host without a port, normalised; raises BadHost."""
    if not text:
        raise BadHost("The host name is empty.")
    if not text.isascii():
        raise BadHost("The host must be ASCII: write an international name in its IDNA form (xn--...).")
    name = text.lower()
    if name.startswith("["):
        inner = name[1:-1] if name.endswith("]") else ""
        if not inner or not set(inner) <= _IPV6_CHARS:
            raise BadHost("A bracketed host must be an IPv6 address such as [2001:db8::1].")
        try:
            return f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError:
            raise BadHost("A bracketed host must be an IPv6 address such as [2001:db8::1].") from None
    if name.endswith("."):
        name = name[:-1]  # the absolute form of the same DNS name
    labels = name.split(".")
    if not name or len(name) > MAX_NAME_LENGTH or not all(_LABEL.fullmatch(label) for label in labels):
        raise BadHost(f"The host must be {FORM}.")
    if _NUMERIC.fullmatch(labels[-1]) and not (len(labels) == 4 and all(_DEC_OCTET.fullmatch(label) for label in labels)):
        raise BadHost("A host ending in a number must be an IPv4 address such as 192.0.2.1.")
    return name


@functools.lru_cache(maxsize=256)  # a server sees few hosts; an invalid one raises, and is never cached
def parse(raw: bytes, scheme: str = "http") -> Host:
    """A ``Host`` header value, validated and normalised for ``scheme``; raises BadHost."""
    if not raw:
        raise BadHost("The Host header is empty.")
    if not raw.isascii():
        raise BadHost("The Host header must be ASCII: write an international name in its IDNA form (xn--...).")
    text = raw.decode("ascii")
    if text.startswith("["):
        end = text.find("]") + 1
        if end == 0:
            raise BadHost("A bracketed host must be an IPv6 address such as [2001:db8::1].")
        name, rest = text[:end], text[end:]
    else:
        name, colon, port_text = text.partition(":")
        rest = colon + port_text
    host = parse_name(name)
    port: Optional[int] = None
    if rest:
        if rest[0] != ":" or not _PORT.fullmatch(rest[1:]) or not 0 < int(rest[1:]) <= 65535:
            raise BadHost(f"The Host header must be {FORM}; a port is a number from 1 to 65535.")
        port = int(rest[1:])
        if port == DEFAULT_PORTS.get(scheme):
            port = None
    return Host(host, port)


def parse_pattern(text: str) -> str:
    """An ``allowed_hosts`` entry, normalised: a host, ``*.example.com`` or ``.example.com``; raises BadHost."""
    if text.startswith("*.") or text.startswith("."):
        prefix = text[: text.index(".") + 1]
        name = parse_name(text[len(prefix) :])
        if name.startswith("[") or _NUMERIC.fullmatch(name.rsplit(".", 1)[-1]):
            raise BadHost(f'"{prefix}" must be followed by a DNS name, not an address')
        return prefix + name
    return parse_name(text)


class AllowedHosts:
    """``[gateway] allowed_hosts``, compiled: exact names plus ``*.`` (subdomains) and ``.`` (the name and its subdomains)."""

    __slots__ = ("any", "exact", "suffixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        self.any = not patterns
        self.exact = frozenset(p.lstrip(".") for p in patterns if not p.startswith("*."))
        self.suffixes = tuple(p[1:] if p.startswith("*.") else p for p in patterns if p.startswith(("*.", ".")))

    def allows(self, name: str) -> bool:
        return self.any or name in self.exact or name.endswith(self.suffixes)


class ForwardedHost:
    """ASGI wrapper, outermost: puts a trusted peer's ``X-Forwarded-Host`` in the scope.

    It runs before uvicorn's ``ProxyHeadersMiddleware`` replaces ``client``
    with the forwarded address, so it judges the peer itself. The right-most
    value is the one the nearest (trusted) proxy set.
    """

    def __init__(self, app, trusted_proxies: Iterable[str]) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies)

    def _trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            if client and self._trusted(client[0]):
                values = [value for name, value in scope["headers"] if name == b"x-forwarded-host"]
                if values:
                    scope[SCOPE_KEY].forwarded_host = values[-1].rsplit(b",", 1)[-1].strip()
        await self.app(scope, receive, send)
