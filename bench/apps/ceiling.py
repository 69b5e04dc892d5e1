"""(f) The ceiling: pure Starlette answering todo-shaped JSON with no database, no WSGI."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.model import CEILING_PREFIX, PAGE_SIZE


def _todo(base: str, todo_id: int) -> dict:
    return {
        "id": todo_id,
        "url": f"{base}{CEILING_PREFIX}/todos/{todo_id}",
        "title": f"Benchmark todo {todo_id}",
        "done": False,
        "owner": "anonymous",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }


def _base(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


async def item(request: Request) -> JSONResponse:
    return JSONResponse(_todo(_base(request), request.path_params["todo_id"]))


async def page(request: Request) -> JSONResponse:
    size = int(request.query_params.get("page_size", PAGE_SIZE))
    base = _base(request)
    return JSONResponse({"count": size, "next": None, "previous": None, "results": [_todo(base, i) for i in range(1, size + 1)]})


app = Starlette(
    routes=[
        Route(CEILING_PREFIX + "/todos", page),
        Route(CEILING_PREFIX + "/todos/{todo_id:int}", item),
    ]
)
