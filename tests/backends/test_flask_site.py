"""The Flask stack against the todos contract (docs/contract.md), over WSGI.

The schema normally comes from Django's migrations; here each test gets a
temporary SQLite file with the contract's ``todos`` table created by hand.
"""

from __future__ import annotations

import json
import re
import sqlite3

import httpx
import pytest
import sqlalchemy

from backends.flask_site import create_app, resources
from backends.flask_site.models import db
from tests.backends import stack_cases

SCHEMA = """
CREATE TABLE todos (
    id integer primary key autoincrement,
    title varchar(200) not null,
    done bool not null,
    owner varchar(150) not null,
    created_at datetime not null,
    updated_at datetime not null
)
"""
BASE = "http://testserver/v1"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
KEYS = ["id", "url", "title", "done", "owner", "created_at", "updated_at"]
USER_HEADER = "X-Test-Remote-User"


def as_gateway(wsgi_app):
    """Test-only stand-in for the gateway: the one place REMOTE_USER gets set."""

    def app(environ, start_response):
        user = environ.pop("HTTP_" + USER_HEADER.upper().replace("-", "_"), None)
        if user:
            environ["REMOTE_USER"] = user
        return wsgi_app(environ, start_response)

    return app


@pytest.fixture
def db_path(tmp_path):
    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute(SCHEMA)
    connection.close()
    return path


@pytest.fixture
def app(db_path):
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{db_path}"})
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def make_client(app):
    clients = []

    def make(user: str | None = "alice", script_name: str = "/v1") -> httpx.Client:
        transport = httpx.WSGITransport(app=as_gateway(app), script_name=script_name)
        headers = {USER_HEADER: user} if user else {}
        client = httpx.Client(transport=transport, base_url="http://testserver", headers=headers)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client):
    return make_client("alice")


def create(client, title="Buy milk", **extra):
    response = client.post("/todos", json={"title": title, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def assert_error(response, status, code, message, fields=None, request_id=None):
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = {"status": status, "code": code, "message": message, "request_id": request_id}
    if fields is not None:
        error["fields"] = fields
    assert response.json() == {"error": error}
    assert list(response.json()["error"]) == list(error)


def invalid(response, fields):
    assert_error(response, 400, "invalid", "Invalid input.", fields)


# --- root, routing, prefix -------------------------------------------------


def test_api_root(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"todos": f"{BASE}/todos"}


def test_urls_carry_the_script_name_they_were_fetched_under(make_client):
    todo = create(make_client("alice", "/v1"))
    assert todo["url"] == f"{BASE}/todos/{todo['id']}"
    v2 = make_client("alice", "/v2")
    assert v2.get("/").json() == {"todos": "http://testserver/v2/todos"}
    assert v2.get(f"/todos/{todo['id']}").json()["url"] == f"http://testserver/v2/todos/{todo['id']}"


def test_a_request_for_exactly_the_prefix_is_the_root(app):
    response = app.test_client().post("", environ_overrides={"SCRIPT_NAME": "/v1", "PATH_INFO": ""})
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    response = app.test_client().get("", environ_overrides={"SCRIPT_NAME": "/v1", "PATH_INFO": ""})
    assert response.json == {"todos": "http://localhost/v1/todos"}


@pytest.mark.parametrize("path", ["/todos", "/todos/"])
def test_list_with_or_without_trailing_slash(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_every_answer_of_a_route_carries_allow_like_drf(client):
    assert client.get("/").headers["allow"] == "GET, HEAD"
    assert client.get("/todos").headers["allow"] == "GET, POST, HEAD"
    assert client.get("/todos/1").headers["allow"] == "GET, PUT, PATCH, DELETE, HEAD"
    assert "allow" not in client.get("/nope").headers


def test_post_and_detail_with_trailing_slash(client):
    response = client.post("/todos/", json={"title": "slash"})
    assert response.status_code == 201
    todo_id = response.json()["id"]
    assert client.get(f"/todos/{todo_id}/").json() == response.json()
    assert client.patch(f"/todos/{todo_id}/", json={"done": True}).status_code == 200
    assert client.delete(f"/todos/{todo_id}/").status_code == 204


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/todos/abc",
        "/todos//",
        "/todos/1//",
        "/todos/0",
        "/todos/-1",
        "/todos/1.5",
        "/todos/99999999999999999999",
        "/todos/1/x",
    ],
)
def test_unknown_paths_are_json_404(client, path):
    assert_error(client.get(path), 404, "not_found", "Not found.")


def test_leading_zeros_name_the_same_todo(client):
    todo = create(client)
    assert client.get(f"/todos/00{todo['id']}").json() == todo


def test_head_is_answered_where_get_is(client):
    todo = create(client)
    for path in ("/", "/todos", f"/todos/{todo['id']}"):
        response = client.head(path)
        assert response.status_code == 200
        assert response.content == b""


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/todos", "GET, POST, HEAD"),
        ("PUT", "/todos/", "GET, POST, HEAD"),
        ("POST", "/todos/1", "GET, PUT, PATCH, DELETE, HEAD"),
        ("POST", "/", "GET, HEAD"),
        ("OPTIONS", "/todos", "GET, POST, HEAD"),
        ("OPTIONS", "/", "GET, HEAD"),
        ("TRACE", "/todos/1/", "GET, PUT, PATCH, DELETE, HEAD"),
    ],
)
def test_method_not_allowed(client, method, path, allow):
    response = client.request(method, path, headers={"X-Request-ID": "r-405"})
    assert_error(response, 405, "method_not_allowed", f'Method "{method}" not allowed.', request_id="r-405")
    assert response.headers["allow"] == allow


