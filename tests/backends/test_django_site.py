"""The Django site through its WSGI application, mounted under ``/v2`` as the gateway does."""

from __future__ import annotations

import os
import re
import uuid

import httpx
import pytest

from tests.backends import stack_cases

PREFIX = "/v2"
ROOT = "http://testserver"
API = ROOT + PREFIX
FIELDS = ["id", "url", "title", "done", "owner", "created_at", "updated_at"]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")
USER_HEADER = "X-Test-Remote-User"


@pytest.fixture(scope="session")
def application(tmp_path_factory):
    """Django on a fresh SQLite file; the env only has to hold until settings are read."""
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('django') / 'db.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backends.django_site.settings")
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        from backends.django_site.wsgi import application
    finally:
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved
    return application


def with_remote_user(app):
    """Copy a test-only header into ``REMOTE_USER``, as the gateway's WSGI bridge sets it."""

    def wrapped(environ, start_response):
        user = environ.pop("HTTP_" + USER_HEADER.upper().replace("-", "_"), None)
        if user:
            environ["REMOTE_USER"] = user
        return app(environ, start_response)

    return wrapped


@pytest.fixture
def make_client(application):
    clients = []

    def make(user: str | None = None, script_name: str = PREFIX) -> httpx.Client:
        transport = httpx.WSGITransport(app=with_remote_user(application), script_name=script_name)
        headers = {USER_HEADER: user} if user else {}
        client = httpx.Client(transport=transport, base_url=ROOT, headers=headers)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def owner() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(make_client, owner) -> httpx.Client:
    return make_client(owner)


