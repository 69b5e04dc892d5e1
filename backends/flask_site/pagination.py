"""Page-number pagination with DRF's ``PageNumberPagination`` envelope and links."""

from __future__ import annotations

from math import ceil

from flask_restful import marshal
from sqlalchemy import Select, func, select
from werkzeug.exceptions import NotFound

from .marshalling import todo_fields
from .models import db
from .urls import remove_query_param, replace_query_param, request_url

PAGE_PARAM = "page"


def _link(page: int) -> str:
    url = request_url()
    if page == 1:
        return remove_query_param(url, PAGE_PARAM)
    return replace_query_param(url, PAGE_PARAM, page)


def paginate(statement: Select, page: int, page_size: int) -> dict:
    """One page of ``statement``'s todos; a page past the last is a 404 (an empty first page is not)."""
    count = db.session.scalar(select(func.count()).select_from(statement.order_by(None).subquery()))
    last_page = max(1, ceil(count / page_size))
    if page > last_page:
        raise NotFound()
    todos = db.session.scalars(statement.limit(page_size).offset((page - 1) * page_size)).all()
    return {
        "count": count,
        "next": _link(page + 1) if page < last_page else None,
        "previous": _link(page - 1) if page > 1 else None,
        "results": marshal(todos, todo_fields),
    }