# --- CRUD -------------------------------------------------------------------


def test_create(client):
    response = client.post(
        "/todos",
        json={"title": "  Buy milk\n", "done": True, "id": 99, "owner": "mallory", "url": "x", "extra": 1},
    )
    assert response.status_code == 201
    todo = response.json()
    assert list(todo) == KEYS
    assert todo["id"] != 99
    assert todo["url"] == f"{BASE}/todos/{todo['id']}"
    assert response.headers["location"] == todo["url"]
    assert (todo["title"], todo["done"], todo["owner"]) == ("Buy milk", True, "alice")
    assert TIMESTAMP.match(todo["created_at"]) and todo["created_at"] == todo["updated_at"]


def test_create_defaults_done_to_false(client):
    assert create(client)["done"] is False


def test_read(client):
    todo = create(client, "Read me")
    response = client.get(f"/todos/{todo['id']}")
    assert response.status_code == 200
    assert response.json() == todo
    assert list(response.json()) == KEYS


def test_a_request_on_sqlite_runs_no_ping_statement(app, client):
    """A connection to an SQLite file cannot go stale, so none is tested before use."""
    statements = []
    with app.app_context():
        db.engine.dispose()
        sqlalchemy.event.listen(db.engine, "connect", lambda dbapi, record: dbapi.set_trace_callback(statements.append))
    todo = create(client, "Read me")
    statements.clear()
    assert client.get(f"/todos/{todo['id']}").status_code == 200
    assert statements and not [s for s in statements if s.strip().upper() == "SELECT 1"], statements


@pytest.mark.parametrize(
    ("uri", "pings"),
    [("sqlite:///var/x.sqlite3", False), ("sqlite://", False), ("postgresql+psycopg://u@db/x", True)],
)
def test_a_database_server_s_connections_are_tested_before_use(uri, pings):
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": uri})
    assert app.config["SQLALCHEMY_ENGINE_OPTIONS"]["pool_pre_ping"] is pings
    kept = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": uri, "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True}})
    assert kept.config["SQLALCHEMY_ENGINE_OPTIONS"]["pool_pre_ping"] is True  # an operator's choice stands


def test_put_requires_title_and_keeps_done(client):
    todo = create(client, done=True)
    invalid(client.put(f"/todos/{todo['id']}", json={"done": False}), {"title": ["This field is required."]})
    response = client.put(f"/todos/{todo['id']}", json={"title": " New ", "owner": "bob"})
    assert response.status_code == 200
    updated = response.json()
    assert (updated["title"], updated["done"], updated["owner"]) == ("New", True, "alice")
    assert updated["created_at"] == todo["created_at"]
    assert updated["updated_at"] > todo["updated_at"]
    assert client.put(f"/todos/{todo['id']}", json={"title": "x", "done": False}).json()["done"] is False


