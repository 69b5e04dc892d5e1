"""The ``GET /todos`` query parameters, validated like any DRF input.

A serializer over ``request.query_params`` reports every bad parameter in
one 400, takes a repeated parameter by its last value and treats an empty
one as absent; the Flask stack mirrors exactly that.
"""

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

DONE_VALUES = {"true": True, "1": True, "false": False, "0": False}
ORDERING_FIELDS = ("id", "title", "done", "created_at", "updated_at")
DEFAULT_ORDERING = ("id",)


_ORDER_TERM = "-?(" + "|".join(ORDERING_FIELDS) + ")"


@extend_schema_field({"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$", "description": "Only done (`true`, `1`) or open (`false`, `0`) todos; case-insensitive."})
class DoneFilterField(serializers.Field):
    default_error_messages = {"invalid": "Must be one of: true, false, 1, 0."}

    def to_internal_value(self, data):
        try:
            return DONE_VALUES[str(data).lower()]
        except KeyError:
            self.fail("invalid")


@extend_schema_field({"type": "string", "pattern": f"^{_ORDER_TERM}(,{_ORDER_TERM})*$", "description": "Comma-separated fields, each optionally prefixed with `-` (descending); ties by `id`. Default `id`."})
class OrderingField(serializers.Field):
    """Comma-separated fields, each optionally ``-``-prefixed; the first unknown one is reported."""

    default_error_messages = {"unknown": 'Unknown field "{name}".'}

    def to_internal_value(self, data):
        terms = tuple(term.strip() for term in str(data).split(",") if term.strip())
        for term in terms:
            name = term.removeprefix("-")
            if name not in ORDERING_FIELDS:
                self.fail("unknown", name=name)
        return terms or DEFAULT_ORDERING


class ListQuerySerializer(serializers.Serializer):
    done = DoneFilterField(required=False)
    ordering = OrderingField(required=False)
    page = serializers.IntegerField(min_value=1, default=1)
    page_size = serializers.IntegerField(min_value=1, max_value=100, default=20)

    def filter(self, queryset: QuerySet) -> QuerySet:
        """``queryset`` narrowed by ``done`` and ordered, ties broken by ``id``."""
        params = self.validated_data
        if "done" in params:
            queryset = queryset.filter(done=params["done"])
        return queryset.order_by(*params.get("ordering", DEFAULT_ORDERING), "id")
