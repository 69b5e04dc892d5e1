from __future__ import annotations

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param


class TodoPagination(BasePagination):
    """Page-number pagination by the contract's rules.

    ``page`` and ``page_size`` arrive already checked (see ``ListQuerySerializer``); a
    page past the last one is a 404, except page 1 of an empty list. Links
    keep the request's own path and query, DRF-style, so both stacks agree.
    """

    def paginate(self, queryset: QuerySet, request, page: int, page_size: int) -> list:
        self.request = request
        self.page = page
        self.count = queryset.count()
        self.last_page = max(1, -(-self.count // page_size))
        if page > self.last_page:
            raise NotFound()
        start = (page - 1) * page_size
        return list(queryset[start : start + page_size])

    def get_paginated_response(self, data) -> Response:
        return Response(
            {
                "count": self.count,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict) -> dict:
        """The page envelope for the API schema (drf-spectacular)."""
        return {
            "type": "object",
            "required": ["count", "next", "previous", "results"],
            "properties": {
                "count": {"type": "integer", "minimum": 0, "description": "All matching todos of the caller."},
                "next": {"type": ["string", "null"], "format": "uri", "description": "Absolute URL of the next page, null on the last."},
                "previous": {"type": ["string", "null"], "format": "uri", "description": "Absolute URL of the previous page, null on the first."},
                "results": {**schema, "maxItems": 100},
            },
        }

    def get_next_link(self) -> str | None:
        if self.page >= self.last_page:
            return None
        return replace_query_param(self.request.build_absolute_uri(), "page", self.page + 1)

    def get_previous_link(self) -> str | None:
        if self.page <= 1:
            return None
        url = self.request.build_absolute_uri()
        if self.page == 2:
            return remove_query_param(url, "page")
        return replace_query_param(url, "page", self.page - 1)
