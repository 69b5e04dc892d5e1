"""docs/contract.md, checked against both stacks through the real gateway.

Every test runs for ``/v1`` (Flask) and ``/v2`` (Django), on SQLite and on
PostgreSQL (see conftest.py).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import httpx
import pytest

from tests.contract.conftest import PREFIXES

KEYS = ["id", "url", "title", "done", "owner", "created_at", "updated_at"]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def clear(client: httpx.Client) -> None:
    while True:
        page = client.get("/todos", params={"page_size": 100}).json()
        if not page["results"]:
            return
        for todo in page["results"]:
            assert client.delete(f"/todos/{todo['id']}").status_code == 204


@pytest.fixture
def alice(api):
    client = api("alice")
    clear(client)
    return client


@pytest.fixture
def bob(api):
    client = api("bob")
    clear(client)
    return client


def assert_error(response: httpx.Response, status: int, code: str, message: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and error["code"] == code, error
    if message is not None:
        assert error["message"] == message
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def test_create_and_read(alice, stack, prefix):
    response = alice.post("/todos", json={"title": "  Buy milk  "})
    assert response.status_code == 201, response.text
    todo = response.json()
    assert list(todo) == KEYS
    assert todo["title"] == "Buy milk" and todo["done"] is False and todo["owner"] == "alice"
    assert todo["url"] == f"{stack.url}{prefix}/todos/{todo['id']}"
    assert response.headers["location"] == todo["url"]
    assert TIMESTAMP.match(todo["created_at"]) and TIMESTAMP.match(todo["updated_at"])
    created = datetime.fromisoformat(todo["created_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 60
    for path in (f"/todos/{todo['id']}", f"/todos/{todo['id']}/"):
        again = alice.get(path)
        assert again.status_code == 200 and again.json() == todo


def test_written_by_one_stack_reads_the_same_on_the_other(api, stack, prefix):
    clear(api("alice"))
    other = next(p for p in PREFIXES if p != prefix)
    mine = api("alice")
    theirs = httpx.Client(base_url=stack.url + other, headers=dict(mine.headers))
    todo = mine.post("/todos", json={"title": "cross", "done": True}).json()
    seen = theirs.get(f"/todos/{todo['id']}").json()
    assert seen["url"] == f"{stack.url}{other}/todos/{todo['id']}"
    assert {k: v for k, v in seen.items() if k != "url"} == {k: v for k, v in todo.items() if k != "url"}
    patched = theirs.patch(f"/todos/{todo['id']}", json={"title": "cross, edited"}).json()
    back = mine.get(f"/todos/{todo['id']}").json()
    assert back["title"] == "cross, edited" and back["updated_at"] == patched["updated_at"]
    theirs.close()


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)  # an SQLite file has no server to drop them
def test_connections_the_database_server_dropped_are_replaced(alice, stack):
    """A PostgreSQL restart or failover under the gateway: each stack's kept connections are dead;
    the next requests open new ones instead of answering 500."""
    import psycopg

    url = stack.env["DATABASE_URL"]
    todo = alice.post("/todos", json={"title": "Survives"}).json()
    for _ in range(20):  # the stack's threads hold pooled connections now
        assert alice.get(f"/todos/{todo['id']}").status_code == 200
    with psycopg.connect(url, autocommit=True) as admin:
        dropped = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert dropped >= 1
    for _ in range(20):
        response = alice.get(f"/todos/{todo['id']}")
        assert response.status_code == 200, response.text
        assert response.json() == todo


def test_api_root(alice, stack, prefix):
    for path in ("/", ""):
        response = alice.get(path) if path else httpx.get(stack.url + prefix, headers=dict(alice.headers))
        assert response.status_code == 200
        assert response.json() == {"todos": f"{stack.url}{prefix}/todos"}


def test_update_patch_delete(alice):
    todo = alice.post("/todos", json={"title": "a"}).json()
    url = f"/todos/{todo['id']}"
    put = alice.put(url, json={"title": "b"})
    assert put.status_code == 200 and put.json()["title"] == "b" and put.json()["done"] is False
    assert put.json()["updated_at"] >= todo["updated_at"]
    patched = alice.patch(url, json={"done": True})
    assert patched.status_code == 200 and patched.json()["done"] is True and patched.json()["title"] == "b"
    put_keeps_done = alice.put(url, json={"title": "c"}).json()
    assert put_keeps_done["done"] is True
    ignored = alice.patch(url, json={"id": 999, "owner": "bob", "url": "x", "created_at": "2000-01-01T00:00:00Z", "extra": 1}).json()
    assert ignored["id"] == todo["id"] and ignored["owner"] == "alice" and ignored["created_at"] == todo["created_at"]
    deleted = alice.delete(url)
    assert deleted.status_code == 204 and deleted.content == b""
    assert_error(alice.get(url), 404, "not_found", "Not found.")
    assert_error(alice.delete(url), 404, "not_found")


def test_head_is_answered_like_get(alice):
    todo = alice.post("/todos", json={"title": "h"}).json()
    response = alice.head(f"/todos/{todo['id']}")
    assert response.status_code == 200 and response.content == b""


def test_owners_are_isolated(alice, bob):
    todo = alice.post("/todos", json={"title": "alice's"}).json()
    url = f"/todos/{todo['id']}"
    assert_error(bob.get(url), 404, "not_found")
    assert_error(bob.put(url, json={"title": "mine now"}), 404, "not_found")
    assert_error(bob.patch(url, json={"done": True}), 404, "not_found")
    assert_error(bob.delete(url), 404, "not_found")
    assert bob.get("/todos").json()["count"] == 0
    assert alice.get(url).json() == todo


def test_pagination(alice, stack, prefix):
    ids = [alice.post("/todos", json={"title": f"t{i:02d}"}).json()["id"] for i in range(25)]
    first = alice.get("/todos").json()
    assert first["count"] == 25 and len(first["results"]) == 20 and first["previous"] is None
    assert [t["id"] for t in first["results"]] == ids[:20]
    assert first["next"] == f"{stack.url}{prefix}/todos?page=2"
    second = alice.get(first["next"]).json()
    assert [t["id"] for t in second["results"]] == ids[20:] and second["next"] is None
    assert second["previous"] == f"{stack.url}{prefix}/todos"
    small = alice.get("/todos", params={"page_size": 10, "page": 2, "done": "false"}).json()
    assert small["next"] == f"{stack.url}{prefix}/todos?done=false&page=3&page_size=10"
    assert small["previous"] == f"{stack.url}{prefix}/todos?done=false&page_size=10"
    assert_error(alice.get("/todos", params={"page": 4, "page_size": 10}), 404, "not_found")


def test_empty_first_page(alice):
    page = alice.get("/todos").json()
    assert page == {"count": 0, "next": None, "previous": None, "results": []}


def test_filter_and_ordering(alice):
    for title, done in (("b", True), ("a", False), ("c", True)):
        alice.post("/todos", json={"title": title, "done": done})
    done = alice.get("/todos", params={"done": "TRUE"}).json()["results"]
    assert [t["title"] for t in done] == ["b", "c"]
    assert [t["title"] for t in alice.get("/todos", params={"done": "0"}).json()["results"]] == ["a"]
    by_title = alice.get("/todos", params={"ordering": "-title"}).json()["results"]
    assert [t["title"] for t in by_title] == ["c", "b", "a"]
    combined = alice.get("/todos", params={"ordering": "-done,title"}).json()["results"]
    assert [t["title"] for t in combined] == ["b", "c", "a"]


@pytest.mark.parametrize(
    "params, field, message",
    [
        ({"done": "yes"}, "done", "Must be one of: true, false, 1, 0."),
        ({"ordering": "owner"}, "ordering", 'Unknown field "owner".'),
        ({"ordering": "title,-nope"}, "ordering", 'Unknown field "nope".'),
        ({"page": "x"}, "page", "A valid integer is required."),
        ({"page": "0"}, "page", "Ensure this value is greater than or equal to 1."),
        ({"page_size": "0"}, "page_size", "Ensure this value is greater than or equal to 1."),
        ({"page_size": "101"}, "page_size", "Ensure this value is less than or equal to 100."),
    ],
    ids=["done", "ordering", "ordering-second", "page-nan", "page-zero", "size-zero", "size-big"],
)
def test_bad_query(alice, params, field, message):
    error = assert_error(alice.get("/todos", params=params), 400, "invalid", "Invalid input.")
    assert error["fields"] == {field: [message]}


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({}, "title", "This field is required."),
        ({"title": ""}, "title", "This field may not be blank."),
        ({"title": "   "}, "title", "This field may not be blank."),
        ({"title": "x" * 201}, "title", "Ensure this field has no more than 200 characters."),
        ({"title": None}, "title", "This field may not be null."),
        ({"title": 5}, "title", "Not a valid string."),
        ({"title": True}, "title", "Not a valid string."),
        ({"title": ["a"]}, "title", "Not a valid string."),
        ({"title": "ok", "done": "true"}, "done", "Must be a valid boolean."),
        ({"title": "ok", "done": 1}, "done", "Must be a valid boolean."),
        ([{"title": "a"}], "non_field_errors", "Invalid data. Expected a dictionary, but got list."),
        ("a string", "non_field_errors", "Invalid data. Expected a dictionary, but got str."),
    ],
    ids=["missing", "empty", "blank", "long", "null", "number", "bool", "list", "done-string", "done-int", "list-body", "str-body"],
)
def test_validation(alice, body, field, message):
    error = assert_error(alice.post("/todos", json=body), 400, "invalid", "Invalid input.")
    assert error["fields"] == {field: [message]}
    assert alice.get("/todos").json()["count"] == 0


def test_title_of_200_characters_is_fine(alice):
    assert alice.post("/todos", json={"title": "x" * 200}).status_code == 201


def test_put_requires_title(alice):
    todo = alice.post("/todos", json={"title": "a"}).json()
    error = assert_error(alice.put(f"/todos/{todo['id']}", json={"done": True}), 400, "invalid")
    assert error["fields"] == {"title": ["This field is required."]}


def test_malformed_json(alice):
    response = alice.post("/todos", content=b'{"title": ', headers={"Content-Type": "application/json"})
    assert_error(response, 400, "parse_error", "Malformed JSON request body.")


def test_unsupported_media_type(alice):
    response = alice.post("/todos", content=b"title=a", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(response, 415, "unsupported_media_type", 'Unsupported media type "application/x-www-form-urlencoded" in request.')


def test_method_not_allowed(alice):
    response = alice.delete("/todos")
    assert_error(response, 405, "method_not_allowed", 'Method "DELETE" not allowed.')
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "POST"}


@pytest.mark.parametrize("path", ["/todos/abc", "/todos/0", "/todos/999999999", "/nothing-here"])
def test_not_found(alice, path):
    assert_error(alice.get(path), 404, "not_found", "Not found.")


def test_request_id_reaches_the_error_body(alice):
    response = alice.get("/todos/999999999", headers={"X-Request-ID": "contract-check-1"})
    assert response.json()["error"]["request_id"] == "contract-check-1"