def create(client: httpx.Client, title: str = "Buy milk", **extra) -> dict:
    response = client.post("/todos", json={"title": title, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def error(response: httpx.Response, status: int, code: str, message: str, request_id=None, **fields) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    expected = {"status": status, "code": code, "message": message, "request_id": request_id}
    if fields:
        expected["fields"] = fields
    assert response.json() == {"error": expected}
    assert list(response.json()["error"]) == list(expected)


def invalid(response: httpx.Response, **fields) -> None:
    error(response, 400, "invalid", "Invalid input.", **fields)


# Resource and endpoints


def test_api_root_links_the_collection(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {"todos": f"{API}/todos"}


def test_create_returns_the_todo_with_its_location(client, owner):
    response = client.post("/todos", json={"title": "  Buy milk  ", "done": True})

    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    todo = response.json()
    assert list(todo) == FIELDS
    assert todo["url"] == f"{API}/todos/{todo['id']}"
    assert response.headers["location"] == todo["url"]
    assert (todo["title"], todo["done"], todo["owner"]) == ("Buy milk", True, owner)
    assert TIMESTAMP.fullmatch(todo["created_at"])
    assert todo["updated_at"] == todo["created_at"]


def test_create_defaults_done_and_ignores_read_only_and_unknown_keys(client, owner):
    todo = create(client, id=999999, owner="mallory", url="x", created_at="2000-01-01T00:00:00Z", colour="red")

    assert todo["id"] != 999999
    assert todo["owner"] == owner
    assert todo["done"] is False
    assert not todo["created_at"].startswith("2000")
    assert "colour" not in todo


def test_trailing_slash_is_optional_everywhere(client):
    todo = create(client)

    assert client.get("/todos").json() == client.get("/todos/").json()
    assert client.get(f"/todos/{todo['id']}").json() == todo
    assert client.get(f"/todos/{todo['id']}/").json() == todo
    assert client.get("/").json() == client.get("").json()
    assert client.post("/todos/", json={"title": "slash"}).status_code == 201


def test_url_carries_the_prefix_it_was_fetched_under(make_client, owner):
    todo = create(make_client(owner, script_name="/v1"))
    assert todo["url"] == f"{ROOT}/v1/todos/{todo['id']}"
    assert make_client(owner).get(f"/todos/{todo['id']}").json()["url"] == f"{API}/todos/{todo['id']}"


def test_put_replaces_title_and_keeps_done_when_absent(client):
    todo = create(client, done=True)

    response = client.put(f"/todos/{todo['id']}", json={"title": "Buy oat milk"})

    assert response.status_code == 200
    updated = response.json()
    assert (updated["title"], updated["done"]) == ("Buy oat milk", True)
    assert updated["created_at"] == todo["created_at"]
    assert updated["updated_at"] != todo["updated_at"]


def test_put_requires_title(client):
    todo = create(client)
    invalid(client.put(f"/todos/{todo['id']}", json={"done": True}), title=["This field is required."])


def test_patch_changes_any_subset(client):
    todo = create(client)

    done = client.patch(f"/todos/{todo['id']}", json={"done": True})
    assert done.status_code == 200
    assert (done.json()["title"], done.json()["done"]) == ("Buy milk", True)

    renamed = client.patch(f"/todos/{todo['id']}", json={"title": "Buy bread"})
    assert (renamed.json()["title"], renamed.json()["done"]) == ("Buy bread", True)

    assert client.patch(f"/todos/{todo['id']}", json={}).json()["title"] == "Buy bread"


def test_delete_answers_204_empty_then_the_todo_is_gone(client):
    todo = create(client)

    response = client.delete(f"/todos/{todo['id']}")

    assert response.status_code == 204
    assert response.content == b""
    error(client.get(f"/todos/{todo['id']}"), 404, "not_found", "Not found.")


def test_head_is_answered_like_get_without_a_body(client):
    todo = create(client)
    get = client.get(f"/todos/{todo['id']}")

    head = client.head(f"/todos/{todo['id']}")

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert client.head("/todos").status_code == 200


# Identity and ownership


def test_without_remote_user_the_owner_is_anonymous(make_client):
    assert create(make_client())["owner"] == "anonymous"


def test_no_request_header_sets_the_owner(make_client):
    response = make_client().post("/todos", json={"title": "x"}, headers={"Remote-User": "alice", "X-Remote-User": "alice"})
    assert response.json()["owner"] == "anonymous"


def test_other_owners_todos_do_not_exist(make_client, owner):
    alice, bob = make_client(owner), make_client(owner + "-bob")
    todo = create(alice)
    path = f"/todos/{todo['id']}"

    for response in (
        bob.get(path),
        bob.put(path, json={"title": "mine"}),
        bob.patch(path, json={"done": True}),
        bob.delete(path),
    ):
        error(response, 404, "not_found", "Not found.")
    assert bob.get("/todos").json()["count"] == 0
    assert alice.get(path).json() == todo


# Listing


def test_pagination_links(client):
    ids = [create(client, f"todo {n}")["id"] for n in range(5)]

    first = client.get("/todos", params={"page_size": 2}).json()
    assert first["count"] == 5
    assert [todo["id"] for todo in first["results"]] == ids[:2]
    assert first["next"] == f"{API}/todos?page=2&page_size=2"
    assert first["previous"] is None

    second = client.get(first["next"].removeprefix(API)).json()
    assert [todo["id"] for todo in second["results"]] == ids[2:4]
    assert second["next"] == f"{API}/todos?page=3&page_size=2"
    assert second["previous"] == f"{API}/todos?page_size=2"

    third = client.get(second["next"].removeprefix(API)).json()
    assert [todo["id"] for todo in third["results"]] == ids[4:]
    assert third["next"] is None
    assert third["previous"] == f"{API}/todos?page=2&page_size=2"


def test_pagination_links_keep_the_path_and_sort_and_encode_the_query(client):
    for n in range(3):
        create(client, f"todo {n}")

    page = client.get("/todos/?page_size=1&ordering=-title,id&done=FALSE&zz=a b&page=2").json()

    assert page["next"] == f"{API}/todos/?done=FALSE&ordering=-title%2Cid&page=3&page_size=1&zz=a+b"
    assert page["previous"] == f"{API}/todos/?done=FALSE&ordering=-title%2Cid&page_size=1&zz=a+b"


def test_default_page_size_is_20(client):
    for n in range(21):
        create(client, f"todo {n}")
    page = client.get("/todos").json()
    assert (page["count"], len(page["results"]), page["next"]) == (21, 20, f"{API}/todos?page=2")


def test_empty_list_first_page_is_200(client):
    assert client.get("/todos?page=1").json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_page_past_the_end_is_404(client):
    create(client)
    error(client.get("/todos?page=2", headers={"X-Request-ID": "r-1"}), 404, "not_found", "Not found.", "r-1")
    error(client.get("/todos?page=2&page_size=1"), 404, "not_found", "Not found.")


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("page=abc", {"page": ["A valid integer is required."]}),
        ("page=1.5", {"page": ["A valid integer is required."]}),
        ("page= ", {"page": ["A valid integer is required."]}),
        ("page=" + "9" * 1001, {"page": ["String value too large."]}),
        ("page=0", {"page": ["Ensure this value is greater than or equal to 1."]}),
        ("page=-3", {"page": ["Ensure this value is greater than or equal to 1."]}),
        ("page_size=x", {"page_size": ["A valid integer is required."]}),
        ("page_size=0", {"page_size": ["Ensure this value is greater than or equal to 1."]}),
        ("page_size=101", {"page_size": ["Ensure this value is less than or equal to 100."]}),
        ("done=yes", {"done": ["Must be one of: true, false, 1, 0."]}),
        ("done=%20", {"done": ["Must be one of: true, false, 1, 0."]}),
        ("done=true&done=maybe", {"done": ["Must be one of: true, false, 1, 0."]}),
        ("ordering=owner", {"ordering": ['Unknown field "owner".']}),
        ("ordering=-nope,id,zz", {"ordering": ['Unknown field "nope".']}),
        (
            "page_size=500&page=0&ordering=x&done=2",
            {
                "done": ["Must be one of: true, false, 1, 0."],
                "ordering": ['Unknown field "x".'],
                "page": ["Ensure this value is greater than or equal to 1."],
                "page_size": ["Ensure this value is less than or equal to 100."],
            },
        ),
    ],
)
def test_bad_query_parameters(client, query, fields):
    invalid(client.get(f"/todos?{query}"), **fields)


@pytest.mark.parametrize(
    "query", ["page_size=1", "page_size=100", "page=1.0", "page=", "done=", "ordering=", "ordering=%20,", "done=maybe&done=0"]
)
def test_accepted_query_parameters(client, query):
    """As DRF reads query params: bounds inclusive, ``1.0`` an integer, empty absent, last value wins."""
    assert client.get(f"/todos?{query}").status_code == 200


@pytest.mark.parametrize(("value", "done"), [("true", True), ("TRUE", True), ("1", True), ("false", False), ("False", False), ("0", False)])
def test_done_filter(client, value, done):
    create(client, "open")
    create(client, "closed", done=True)

    page = client.get("/todos", params={"done": value}).json()

    assert page["count"] == 1
    assert [todo["done"] for todo in page["results"]] == [done]


def test_ordering(client):
    b = create(client, "b")
    a1 = create(client, "a", done=True)
    c = create(client, "c")
    a2 = create(client, "a")

    def ids(ordering: str | None) -> list[int]:
        params = {"ordering": ordering} if ordering is not None else {}
        return [todo["id"] for todo in client.get("/todos", params=params).json()["results"]]

    assert ids(None) == [b["id"], a1["id"], c["id"], a2["id"]]
    assert ids("") == ids(None)
    assert ids("title") == [a1["id"], a2["id"], b["id"], c["id"]]
    assert ids("-title") == [c["id"], b["id"], a1["id"], a2["id"]]
    assert ids("-id") == [a2["id"], c["id"], a1["id"], b["id"]]
    assert ids("done,-title") == [c["id"], b["id"], a2["id"], a1["id"]]
    assert ids("-done") == [a1["id"], b["id"], c["id"], a2["id"]]
    assert ids("created_at") == ids("updated_at") == ids(None)


# Validation


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"title": ["This field is required."]}),
        ({"title": ""}, {"title": ["This field may not be blank."]}),
        ({"title": "   \t "}, {"title": ["This field may not be blank."]}),
        ({"title": "x" * 201}, {"title": ["Ensure this field has no more than 200 characters."]}),
        ({"title": None}, {"title": ["This field may not be null."]}),
        ({"title": 5}, {"title": ["Not a valid string."]}),
        ({"title": 1.5}, {"title": ["Not a valid string."]}),
        ({"title": True}, {"title": ["Not a valid string."]}),
        ({"title": {"a": 1}}, {"title": ["Not a valid string."]}),
        ({"title": ["a"]}, {"title": ["Not a valid string."]}),
        ({"title": "ok", "done": "true"}, {"done": ["Must be a valid boolean."]}),
        ({"title": "ok", "done": 1}, {"done": ["Must be a valid boolean."]}),
        ({"title": "ok", "done": 0}, {"done": ["Must be a valid boolean."]}),
        ({"title": "ok", "done": None}, {"done": ["This field may not be null."]}),
        ({"title": "ok", "done": [True]}, {"done": ["Must be a valid boolean."]}),
        ({"title": "x\u0000" + "x" * 200}, {"title": ["Ensure this field has no more than 200 characters.", "Null characters are not allowed."]}),
        ({"title": 7, "done": "no"}, {"title": ["Not a valid string."], "done": ["Must be a valid boolean."]}),
    ],
)
def test_field_messages(client, body, fields):
    invalid(client.post("/todos", json=body), **fields)


