"""API versions: ``X-API-Version`` to the backend, deprecation headers to the client.

A deprecated version's responses carry ``Deprecation`` (RFC 9745, a
structured-field date), ``Sunset`` (RFC 8594, an HTTP-date) and a ``Link`` to
its successor (``rel="successor-version"``) and to its notes
(``rel="deprecation"``).
"""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime
from typing import Optional, Union

from pydantic import field_validator

from gateway.schema import Schema

Moment = Union[dt.datetime, dt.date]


class VersionConfig(Schema):
    """One ``[versions.NAME]`` table."""

    deprecated: Optional[Moment] = None
    """When the version was (or will be) deprecated: a TOML date or date-time."""
    sunset: Optional[Moment] = None
    """When the version stops being served: a TOML date or date-time."""
    successor: Optional[str] = None
    """Name of the version that replaces this one."""
    link: Optional[str] = None
    """URL of human-readable deprecation notes."""

    @field_validator("link")
    @classmethod
    def _link(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (not value.isprintable() or any(c in value for c in '<> "')):
            raise ValueError("must be a URL without spaces, quotes or angle brackets")
        return value


def _as_datetime(moment: Moment) -> dt.datetime:
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime(moment.year, moment.month, moment.day)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def response_headers(config: VersionConfig, successor_prefix: Optional[str]) -> tuple[tuple[bytes, bytes], ...]:
    """The headers every response of a route on this version carries (built once)."""
    headers: list[tuple[bytes, bytes]] = []
    if config.deprecated is not None:
        headers.append((b"deprecation", f"@{int(_as_datetime(config.deprecated).timestamp())}".encode()))
    if config.sunset is not None:
        headers.append((b"sunset", format_datetime(_as_datetime(config.sunset), usegmt=True).encode()))
    links = []
    if config.deprecated is not None and successor_prefix is not None:
        links.append(f'<{successor_prefix}>; rel="successor-version"')
    if config.link is not None:
        links.append(f'<{config.link}>; rel="deprecation"; type="text/html"')
    if links:
        headers.append((b"link", ", ".join(links).encode()))
    return tuple(headers)
