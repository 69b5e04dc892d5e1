"""The contract's endpoints as Flask-RESTful resources.

Every query is scoped to the caller: another owner's todo simply does not
exist (404, never 403). Each handler's docstring is its OpenAPI operation
(apispec YAML after ``---``; ``schema: NAME`` names a dict in this module).
"""

from __future__ import annotations

from flask import current_app, request
from flask_restful import Resource, marshal
from sqlalchemy import select
from werkzeug.exceptions import NotFound

from .marshalling import todo_fields, todo_url
from .models import Todo, db
from .pagination import paginate
from .parsers import read_json
from .schemas import list_parameters, page, patched_todo_input, root, todo_input  # noqa: F401 - named by the docstrings
from .urls import absolute_url
from .validation import ORDERING_FIELDS, validate_listing, validate_todo

BIGINT_MAX = 2**63 - 1
ORDERING_COLUMNS = {name: getattr(Todo, name) for name in ORDERING_FIELDS}


def current_owner() -> str:
    """``REMOTE_USER``, which only the gateway sets; no request header can."""
    return request.remote_user or "anonymous"


def _order_by(terms: tuple[str, ...]) -> list:
    clauses = [
        ORDERING_COLUMNS[term[1:]].desc() if term.startswith("-") else ORDERING_COLUMNS[term].asc()
        for term in terms
    ]
    if not any(term.removeprefix("-") == "id" for term in terms):
        clauses.append(Todo.id.asc())
    return clauses


class ApiResource(Resource):
    """Base resource: no automatic ``OPTIONS``, since the contract answers it with 405."""

    provide_automatic_options = False


class ApiRoot(ApiResource):
    def get(self):
        """Links to the collections
        ---
        operationId: getRoot
        responses:
          "200":
            description: The API root.
            content:
              application/json:
                schema: root
        """
        return {"todos": absolute_url("/todos")}


class TodoList(ApiResource):
    def get(self):
        """List the caller's todos, one page at a time
        ---
        operationId: listTodos
        parameters: list_parameters
        responses:
          "200":
            description: A page.
            content:
              application/json:
                schema: page
          "400":
            description: A query parameter that fails validation (`fields` says which).
          "404":
            description: A page past the last one (page 1 of an empty list is 200).
        """
        listing = validate_listing(request.args)
        statement = select(Todo).where(Todo.owner == current_owner())
        if listing.done is not None:
            statement = statement.where(Todo.done == listing.done)
        statement = statement.order_by(*_order_by(listing.ordering))
        return paginate(statement, listing.page, listing.page_size)

    def post(self):
        """Create a todo
        ---
        operationId: createTodo
        requestBody:
          required: true
          content:
            application/json:
              schema: todo_input
        responses:
          "201":
            description: Created.
            headers:
              Location:
                description: The created todo's `url`.
                required: true
                schema: {type: string, format: uri}
            content:
              application/json:
                schema: todo_fields
          "400":
            description: Invalid JSON, or a field that fails validation (`fields` says which).
        """
        values = validate_todo(read_json())
        todo = Todo(owner=current_owner(), **values)
        db.session.add(todo)
        db.session.commit()
        return marshal(todo, todo_fields), 201, {"Location": todo_url(todo.id)}


class TodoItem(ApiResource):
    def get(self, todo_id: int):
        """One todo
        ---
        operationId: getTodo
        responses:
          "200":
            description: The todo.
            content:
              application/json:
                schema: todo_fields
          "404":
            description: No such todo, or not the caller's.
        """
        return marshal(self._todo(todo_id), todo_fields)

    def put(self, todo_id: int):
        """Replace a todo's writable fields (`done` unchanged when absent)
        ---
        operationId: replaceTodo
        requestBody:
          required: true
          content:
            application/json:
              schema: todo_input
        responses:
          "200":
            description: The todo.
            content:
              application/json:
                schema: todo_fields
          "400":
            description: Invalid JSON, or a field that fails validation (`fields` says which).
          "404":
            description: No such todo, or not the caller's.
        """
        return self._update(todo_id, partial=False)

    def patch(self, todo_id: int):
        """Change some of a todo's writable fields
        ---
        operationId: updateTodo
        requestBody:
          required: false
          content:
            application/json:
              schema: patched_todo_input
        responses:
          "200":
            description: The todo.
            content:
              application/json:
                schema: todo_fields
          "400":
            description: Invalid JSON, or a field that fails validation (`fields` says which).
          "404":
            description: No such todo, or not the caller's.
        """
        return self._update(todo_id, partial=True)

    def delete(self, todo_id: int):
        """Delete a todo
        ---
        operationId: deleteTodo
        responses:
          "204":
            description: Deleted.
          "404":
            description: No such todo, or not the caller's.
        """
        db.session.delete(self._todo(todo_id))
        db.session.commit()
        response = current_app.response_class(status=204)
        del response.headers["Content-Type"]
        return response

    def _todo(self, todo_id: int) -> Todo:
        if todo_id > BIGINT_MAX:
            raise NotFound()
        todo = db.session.scalar(select(Todo).where(Todo.id == todo_id, Todo.owner == current_owner()))
        if todo is None:
            raise NotFound()
        return todo

    def _update(self, todo_id: int, *, partial: bool):
        todo = self._todo(todo_id)
        todo.update(validate_todo(read_json(), partial=partial))
        db.session.commit()
        return marshal(todo, todo_fields)
