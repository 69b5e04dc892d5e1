"""The one canonical reading of a path: table-driven, with readable ids."""

import pytest

from gateway.paths import BadPath, canonical_path, encode_path, valid_method

GOOD = [
    ("plain", b"/v1/todos", "/v1/todos"),
    ("root", b"/", "/"),
    ("trailing slash kept", b"/v1/todos/", "/v1/todos/"),
    ("escaped space", b"/a%20b", "/a b"),
    ("escaped letter", b"/a/%41", "/a/A"),
    ("utf8 escaped", b"/caf%C3%A9", "/caf\u00e9"),
    ("utf8 raw", "/caf\u00e9".encode(), "/caf\u00e9"),
    ("case kept", b"/V1/Todos", "/V1/Todos"),
    ("dots inside a segment", b"/a/..b/c.", "/a/..b/c."),
]

BAD = [
    ("encoded slash", b"/v1/todos%2F1", "encoded '/'"),
    ("encoded slash lower", b"/v1/todos%2f1", "encoded '/'"),
    ("encoded backslash", b"/v1/a%5Cb", "encoded '\\'"),
    ("raw backslash", b"/v1/a\\b", "'\\'"),
    ("dot-dot", b"/v1/../v2/todos", "dot segments"),
    ("encoded dot-dot", b"/v1/%2e%2e/v2/todos", "dot segments"),
    ("mixed encoded dot-dot", b"/v1/.%2E/v2", "dot segments"),
    ("dot", b"/v1/./todos", "dot segments"),
    ("trailing dot-dot", b"/v1/..", "dot segments"),
    ("double slash", b"/v1//todos", "empty segments"),
    ("leading double slash", b"//v1/todos", "empty segments"),
    ("semicolon", b"/v1/todos;x=1", "';'"),
    ("encoded semicolon", b"/v1/todos%3Bx", "encoded ';'"),
    ("encoded hash", b"/v1/todos%23x", "encoded '#'"),
    ("encoded question", b"/v1/todos%3Fx", "encoded '?'"),
    ("encoded percent", b"/v1/%252e%252e", "encoded '%'"),
    ("encoded NUL", b"/v1/a%00", "NUL"),
    ("raw NUL", b"/v1/a\x00", "NUL"),
    ("encoded newline", b"/v1/todos%0A", "control character 0x0A"),
    ("raw tab", b"/v1/a\tb", "control character 0x09"),
    ("DEL", b"/v1/a%7F", "control character 0x7F"),
    ("C1 control", b"/v1/a%C2%85", "control characters"),
    ("overlong slash", b"/v1/%C0%AF", "not valid UTF-8"),
    ("invalid utf8", b"/v1/%FF", "not valid UTF-8"),
    ("surrogate", b"/v1/%ED%A0%80", "not valid UTF-8"),
    ("short escape", b"/v1/a%4", "Malformed percent-escape"),
    ("bad escape", b"/v1/a%zz", "Malformed percent-escape"),
    ("asterisk form", b"*", "origin form"),
    ("absolute form", b"http://evil/v1", "origin form"),
    ("empty", b"", "origin form"),
]


@pytest.mark.parametrize("raw, expected", [(r, e) for _, r, e in GOOD], ids=[i for i, _, _ in GOOD])
def test_canonical(raw, expected):
    assert canonical_path(raw) == expected
    assert canonical_path(encode_path(expected)) == expected


@pytest.mark.parametrize("raw, message", [(r, m) for _, r, m in BAD], ids=[i for i, _, _ in BAD])
def test_refused(raw, message):
    with pytest.raises(BadPath) as info:
        canonical_path(raw)
    assert message in str(info.value)


@pytest.mark.parametrize("method, ok", [("GET", True), ("PROPFIND", True), ("get", False), ("G ET", False), ("", False), ("GET\r", False)])
def test_method(method, ok):
    assert valid_method(method) is ok


def _outcome(fn, *args):
    try:
        return fn(*args)
    except BadPath as exc:
        return ("refused", str(exc))


def test_the_fast_path_reads_every_path_as_the_general_one_does():
    import random
    from urllib.parse import quote

    from gateway.paths import _SAFE, _decode

    rng = random.Random(7)
    alphabet = [b"/", b"a", b"Z", b"9", b".", b"-", b"_", b"~", b"%2F", b"%41", b"%", b"//", b"/.", b"/..", b";", b"\\", b" ", b"\xc3\xa9", b"$", b"'"]
    for _ in range(20000):
        raw = b"/" + b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        assert _outcome(canonical_path, raw) == _outcome(_decode, raw), raw
        path = _outcome(canonical_path, raw)
        if isinstance(path, str):
            assert encode_path(path) == quote(path, safe=_SAFE).encode("ascii"), path