def test_title_of_200_characters_after_trimming_is_fine(client):
    assert create(client, "  " + "x" * 200 + "  ")["title"] == "x" * 200


def test_patch_validates_what_it_is_given(client):
    todo = create(client)
    invalid(client.patch(f"/todos/{todo['id']}", json={"title": "  "}), title=["This field may not be blank."])
    invalid(client.patch(f"/todos/{todo['id']}", json={"done": "yes"}), done=["Must be a valid boolean."])


@pytest.mark.parametrize(
    ("raw", "type_name"),
    [(b"[]", "list"), (b'"x"', "str"), (b"3", "int"), (b"1.5", "float"), (b"true", "bool"), (b"null", "NoneType")],
)
def test_body_that_is_not_an_object(client, raw, type_name):
    todo = create(client)
    for response in (
        client.post("/todos", content=raw, headers={"Content-Type": "application/json"}),
        client.put(f"/todos/{todo['id']}", content=raw, headers={"Content-Type": "application/json"}),
        client.patch(f"/todos/{todo['id']}", content=raw, headers={"Content-Type": "application/json"}),
    ):
        invalid(response, non_field_errors=[f"Invalid data. Expected a dictionary, but got {type_name}."])


# Errors


def test_malformed_json_is_a_parse_error(client):
    response = client.post("/todos", content=b'{"title": ', headers={"Content-Type": "application/json"})
    error(response, 400, "parse_error", "Malformed JSON request body.")


