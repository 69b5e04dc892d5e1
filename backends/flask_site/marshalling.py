"""The todo representation: keys, order and formats of DRF's serializer output."""

from __future__ import annotations

from datetime import datetime, timezone

from flask_restful import fields

from .urls import absolute_url


class UTCDateTime(fields.Raw):
    """DRF's ``DateTimeField`` form: UTC ISO 8601 with ``Z``; naive values (SQLite) are UTC."""

    __schema_type__ = "string"
    __schema_format__ = "date-time"

    def format(self, value: datetime) -> str:
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        text = value.astimezone(timezone.utc).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text


class TodoUrl(fields.Raw):
    """The todo's absolute URL under the prefix the request came through."""

    __schema_type__ = "string"
    __schema_format__ = "uri"

    def output(self, key, obj) -> str:
        return todo_url(obj.id)


def todo_url(todo_id: int) -> str:
    return absolute_url(f"/todos/{todo_id}")


todo_fields = {
    "id": fields.Integer,
    "url": TodoUrl,
    "title": fields.String,
    "done": fields.Boolean,
    "owner": fields.String,
    "created_at": UTCDateTime,
    "updated_at": UTCDateTime,
}
