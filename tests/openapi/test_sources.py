"""Each stack's own document: the Flask introspection, and drf-spectacular on a project without settings for it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime

from flask import Flask
from flask.views import MethodView
from flask_restful import Api, Resource, fields

from gateway.openapi.flask_restful import component_name, field_schema, flask_document
from tests.services import ROOT


class Stamp(fields.Raw):
    __schema_type__ = "string"
    __schema_format__ = "date-time"

    def format(self, value: datetime) -> str:
        return value.isoformat()


owner_fields = {"name": fields.String}
book_fields = {
    "id": fields.Integer,
    "price": fields.Float(),
    "seen": Stamp,
    "link": fields.Url("book"),
    "tags": fields.List(fields.String),
    "owner": fields.Nested(owner_fields, allow_null=True),
    "extra": fields.Raw,
}


class Books(Resource):
    def get(self):
        """All books
        Every one of them.
        ---
        operationId: listBooks
        responses:
          200:
            description: The books.
            content:
              application/json:
                schema:
                  type: array
                  items: book_fields
        """

    def post(self):
        pass


class Book(Resource):
    def get(self, book_id):
        """One book"""

    def delete(self, book_id):
        """Remove it"""


class Ping(MethodView):
    def get(self):
        return "pong"


def make_app() -> Flask:
    app = Flask(__name__)
    api = Api(app)
    api.add_resource(Books, "/books", "/books/")
    api.add_resource(Book, "/books/<int:book_id>", endpoint="book")
    app.add_url_rule("/ping/<path:rest>", view_func=Ping.as_view("ping"))

    @app.route("/hello", methods=["GET", "PUT"])
    def hello():
        """Say hello"""

    return app


def test_flask_paths_methods_and_docstrings():
    doc = flask_document(make_app(), title="books")
    assert doc["openapi"] == "3.1.0"
    assert sorted(doc["paths"]) == ["/books", "/books/{book_id}", "/hello", "/ping/{rest}"]
    assert set(doc["paths"]["/books"]) == {"get", "post"}  # no HEAD, no OPTIONS
    assert set(doc["paths"]["/books/{book_id}"]) == {"parameters", "get", "delete"}
    assert doc["paths"]["/books/{book_id}"]["parameters"] == [{"name": "book_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}]
    assert doc["paths"]["/ping/{rest}"]["parameters"][0]["schema"] == {"type": "string"}
    assert set(doc["paths"]["/hello"]) == {"get", "put"}
    listing = doc["paths"]["/books"]["get"]
    assert listing["operationId"] == "listBooks"
    assert listing["summary"] == "All books" and listing["description"] == "Every one of them."
    assert listing["responses"]["200"]["content"]["application/json"]["schema"]["items"] == {"$ref": "#/components/schemas/Book"}
    assert doc["paths"]["/books"]["post"]["responses"] == {"200": {"description": "OK"}}
    assert doc["paths"]["/books/{book_id}"]["delete"]["summary"] == "Remove it"


def test_marshal_fields_become_json_schema():
    doc = flask_document(make_app())
    book = doc["components"]["schemas"]["Book"]
    assert book["required"] == list(book_fields)
    assert book["properties"] == {
        "id": {"type": "integer"},
        "price": {"type": "number"},
        "seen": {"type": "string", "format": "date-time"},
        "link": {"type": "string", "format": "uri"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "owner": {"anyOf": [{"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}, {"type": "null"}]},
        "extra": {},
    }
    assert field_schema(fields.Boolean) == {"type": "boolean"}
    assert component_name("todo_fields") == "Todo" and component_name("patched_todo_input") == "PatchedTodoInput"


def test_drf_needs_no_settings_edit_without_extend_schema(tmp_path):
    """A project with DRF only (no drf_spectacular app, no DEFAULT_SCHEMA_CLASS) is described."""
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "settings.py").write_text(textwrap.dedent("""
        SECRET_KEY = "x"
        ROOT_URLCONF = "shop.urls"
        INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"]
        DATABASES = {}
        USE_TZ = True
    """))
    (tmp_path / "shop" / "urls.py").write_text(textwrap.dedent("""
        from rest_framework import serializers, views
        from rest_framework.response import Response
        from django.urls import path

        class Item(serializers.Serializer):
            name = serializers.CharField(max_length=20)
            count = serializers.IntegerField()

        class Items(views.APIView):
            serializer_class = Item

            def get(self, request):
                return Response([])

        urlpatterns = [path("items/", Items.as_view())]
    """))
    script = (
        "import json, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'shop.settings';"
        "from django.core.wsgi import get_wsgi_application; app = get_wsgi_application();"
        "from gateway.openapi.drf import drf_document, is_django_app; assert is_django_app(app);"
        "print(json.dumps(drf_document(app)))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {"/items/"}
    assert doc["components"]["schemas"]["Item"]["properties"]["name"] == {"type": "string", "maxLength": 20}


class Wrapper:
    """A WSGI middleware the way WhiteNoise holds its app."""

    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        return self.application(environ, start_response)


wrapped = Wrapper(make_app())


def test_a_wrapped_flask_app_is_found(tmp_path):
    from gateway.openapi.sources import stack_document
    from gateway.backends.wsgi import WSGIBackendConfig

    doc = stack_document("books", WSGIBackendConfig(kind="wsgi", app="tests.openapi.test_sources:wrapped"), tmp_path)
    assert "/books" in doc["paths"]