def test_patch_any_subset(client):
    todo = create(client, "Keep")
    assert client.patch(f"/todos/{todo['id']}", json={"done": True}).json()["title"] == "Keep"
    patched = client.patch(f"/todos/{todo['id']}", json={"title": "Changed"}).json()
    assert (patched["title"], patched["done"]) == ("Changed", True)
    empty = client.patch(f"/todos/{todo['id']}", json={})
    assert empty.status_code == 200
    assert empty.json()["updated_at"] > patched["updated_at"]


def test_patch_without_body_is_an_empty_update(client):
    todo = create(client)
    response = client.patch(f"/todos/{todo['id']}", headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    assert response.json()["title"] == todo["title"]


def test_delete(client):
    todo = create(client)
    response = client.delete(f"/todos/{todo['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert "content-type" not in response.headers
    assert_error(client.get(f"/todos/{todo['id']}"), 404, "not_found", "Not found.")
    assert_error(client.delete(f"/todos/{todo['id']}"), 404, "not_found", "Not found.")


def test_missing_todo_is_404_before_the_body_is_read(client):
    response = client.put("/todos/12345", content=b"{oops", headers={"Content-Type": "application/json"})
    assert_error(response, 404, "not_found", "Not found.")


# --- identity and ownership -------------------------------------------------


def test_other_owners_todos_do_not_exist(make_client):
    alice, bob = make_client("alice"), make_client("bob")
    todo = create(alice)
    path = f"/todos/{todo['id']}"
    for response in (
        bob.get(path),
        bob.put(path, json={"title": "mine"}),
        bob.patch(path, json={"done": True}),
        bob.delete(path),
    ):
        assert_error(response, 404, "not_found", "Not found.")
    assert bob.get("/todos").json()["count"] == 0
    assert alice.get(path).json() == todo


def test_no_remote_user_is_anonymous(make_client):
    anonymous = make_client(None)
    assert create(anonymous)["owner"] == "anonymous"
    assert make_client("alice").get("/todos").json()["count"] == 0


def test_no_header_sets_the_owner(make_client):
    anonymous = make_client(None)
    response = anonymous.post("/todos", json={"title": "t"}, headers={"Remote-User": "alice", "X-Remote-User": "alice"})
    assert response.json()["owner"] == "anonymous"


# --- body parsing and validation ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"title": ["This field is required."]}),
        ({"done": True}, {"title": ["This field is required."]}),
        ({"title": ""}, {"title": ["This field may not be blank."]}),
        ({"title": " \t\n "}, {"title": ["This field may not be blank."]}),
        ({"title": None}, {"title": ["This field may not be null."]}),
        ({"title": "x" * 201}, {"title": ["Ensure this field has no more than 200 characters."]}),
        ({"title": 42}, {"title": ["Not a valid string."]}),
        ({"title": 4.2}, {"title": ["Not a valid string."]}),
        ({"title": True}, {"title": ["Not a valid string."]}),
        ({"title": {"a": 1}}, {"title": ["Not a valid string."]}),
        ({"title": ["a"]}, {"title": ["Not a valid string."]}),
        ({"title": "a\x00b"}, {"title": ["Null characters are not allowed."]}),
        ({"title": "a\udfffb"}, {"title": ["Surrogate characters are not allowed: U+DFFF."]}),
        (
            {"title": "\x00\ud800" * 101},
            {
                "title": [
                    "Ensure this field has no more than 200 characters.",
                    "Null characters are not allowed.",
                    "Surrogate characters are not allowed: U+D800.",
                ]
            },
        ),
        ({"title": "ok", "done": "true"}, {"done": ["Must be a valid boolean."]}),
        ({"title": "ok", "done": 1}, {"done": ["Must be a valid boolean."]}),
        ({"title": "ok", "done": 0}, {"done": ["Must be a valid boolean."]}),
        ({"title": "ok", "done": []}, {"done": ["Must be a valid boolean."]}),
        ({"title": "ok", "done": None}, {"done": ["This field may not be null."]}),
        (
            {"title": "", "done": "no"},
            {"title": ["This field may not be blank."], "done": ["Must be a valid boolean."]},
        ),
    ],
)
def test_field_validation(client, body, fields):
    todo = create(client, "existing")
    send = {"content": json.dumps(body), "headers": {"Content-Type": "application/json"}}
    invalid(client.post("/todos", **send), fields)
    invalid(client.put(f"/todos/{todo['id']}", **send), fields)
    if "title" in body:
        invalid(client.patch(f"/todos/{todo['id']}", **send), fields)
    assert client.get("/todos").json()["count"] == 1


