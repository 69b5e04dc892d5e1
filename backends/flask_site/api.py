"""The Flask-RESTful ``Api``: routes, JSON output and contract-shaped errors.

Every path takes an optional trailing slash (both spellings are routed, so
there are no redirects), and a todo id is any run of ASCII digits, so
anything else is an unknown path (404) exactly as on the Django stack.
"""

from __future__ import annotations

from flask import Flask
from flask_restful import Api
from werkzeug.routing import IntegerConverter

from .errors import error_response
from .methods import add_allow_header
from .rendering import render_json
from .resources import ApiRoot, TodoItem, TodoList


class TodoIdConverter(IntegerConverter):
    """Django's ``[0-9]+`` lookup: ASCII digits only, where ``\\d`` would take any Unicode digit."""

    regex = r"[0-9]+"


class ContractApi(Api):
    """An ``Api`` whose errors use the contract's body instead of ``{"message": ...}``."""

    def handle_error(self, e):
        return error_response(e)


def init_api(app: Flask) -> ContractApi:
    app.url_map.converters["todo_id"] = TodoIdConverter
    app.url_map.merge_slashes = False
    app.after_request(add_allow_header)
    api = ContractApi(app, default_mediatype="application/json")
    api.representation("application/json")(render_json)
    api.add_resource(ApiRoot, "/", endpoint="root")
    api.add_resource(TodoList, "/todos", "/todos/", endpoint="todos")
    api.add_resource(TodoItem, "/todos/<todo_id:todo_id>", "/todos/<todo_id:todo_id>/", endpoint="todo")
    return api
