from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import routers, serializers, viewsets

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


NOT_FOUND = OpenApiResponse(description="No such todo, or not the caller's.")
PAGE_NOT_FOUND = OpenApiResponse(description="A page past the last one (page 1 of an empty list is 200).")
INVALID = OpenApiResponse(description="Invalid JSON, or a field that fails validation (`fields` says which).")


class ApiRootView(routers.APIRootView):
    """The todos API: one link per collection."""

    http_method_names = ALLOWED_METHODS
    schema = AutoSchema()  # DRF leaves the root out of schemas; the contract has it

    @extend_schema(
        operation_id="getRoot",
        summary="Links to the collections",
        responses=inline_serializer("Root", {"todos": serializers.URLField(help_text="Absolute URL of the todos collection.")}),
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


@extend_schema_view(
    list=extend_schema(operation_id="listTodos", summary="List the caller's todos, one page at a time", parameters=[ListQuerySerializer], responses={200: TodoSerializer(many=True), 400: INVALID, 404: PAGE_NOT_FOUND}),
    create=extend_schema(operation_id="createTodo", summary="Create a todo", responses={201: TodoSerializer, 400: INVALID}),
    retrieve=extend_schema(operation_id="getTodo", summary="One todo", responses={200: TodoSerializer, 404: NOT_FOUND}),
    update=extend_schema(operation_id="replaceTodo", summary="Replace a todo's writable fields (`done` unchanged when absent)", responses={200: TodoSerializer, 400: INVALID, 404: NOT_FOUND}),
    partial_update=extend_schema(operation_id="updateTodo", summary="Change some of a todo's writable fields", responses={200: TodoSerializer, 400: INVALID, 404: NOT_FOUND}),
    destroy=extend_schema(operation_id="deleteTodo", summary="Delete a todo", responses={204: None, 404: NOT_FOUND}),
)
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
