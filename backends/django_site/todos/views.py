from rest_framework import routers, viewsets

from .models import Todo
from .pagination import TodoPagination
from .parsers import StrictJSONParser
from .query import ListQuerySerializer
from .serializers import TodoSerializer

# HEAD follows GET; OPTIONS, TRACE and the rest are 405 (the contract lists no others).
ALLOWED_METHODS = ["get", "post", "put", "patch", "delete", "head"]


def owner_of(request) -> str:
    """The caller the gateway vouched for (``REMOTE_USER``), or ``anonymous``."""
    user = request.user
    return user.get_username() if user.is_authenticated else "anonymous"


class ApiRootView(routers.APIRootView):
    """The todos API: one link per collection."""

    http_method_names = ALLOWED_METHODS


class TodoViewSet(viewsets.ModelViewSet):
    """Your todos. Todos of other callers are not found, never forbidden.

    List filters: `done`, `ordering`, `page`, `page_size`.
    """

    serializer_class = TodoSerializer
    pagination_class = TodoPagination
    parser_classes = [StrictJSONParser]  # not settings' JSONParser: bounded depth, no duplicate keys
    lookup_value_regex = "[0-9]+"
    http_method_names = ALLOWED_METHODS

    def get_queryset(self):
        return Todo.objects.filter(owner=owner_of(self.request))

    def perform_create(self, serializer):
        serializer.save(owner=owner_of(self.request))

    def list(self, request, *args, **kwargs):
        query = ListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        page = self.paginator.paginate(query.filter(self.get_queryset()), request, params["page"], params["page_size"])
        return self.get_paginated_response(self.get_serializer(page, many=True).data)