def test_other_content_types_are_415(client):
    response = client.post("/todos", content=b"title=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    error(response, 415, "unsupported_media_type", 'Unsupported media type "application/x-www-form-urlencoded" in request.')


def test_error_carries_the_request_id(client):
    error(
        client.get("/todos/0", headers={"X-Request-ID": "8a0c6c1e5b7d4f0e"}),
        404,
        "not_found",
        "Not found.",
        "8a0c6c1e5b7d4f0e",
    )
    response = client.post("/todos", json={}, headers={"X-Request-ID": "abc"})
    error(response, 400, "invalid", "Invalid input.", "abc", title=["This field is required."])


@pytest.mark.parametrize("path", ["/nope", "/todos/abc", "/todos/0", "/todos/-1", "/todos/1.5", "/todos/99999999999999999999999", "/todos.json", "/todos//"])
def test_unknown_paths_and_ids_are_404(client, path):
    error(client.get(path, headers={"X-Request-ID": "rid"}), 404, "not_found", "Not found.", "rid")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/todos", "GET, POST, HEAD"),
        ("PUT", "/todos/", "GET, POST, HEAD"),
        ("OPTIONS", "/todos", "GET, POST, HEAD"),
        ("POST", "/todos/{id}", "GET, PUT, PATCH, DELETE, HEAD"),
        ("OPTIONS", "/todos/{id}/", "GET, PUT, PATCH, DELETE, HEAD"),
        ("TRACE", "/todos/{id}", "GET, PUT, PATCH, DELETE, HEAD"),
        ("POST", "/", "GET, HEAD"),
    ],
)
def test_other_methods_are_405_with_allow(client, method, path, allow):
    todo = create(client)
    response = client.request(method, path.format(id=todo["id"]))
    error(response, 405, "method_not_allowed", f'Method "{method}" not allowed.')
    assert response.headers["allow"] == allow