def test_field_errors_keep_title_before_done(client):
    response = client.post("/todos", json={"done": "x", "title": None})
    assert list(response.json()["error"]["fields"]) == ["title", "done"]


def test_title_length_counts_after_trimming(client):
    assert create(client, "  " + "é" * 200 + "  ")["title"] == "é" * 200


@pytest.mark.parametrize(
    ("body", "type_name"),
    [(b"[]", "list"), (b'"text"', "str"), (b"1", "int"), (b"1.5", "float"), (b"true", "bool"), (b"null", "NoneType")],
)
def test_body_must_be_an_object(client, body, type_name):
    todo = create(client)
    message = f"Invalid data. Expected a dictionary, but got {type_name}."
    headers = {"Content-Type": "application/json"}
    invalid(client.post("/todos", content=body, headers=headers), {"non_field_errors": [message]})
    invalid(client.patch(f"/todos/{todo['id']}", content=body, headers=headers), {"non_field_errors": [message]})


@pytest.mark.parametrize("body", [b"{bad", b'{"title": "x",}', b"", b'{"title": NaN}', b"Infinity", b"\xff\xfe"])
def test_malformed_json(client, body):
    response = client.post("/todos", content=body or b" ", headers={"Content-Type": "application/json"})
    assert_error(response, 400, "parse_error", "Malformed JSON request body.")


def test_json_content_type_variants(client):
    for content_type in ("application/json; charset=utf-8", "Application/JSON", "application/*"):
        response = client.post("/todos", content=b'{"title": "t"}', headers={"Content-Type": content_type})
        assert response.status_code == 201, content_type
    latin = client.post(
        "/todos",
        content='{"title": "café"}'.encode("latin-1"),
        headers={"Content-Type": "application/json; charset=latin-1"},
    )
    assert latin.json()["title"] == "café"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "text/json; charset=utf-8"]
)
def test_unsupported_media_type(client, content_type):
    todo = create(client)
    message = f'Unsupported media type "{content_type}" in request.'
    response = client.post("/todos", content=b'{"title": "t"}', headers={"Content-Type": content_type})
    assert_error(response, 415, "unsupported_media_type", message)
    response = client.put(f"/todos/{todo['id']}", content=b"title=t", headers={"Content-Type": content_type})
    assert_error(response, 415, "unsupported_media_type", message)


def test_body_without_content_type_is_unsupported(client):
    response = client.post("/todos", content=b'{"title": "t"}')
    assert_error(response, 415, "unsupported_media_type", 'Unsupported media type "" in request.')


def test_empty_body_is_an_empty_object_whatever_its_type(client):
    response = client.post("/todos", headers={"Content-Type": "text/plain"})
    invalid(response, {"title": ["This field is required."]})


# --- errors -------------------------------------------------------------------


def test_error_carries_the_request_id(client):
    response = client.get("/todos/999", headers={"X-Request-ID": "8a0c6c1e5b7d4f0e9f1a2b3c4d5e6f70"})
    assert_error(response, 404, "not_found", "Not found.", request_id="8a0c6c1e5b7d4f0e9f1a2b3c4d5e6f70")
    response = client.post("/todos", json=[], headers={"X-Request-ID": "abc"})
    assert response.json()["error"]["request_id"] == "abc"


