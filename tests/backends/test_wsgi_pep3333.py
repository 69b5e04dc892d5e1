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

import pytest

from tests.fixtures import pep3333_apps
from tests.fixtures.pep3333_apps import READS

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
