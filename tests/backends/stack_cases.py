"""Cases both stacks must answer alike on their own (without the gateway in front): hosts and JSON bodies."""

from __future__ import annotations

from backends.json_body import MAX_DEPTH

#: Hosts Django's ``get_host()`` refuses (``DisallowedHost``): each stack answers 400 ``bad_host``.
BAD_HOSTS = [
    ("userinfo after a port", b"127.0.0.1:1@evil.example"),
    ("userinfo", b"user@evil.example"),
    ("path", b"127.0.0.1:80/evil.example"),
    ("query", b"evil.example?x"),
    ("fragment", b"evil.example#x"),
    ("space", b"evil example"),
    ("comma", b"a.example,evil.example"),
    ("port name", b"x:port"),
    ("bracketed name", b"[evil.example]"),
    ("unclosed bracket", b"[::1"),
    ("non-ASCII", "b\u00fccher.example".encode()),
    ("underscore", b"a_b.example"),
    ("empty port", b"example.com:"),
]
BAD_HOST_IDS = [name for name, _ in BAD_HOSTS]


def nested(depth: int) -> bytes:
    """``{"title": [[...]]}``: ``depth`` arrays and objects, the outer object included."""
    return b'{"title": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


#: Bodies that do not parse (400 ``parse_error``).
UNPARSED_BODIES = [
    ("one level too deep", nested(MAX_DEPTH + 1)),
    ("100,000 deep", nested(100_000)),
    ("100,000 deep and unclosed", b'{"title": ' + b"[" * 100_000),
    ("100,000 objects deep", b'{"title": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}"),
    ("duplicate key", b'{"title": "a", "title": "b"}'),
    ("duplicate key, same value", b'{"title": "a", "title": "a"}'),
    ("duplicate key inside", b'{"title": "a", "x": {"k": 1, "k": 2}}'),
    ("duplicate key in a list", b'{"title": "a", "x": [{"k": 1, "k": 2}]}'),
]
UNPARSED_IDS = [name for name, _ in UNPARSED_BODIES]

#: At the bound: parsed, then refused by validation (``title`` must be a string).
AT_THE_BOUND = nested(MAX_DEPTH)
#: Brackets inside strings are text, and keys differing in case are two keys: created.
PARSED_BODIES = [
    ("brackets in a string", b'{"title": "' + b"[{" * 90 + b'"}', "[{" * 90),
    ("keys differing in case", b'{"title": "a", "Title": "b"}', "a"),
    ("escaped quote before brackets", b'{"title": "\\"[[[[", "x": "' + b"[" * 100 + b'"}', '"[[[['),
]
PARSED_IDS = [name for name, _, _ in PARSED_BODIES]


def call_wsgi(app, method: str, path: str, host: bytes, body: bytes = b"", script_name: str = "", user: str = "alice", query: str = ""):
    """One request straight into a WSGI app, with ``host`` as raw bytes (httpx's transport takes ASCII only).

    Returns ``(status, headers, body)``."""
    import io
    import json

    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": host.decode("latin-1"),  # PEP 3333: header bytes as latin-1 characters
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_USER": user,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if body:
        environ["CONTENT_TYPE"] = "application/json"
        environ["CONTENT_LENGTH"] = str(len(body))
    started = {}

    def start_response(status, headers, exc_info=None):
        started["status"] = int(status.split()[0])
        started["headers"] = {name.lower(): value for name, value in headers}

    chunks = app(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    return started["status"], started["headers"], json.loads(data) if data else None