def test_unhandled_error_is_a_json_500(client, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(resources, "paginate", explode)
    response = client.get("/todos", headers={"X-Request-ID": "r-500"})
    assert_error(response, 500, "server_error", "Internal server error.", request_id="r-500")


def test_any_other_bad_request_is_said_as_django_says_it(client, monkeypatch):
    from werkzeug.exceptions import BadRequest

    def refuse(*args, **kwargs):
        raise BadRequest()

    monkeypatch.setattr(resources, "paginate", refuse)
    assert_error(client.get("/todos"), 400, "bad_request", "Bad request.")


def test_body_over_the_limit_is_refused(make_client, app):
    app.config["MAX_CONTENT_LENGTH"] = 64
    response = make_client().post("/todos", json={"title": "x" * 100})
    assert response.status_code == 413
    assert response.json()["error"]["status"] == 413


# --- listing --------------------------------------------------------------------


@pytest.fixture
def many(client):
    return [create(client, f"todo {n:02d}", done=n % 3 == 0) for n in range(1, 26)]


def test_list_first_page(client, many):
    page = client.get("/todos").json()
    assert list(page) == ["count", "next", "previous", "results"]
    assert page["count"] == 25
    assert page["next"] == f"{BASE}/todos?page=2"
    assert page["previous"] is None
    assert page["results"] == many[:20]


def test_list_links_keep_sorted_params_and_drop_page_for_page_one(client, many):
    page2 = client.get("/todos?page_size=10&page=2&ordering=-id").json()
    assert page2["next"] == f"{BASE}/todos?ordering=-id&page=3&page_size=10"
    assert page2["previous"] == f"{BASE}/todos?ordering=-id&page_size=10"
    assert [todo["id"] for todo in page2["results"]] == [todo["id"] for todo in many[::-1][10:20]]
    page3 = client.get("/todos/?page=3&page_size=10").json()
    assert page3["next"] is None
    assert page3["previous"] == f"{BASE}/todos/?page=2&page_size=10"
    assert len(page3["results"]) == 5


def test_list_links_urlencode_params(client, many):
    page = client.get("/todos", params={"page_size": "5", "ordering": "title, -done", "x": "a b&c"}).json()
    assert page["next"] == f"{BASE}/todos?ordering=title%2C+-done&page=2&page_size=5&x=a+b%26c"


def test_page_past_the_end_is_404(client, many):
    assert_error(client.get("/todos?page=3"), 404, "not_found", "Not found.")
    assert_error(client.get("/todos?page=99999999999999999999"), 404, "not_found", "Not found.")


def test_empty_list_has_a_first_page_only(client):
    assert client.get("/todos?page=1").json()["count"] == 0
    assert_error(client.get("/todos?page=2"), 404, "not_found", "Not found.")


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("page=abc", {"page": ["A valid integer is required."]}),
        ("page=1.5", {"page": ["A valid integer is required."]}),
        ("page=0", {"page": ["Ensure this value is greater than or equal to 1."]}),
        ("page=-2", {"page": ["Ensure this value is greater than or equal to 1."]}),
        ("page_size=0", {"page_size": ["Ensure this value is greater than or equal to 1."]}),
        ("page_size=101", {"page_size": ["Ensure this value is less than or equal to 100."]}),
        ("page_size=ten", {"page_size": ["A valid integer is required."]}),
        ("page=" + "1" * 1001, {"page": ["String value too large."]}),
        ("done=yes", {"done": ["Must be one of: true, false, 1, 0."]}),
        ("ordering=owner", {"ordering": ['Unknown field "owner".']}),
        ("ordering=id,-nope", {"ordering": ['Unknown field "nope".']}),
        (
            "page_size=0&page=x&ordering=bad&done=2",
            {
                "done": ["Must be one of: true, false, 1, 0."],
                "ordering": ['Unknown field "bad".'],
                "page": ["A valid integer is required."],
                "page_size": ["Ensure this value is greater than or equal to 1."],
            },
        ),
    ],
)
def test_list_parameter_errors(client, query, fields):
    response = client.get(f"/todos?{query}")
    invalid(response, fields)
    assert list(response.json()["error"]["fields"]) == list(fields)


def test_list_parameters_follow_drf_parsing(client, many):
    assert client.get("/todos?page=2.0&page_size=10").json()["results"] == many[10:20]
    assert client.get("/todos?page=1&page=2&page_size=10").json()["results"] == many[10:20]
    empty = client.get("/todos?page=&page_size=&done=&ordering=").json()
    assert empty["results"] == many[:20]
    assert empty["next"] == f"{BASE}/todos?done=&ordering=&page=2&page_size="


@pytest.mark.parametrize(
    ("value", "done"),
    [("true", True), ("TRUE", True), ("1", True), ("false", False), ("False", False), ("0", False)],
)
def test_done_filter(client, many, value, done):
    page = client.get(f"/todos?done={value}&page_size=100").json()
    expected = [todo for todo in many if todo["done"] is done]
    assert page["count"] == len(expected)
    assert page["results"] == expected


def test_ordering(client):
    b1, a, b2 = (create(client, "b", done=True)["id"], create(client, "a")["id"], create(client, "b")["id"])

    def ids(ordering):
        return [todo["id"] for todo in client.get("/todos", params={"ordering": ordering}).json()["results"]]

    assert ids("title") == [a, b1, b2]
    assert ids("-title") == [b1, b2, a]
    assert ids("-done,-id") == [b1, b2, a]
    assert ids("-created_at") == [b2, a, b1]
    assert ids(" updated_at , title") == [b1, a, b2]


