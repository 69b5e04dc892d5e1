"""The WSGI bridge against PEP 3333, with ``wsgiref.validate`` around every app.

A body up to ``buffer_size`` reaches the app as an ``io.BytesIO``; a larger one
streams (``gateway.backends.wsgi._StreamingInput``). Every way of reading it must
give the same bytes either way: each test compares the app's reads call by call
with the same reads of an ``io.BytesIO`` over the body, for bodies just under, at
and over ``buffer_size``, delivered in messages of uneven sizes.
"""

from __future__ import annotations

import io
import itertools
import logging

import pytest

from gateway import logs
from gateway.backends.wsgi import SECOND_START_RESPONSE
from tests.backends.test_django_site import application  # noqa: F401  (Django on a fresh SQLite file)
from tests.fixtures import pep3333_apps
from tests.fixtures.pep3333_apps import READS
from tests.test_adversarial import call

BUFFER = 1024

CONFIG = f"""
[auth]
default = "none"

[backends.reader]
kind = "wsgi"
app = "tests.fixtures.pep3333_apps:reader"
buffer_size = {BUFFER}

[backends.echo]
kind = "wsgi"
app = "tests.fixtures.pep3333_apps:echo"

[backends.late]
kind = "wsgi"
app = "tests.fixtures.pep3333_apps:late_error"
buffer_size = {BUFFER}

[backends.early]
kind = "wsgi"
app = "tests.fixtures.pep3333_apps:early_error"

[backends.twice]
kind = "wsgi"
app = "tests.fixtures.pep3333_apps:twice"

[[routes]]
prefix = "/read"
backend = "reader"

[[routes]]
prefix = "/echo"
backend = "echo"

[[routes]]
prefix = "/late"
backend = "late"

[[routes]]
prefix = "/early"
backend = "early"

[[routes]]
prefix = "/twice"
backend = "twice"
"""

SIZES = {"under": BUFFER - 1, "at": BUFFER, "over": BUFFER + 1, "4x": 4 * BUFFER + 3}
MESSAGES = (1, 7, 300, 64, 1000, 13)  # the sizes of the client's messages, in turn


@pytest.fixture
def client(gateway_client):
    pep3333_apps.START_RESPONSE.clear()
    return gateway_client(CONFIG)


def make_body(size: int, final_newline: bool) -> bytes:
    """Lines of 0 to 89 bytes, some ending in ``\\r\\n`` (a ``\\r`` is no line end), cut to ``size``."""
    lines = (b"%d:" % i + b"abc\r"[: i % 5] + b"y" * (i * 37 % 85) + b"\n" for i in itertools.count())
    body = bytearray()
    for line in lines:
        body += line
        if len(body) >= size:
            break
    del body[size:]
    body[-1:] = b"\n" if final_newline else b"z"
    return bytes(body)


async def delivered(body: bytes):
    """The body in messages of uneven sizes (with a Content-Length, the bridge may stream it)."""
    view = memoryview(body)
    for size in itertools.cycle(MESSAGES):
        if not view:
            return
        yield bytes(view[:size])
        view = view[size:]


def flatten(results) -> bytes:
    return b"".join(r if isinstance(r, bytes) else flatten(r) for r in results)


def latin1(results):
    return results.encode("latin1") if isinstance(results, str) else [latin1(r) for r in results]


@pytest.mark.parametrize("final_newline", [False, True], ids=["no-final-newline", "final-newline"])
@pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))
@pytest.mark.parametrize("read", list(READS))
async def test_every_read_gives_the_bytes_io_would_at_every_body_size(client, read, size, final_newline, caplog):
    body = make_body(size, final_newline)
    response = await client.post(
        "/read/x", params={"read": read}, content=delivered(body), headers={"content-length": str(size)}
    )
    assert response.status_code == 200, caplog.text or response.text
    got = latin1(response.json())
    assert got == READS[read](io.BytesIO(body), size)
    assert flatten(got) == body, "a byte lost or added"


