"""A Django REST framework project's OpenAPI paths, from its views, by drf-spectacular.

The project needs no edit when its views carry no ``@extend_schema``: a view whose
schema is DRF's default is given drf-spectacular's ``AutoSchema`` here. With
``@extend_schema`` (or ``extend_schema_view``) the project must set, as
drf-spectacular asks, ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] =
"drf_spectacular.openapi.AutoSchema"``; ``"drf_spectacular"`` in ``INSTALLED_APPS``
is not needed. ``SPECTACULAR_SETTINGS`` are honoured, with OpenAPI 3.1 and split
request/response components forced on (``patched_settings``).
"""

from __future__ import annotations

from typing import Any

_FORCED = {"OAS_VERSION": "3.1.0", "COMPONENT_SPLIT_REQUEST": True, "SCHEMA_PATH_PREFIX": ""}


def is_django_app(app: Any) -> bool:
    module = type(app).__module__
    if not module.startswith("django."):
        return False
    from django.core.handlers.wsgi import WSGIHandler

    return isinstance(app, WSGIHandler)


def drf_document(app: Any = None) -> dict[str, Any]:
    """The document drf-spectacular generates from the configured project's URLconf."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.openapi import AutoSchema
    from drf_spectacular.settings import patched_settings

    class Generator(SchemaGenerator):
        def create_view(self, callback, method, request=None):
            view = super().create_view(callback, method, request)
            if view.schema is not None and not isinstance(view.schema, AutoSchema):
                schema = AutoSchema()
                schema.view = view
                view.schema = schema
            return view

    with patched_settings(_FORCED):
        return Generator().get_schema(request=None, public=True)