def test_listing_is_owner_scoped(make_client):
    create(make_client("alice"))
    create(make_client("bob"), "bob's")
    page = make_client("bob").get("/todos").json()
    assert page["count"] == 1
    assert page["results"][0]["owner"] == "bob"


# --- storage shared with Django -----------------------------------------------------


def test_reads_rows_written_by_django(client, db_path):
    with sqlite3.connect(db_path) as connection:
        connection.execute(
            "INSERT INTO todos (title, done, owner, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            ("from django", 1, "alice", "2026-11-22 07:33:14.123456", "2026-11-22 07:33:15"),
        )
    connection.close()
    todo = client.get("/todos").json()["results"][0]
    assert todo["created_at"] == "2026-11-22T07:33:14.123456Z"
    assert todo["updated_at"] == "2026-11-22T07:33:15Z"
    assert todo["done"] is True


def test_writes_rows_django_can_read(client, db_path):
    todo = create(client)
    with sqlite3.connect(db_path) as connection:
        row = connection.execute("SELECT created_at, done FROM todos WHERE id = ?", (todo["id"],)).fetchone()
    connection.close()
    created_at, done = row
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$", created_at)
    assert todo["created_at"] == created_at.replace(" ", "T") + "Z"
    assert done == 0


def test_create_app_reads_database_url(db_path, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db_path}")
    assert create_app().config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{db_path}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///db.sqlite3")
    assert create_app().config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{db_path}"


# Hosts and bodies the stack must refuse on its own as Django does (tests/backends/stack_cases.py)


@pytest.mark.parametrize("host", [h for _, h in stack_cases.BAD_HOSTS], ids=stack_cases.BAD_HOST_IDS)
@pytest.mark.parametrize("method, path", [("GET", "/todos"), ("POST", "/todos"), ("DELETE", "/todos/1"), ("GET", "/nope")])
def test_an_invalid_host_is_a_json_400(app, host, method, path):
    body = b'{"title": "t"}' if method == "POST" else b""
    status, headers, document = stack_cases.call_wsgi(app, method, path, host, body, script_name="/v1")
    assert (status, headers["content-type"]) == (400, "application/json")
    assert document == {"error": {"status": 400, "code": "bad_host", "message": "Invalid Host header.", "request_id": None}}


def test_allowed_hosts_when_set(db_path):
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{db_path}", "ALLOWED_HOSTS": ["api.example.com", ".example.org"]})
    with httpx.Client(transport=httpx.WSGITransport(app=as_gateway(app), script_name="/v1"), base_url="http://testserver") as client:
        for host, status in [("api.example.com", 200), ("example.org:8000", 200), ("a.example.org", 200), ("evil.example", 400), ("api.example.com.evil.example", 400)]:
            response = client.get("/", headers={"Host": host})
            assert response.status_code == status, host
            if status == 200:
                assert response.json() == {"todos": f"http://{host}/v1/todos"}
            else:
                assert_error(response, 400, "bad_host", "Invalid Host header.")
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("body", [b for _, b in stack_cases.UNPARSED_BODIES], ids=stack_cases.UNPARSED_IDS)
def test_too_deep_and_duplicate_keys_are_parse_errors(client, body):
    todo = create(client)
    headers = {"Content-Type": "application/json"}
    assert_error(client.post("/todos", content=body, headers=headers), 400, "parse_error", "Malformed JSON request body.")
    assert_error(client.patch(f"/todos/{todo['id']}", content=body, headers=headers), 400, "parse_error", "Malformed JSON request body.")
    assert client.get("/todos").json()["count"] == 1


def test_nesting_at_the_bound_parses(client):
    response = client.post("/todos", content=stack_cases.AT_THE_BOUND, headers={"Content-Type": "application/json"})
    invalid(response, {"title": ["Not a valid string."]})


@pytest.mark.parametrize("body, title", [(b, t) for _, b, t in stack_cases.PARSED_BODIES], ids=stack_cases.PARSED_IDS)
def test_brackets_in_strings_and_keys_in_other_case_parse(client, body, title):
    response = client.post("/todos", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    assert response.json()["title"] == title