def test_unhandled_errors_are_json_500(client, monkeypatch):
    from backends.django_site.todos.views import TodoViewSet

    def explode(self, request, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(TodoViewSet, "retrieve", explode)
    response = client.get("/todos/1", headers={"X-Request-ID": "r-500"})
    error(response, 500, "server_error", "Internal server error.", "r-500")


# Negotiation, browsable API and admin


def test_browsable_api_for_html_clients(client):
    create(client)
    response = client.get("/todos/", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'href="/static/rest_framework/' in response.text
    assert "Buy milk" in response.text


def test_unacceptable_accept_falls_back_to_json(client):
    response = client.get("/todos", headers={"Accept": "application/xml"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"


def test_admin_login_page_renders(make_client):
    response = make_client(script_name="/admin").get("/login/")
    assert response.status_code == 200
    assert "csrfmiddlewaretoken" in response.text
    assert 'href="/static/admin/' in response.text
    assert 'action="/admin/login/"' in response.text


def test_admin_session_login_works_at_its_mount(make_client, owner):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser(owner, password="correct horse battery")
    admin = make_client(script_name="/admin")
    login = admin.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)

    response = admin.post(
        "/login/?next=/admin/",
        data={"csrfmiddlewaretoken": token, "username": owner, "password": "correct horse battery", "next": "/admin/"},
    )

    assert response.status_code == 302
    assert response.headers["location"] == "/admin/"
    assert admin.get("/todos/todo/").status_code == 200


@pytest.mark.parametrize("script_name", ["/v2", "", "/v1"])
def test_the_admin_is_not_served_under_any_other_mount(make_client, script_name):
    """Only the admin's own mount serves it: /v2/admin/ (under /v2's policy) is the API's JSON 404."""
    for path in ("/admin/", "/admin/login/", "/login/"):
        response = make_client(script_name=script_name).get(path)
        assert response.status_code == 404, (script_name, path)
        assert response.json()["error"]["code"] == "not_found"


def test_a_write_is_not_blocked_by_a_reader_of_the_embedded_database(client):
    """WAL mode: a reader in the middle of a transaction (a slow or starved shadow copy) holds no lock a write waits for."""
    import sqlite3

    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
    reader = sqlite3.connect(settings.DATABASES["default"]["NAME"], isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM todos").fetchone()  # a read transaction left open
        r = client.post("/todos", json={"title": "written beside a reader"})
        assert r.status_code == 201, r.text
    finally:
        reader.execute("ROLLBACK")
        reader.close()


# Database connections


def test_a_thread_keeps_its_database_connection_between_requests(client):
    """Persistent connections (``CONN_MAX_AGE``): Django's default opened one per request."""
    from django.db import connection

    assert client.get("/todos").status_code == 200
    first = connection.connection
    assert first is not None, "the connection was closed at the end of the request"
    assert client.get("/todos").status_code == 200
    assert connection.connection is first


def test_a_bad_conn_max_age_is_refused_with_the_right_form():
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_CONN_MAX_AGE": "soon", "DJANGO_SETTINGS_MODULE": "backends.django_site.settings"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert 'DJANGO_CONN_MAX_AGE="soon" must be a whole number of seconds, such as "600"' in result.stderr


# Hosts and bodies (tests/backends/stack_cases.py): the same answers as the Flask stack's


@pytest.mark.parametrize("host", [h for _, h in stack_cases.BAD_HOSTS], ids=stack_cases.BAD_HOST_IDS)
@pytest.mark.parametrize("method, path", [("GET", "/todos"), ("POST", "/todos"), ("DELETE", "/todos/1"), ("GET", "/nope")])
def test_disallowed_host_is_a_json_400(application, host, method, path):
    body = b'{"title": "t"}' if method == "POST" else b""
    status, headers, document = stack_cases.call_wsgi(application, method, path, host, body, script_name=PREFIX)
    assert (status, headers["content-type"]) == (400, "application/json")
    assert document == {"error": {"status": 400, "code": "bad_host", "message": "Invalid Host header.", "request_id": None}}


def test_allowed_hosts_when_set(application):
    from django.test import override_settings

    with override_settings(ALLOWED_HOSTS=["api.example.com", ".example.org"]):
        for host, status in [("api.example.com", 200), ("example.org:8000", 200), ("a.example.org", 200), ("evil.example", 400), ("api.example.com.evil.example", 400)]:
            got, _, document = stack_cases.call_wsgi(application, "GET", "/", host.encode(), script_name=PREFIX)
            assert got == status, host
            if status == 200:
                assert document == {"todos": f"http://{host}{PREFIX}/todos"}
            else:
                assert document["error"]["code"] == "bad_host"


def test_other_suspicious_operations_are_a_json_400(application):
    from django.test import override_settings

    with override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=2):  # TooManyFieldsSent
        status, headers, document = stack_cases.call_wsgi(application, "GET", "/todos", b"testserver", script_name=PREFIX, query="a=1&b=2&c=3")
    assert (status, headers["content-type"]) == (400, "application/json")
    assert document == {"error": {"status": 400, "code": "bad_request", "message": "Bad request.", "request_id": None}}


@pytest.mark.parametrize("body", [b for _, b in stack_cases.UNPARSED_BODIES], ids=stack_cases.UNPARSED_IDS)
def test_too_deep_and_duplicate_keys_are_parse_errors(client, body):
    todo = create(client)
    headers = {"Content-Type": "application/json"}
    error(client.post("/todos", content=body, headers=headers), 400, "parse_error", "Malformed JSON request body.")
    error(client.patch(f"/todos/{todo['id']}", content=body, headers=headers), 400, "parse_error", "Malformed JSON request body.")
    assert client.get("/todos").json()["count"] == 1


def test_nesting_at_the_bound_parses(client):
    response = client.post("/todos", content=stack_cases.AT_THE_BOUND, headers={"Content-Type": "application/json"})
    invalid(response, title=["Not a valid string."])


@pytest.mark.parametrize("body, title", [(b, t) for _, b, t in stack_cases.PARSED_BODIES], ids=stack_cases.PARSED_IDS)
def test_brackets_in_strings_and_keys_in_other_case_parse(client, body, title):
    response = client.post("/todos", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    assert response.json()["title"] == title