async def test_the_issues_cases_on_a_streamed_body(client):
    body = b"first line\nsecond line\nno newline at the end".ljust(BUFFER + 1, b".")

    async def reads(read: str) -> list:
        response = await client.post(
            "/read/x", params={"read": read}, content=delivered(body), headers={"content-length": str(len(body))}
        )
        assert response.status_code == 200, response.text
        return latin1(response.json())

    assert (await reads("readline(100)"))[0] == b"first line\n", "readline(n) on a fresh streamed body is not the end"
    assert (await reads("readlines()"))[0][-1].endswith(b"."), "no newline added to the last line"
    assert (await reads("read(CONTENT_LENGTH)"))[1:] == [[], b"", b"", []], "reads after the whole body are empty"


@pytest.mark.parametrize("size", [10, 4 * BUFFER], ids=["buffered", "streamed"])
async def test_exc_info_after_body_bytes_is_re_raised(client, size, caplog):
    """PEP 3333: once a body byte was produced the head counts as sent, so start_response re-raises."""
    if size > BUFFER:
        with pytest.raises(logs.Logged):  # the status went out: the body is cut, the connection closed
            await client.get("/late/x", params={"size": size})
    else:
        response = await client.get("/late/x", params={"size": size})
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "backend_error"
        assert "error page" not in response.text
    assert pep3333_apps.START_RESPONSE == ["re-raised"]
    assert "failed after the first bytes" in caplog.text


async def test_exc_info_before_any_body_byte_replaces_the_head(client):
    response = await client.get("/early/x")
    assert (response.status_code, response.headers["retry-after"], response.text) == (503, "7", "error page")
    assert pep3333_apps.START_RESPONSE == ["replaced"]


@pytest.mark.parametrize("swallow", [False, True], ids=["raised", "swallowed"])
async def test_a_second_start_response_without_exc_info_is_a_logged_502(client, swallow, caplog):
    caplog.set_level(logging.ERROR)
    response = await client.get("/twice/x", params={"swallow": "1"} if swallow else {})
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "backend_error"
    assert "second head" not in response.text and "Traceback" not in response.text
    assert pep3333_apps.START_RESPONSE == [f"RuntimeError: {SECOND_START_RESPONSE}"]
    assert SECOND_START_RESPONSE in caplog.text, "logged, with the reason"


async def test_repeated_cookie_headers_are_joined_with_semicolons(client):
    response = await client.get("/echo/x", headers=[("cookie", "a=1"), ("cookie", "b=2; c=3")])
    assert response.json()["cookie"] == "a=1; b=2; c=3"


async def test_a_non_ascii_query_string_reaches_the_app_as_latin1(client):
    answer = await call(client.gateway, b"/echo/x", query=b"q=caf\xc3\xa9&r=\xff")
    assert answer.status == 200, answer.body
    assert answer.json()["query"] == "q=caf\xc3\xa9&r=\xff", "PEP 3333: bytes as latin-1, not decoded"


DJANGO_ADMIN = """
[auth]
default = "none"

[backends.django]
kind = "wsgi"
app = "backends.django_site.wsgi:application"

[[routes]]
prefix = "/admin"
backend = "django"
"""


async def test_django_reads_every_cookie_of_repeated_cookie_headers(gateway_client, application):
    """The demo Django stack's CSRF check finds its cookie though it came in a second Cookie header."""
    client = gateway_client(DJANGO_ADMIN)
    token = "k" * 32  # a CSRF secret: the form may carry it as is
    response = await client.post(
        "http://localhost/admin/login/",
        data={"csrfmiddlewaretoken": token, "username": "nobody", "password": "wrong"},
        headers=[("cookie", "theme=dark"), ("cookie", f"csrftoken={token}")],
    )
    assert response.status_code == 200, response.text[:2000]  # 403 "CSRF cookie not set" if joined with ","
    assert 'name="username"' in response.text, "the login form again, refused for its credentials only"
