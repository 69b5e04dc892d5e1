"""The mirror compares like with like: JSON with JSON, and keeps diffs of a bounded size."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.shadow.compare import (
    CUT_MARKER,
    DIFF_MAX_BYTES,
    DIFF_MAX_LINES,
    Answer,
    capped,
    outcome,
)
from tests.users import USERS, consumers_toml

JSON = b"application/json"
HTML = b"text/html; charset=utf-8"


def result(served: Answer, other: Answer, ignore=frozenset()) -> tuple:
    return outcome(served, other, ignore, "a", "b")


@pytest.mark.parametrize(
    "served, other",
    [
        (Answer(200, HTML, b"<p>x</p>"), Answer(200, JSON, b'{"x": 1}')),
        (Answer(200, JSON, b'{"x": 1}'), Answer(200, HTML, b"<p>x</p>")),
        (Answer(200, b"text/plain", b"a"), Answer(200, b"text/plain", b"b")),
        (Answer(200, b"text/csv", b"a,b"), Answer(200, b"text/csv", b"a,b")),
        (Answer(200, JSON, b'{"x": 1}'), Answer(200, b"application/problem+json", b'{"x": 1}')),
        (Answer(404, b"", b"Not Found"), Answer(404, JSON, b'{"error": 1}')),
    ],
    ids=["html-json", "json-html", "text-text", "csv-same-bytes", "json-problem+json", "untyped-json"],
)
def test_pairs_that_are_not_both_json_of_one_type_are_not_comparable(served, other):
    assert result(served, other) == ("not_comparable",)


@pytest.mark.parametrize(
    "served, other, expected",
    [
        (Answer(200, b"application/json; charset=utf-8", b'{"x": 1}'), Answer(200, b"Application/JSON", b'{"x":1}'), "match"),
        (Answer(200, b"application/vnd.api+json", b"[1]"), Answer(200, b"application/vnd.api+json", b"[2]"), "mismatch"),
        (Answer(200, JSON, b""), Answer(200, b"", b""), "match"),  # HEAD
        (Answer(204, b"", b""), Answer(204, b"", b""), "match"),
        (Answer(200, JSON, b'{"x": 1}'), Answer(200, JSON, b'{"x": 2}'), "mismatch"),
    ],
)
def test_json_with_json_and_empty_with_empty_are_compared(served, other, expected):
    assert result(served, other)[0] == expected


def test_different_statuses_are_a_mismatch_even_when_the_bodies_are_not_comparable():
    served = Answer(500, HTML, b"<h1>csrfmiddlewaretoken secret</h1>")
    verdict, mismatch = result(served, Answer(200, JSON, b'{"x": 1}'))
    assert verdict == "mismatch" and mismatch.status == [500, 200]
    assert "status: 500" in mismatch.diff and "content-type: text/html" in mismatch.diff
    assert "secret" not in mismatch.diff and "csrf" not in mismatch.diff, "no body is kept"


def test_a_long_diff_is_cut_at_the_line_cap_and_marked():
    a = Answer(200, JSON, json.dumps([{"id": i, "owner": "a"} for i in range(3000)]).encode())
    b = Answer(200, JSON, json.dumps([{"id": i, "owner": "b"} for i in range(3000)]).encode())
    verdict, mismatch = result(a, b)
    assert verdict == "mismatch" and mismatch.truncated
    lines = mismatch.diff.split("\n")
    assert len(lines) == DIFF_MAX_LINES and lines[-1] == CUT_MARKER
    assert len(mismatch.diff.encode()) <= DIFF_MAX_BYTES


def test_a_wide_diff_is_cut_at_the_byte_cap_and_marked():
    a = Answer(200, JSON, json.dumps({"note": "é" * 40_000}).encode())
    b = Answer(200, JSON, json.dumps({"note": "e" * 40_000}).encode())
    verdict, mismatch = result(a, b)
    assert verdict == "mismatch" and mismatch.truncated
    assert DIFF_MAX_BYTES - 100 < len(mismatch.diff.encode()) <= DIFF_MAX_BYTES
    assert mismatch.diff.endswith(CUT_MARKER) and '-  "note": "éé' in mismatch.diff


def test_a_short_diff_is_kept_whole():
    verdict, mismatch = result(Answer(200, JSON, b'{"x": 1}'), Answer(200, JSON, b'{"x": 2}'))
    assert not mismatch.truncated and CUT_MARKER not in mismatch.diff
    assert mismatch.diff.splitlines()[-3:] == ['-  "x": 1', '+  "x": 2', " }"]


def test_capped_keeps_within_both_caps_at_every_size():
    for count in (0, 1, DIFF_MAX_LINES - 1, DIFF_MAX_LINES, DIFF_MAX_LINES + 1, 5000):
        for width in (0, 10, 200, DIFF_MAX_BYTES):
            lines = [f"{i:04d}" + "x" * width for i in range(count)]
            text, cut = capped(lines)
            assert len(text.encode()) <= DIFF_MAX_BYTES and len(text.split("\n")) <= DIFF_MAX_LINES, (count, width)
            whole = "\n".join(lines)
            assert cut == (text != whole)
            if cut:
                assert text.endswith("\n" + CUT_MARKER) or text == CUT_MARKER
                assert whole.startswith(text[: -len(CUT_MARKER) - 1])


CONFIG = """
[split]
mirror_process = {process}

[backends.html]
kind = "wsgi"
app = "tests.fixtures.mirror_apps:html"

[backends.json]
kind = "wsgi"
app = "tests.fixtures.mirror_apps:json_only"

[[routes]]
name = "v2"
prefix = "/v2"
split = {{ html = 50, json = 50 }}
mirror = true
auth = "required"
""" + consumers_toml()

ADMIN = USERS["admin"].headers()
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def mirror_stats(client, count: int) -> dict:
    for _ in range(1000):
        stats = (await client.get("/_stackgate/mirror", headers=ADMIN)).json().get("v2")
        if stats and sum(stats[k] for k in ("matches", "mismatches", "not_comparable", "errors", "skipped")) >= count:
            return stats
        await asyncio.sleep(0.02)
    raise AssertionError(f"no mirror result: {stats}")


@pytest.mark.parametrize("process", ["false", "true"], ids=["in-gateway", "shadow-process"])
async def test_a_browser_asking_for_html_is_counted_not_comparable_and_keeps_nothing(gateway_client, process):
    client = gateway_client(CONFIG.format(process=process))
    try:
        users = ["alice", "bob", "tester", "admin"]
        for name in users:  # both stacks serve some of them: the copies go both ways
            response = await client.get("/v2/todos", headers={**USERS[name].headers(), "Accept": BROWSER})
            assert response.status_code == 200
        stats = await mirror_stats(client, len(users))
        assert (stats["not_comparable"], stats["mismatches"], stats["matches"], stats["errors"]) == (len(users), 0, 0, 0)
        assert stats["recent_mismatches"] == [] and stats["match_rate"] is None

        for name in users:  # the same request asking for JSON is compared, and matches
            await client.get("/v2/todos", headers={**USERS[name].headers(), "Accept": "application/json"})
        stats = await mirror_stats(client, 2 * len(users))
        assert (stats["not_comparable"], stats["matches"], stats["mismatches"]) == (len(users), len(users), 0)

        metrics = (await client.get("/_stackgate/metrics")).text
        assert 'stackgate_mirror_results_total{result="not_comparable",route="v2"}' in metrics
        totals = (await client.get("/_stackgate/stats", headers=ADMIN)).json()["totals"]["mirror"]
        assert totals["not_comparable"] >= len(users)
    finally:
        shadow = client.gateway.services.shadow_process
        if shadow is not None:
            shadow.close()


async def test_a_500_page_against_json_is_a_mismatch_without_the_page(gateway_client):
    client = gateway_client(CONFIG.format(process="false"))
    for name in ("alice", "bob", "tester", "admin"):
        await client.get("/v2/gone", headers=USERS[name].headers())
    stats = await mirror_stats(client, 4)
    assert stats["mismatches"] == 4 and stats["not_comparable"] == 0
    for kept in stats["recent_mismatches"]:
        assert sorted(kept["status"]) == [200, 500] and "Server Error" not in kept["diff"]


@pytest.mark.parametrize("path", ["/v2/big", "/v2/long"])
async def test_stored_diffs_are_capped_and_marked(gateway_client, path):
    client = gateway_client(CONFIG.format(process="false"))
    await client.get(path, headers=USERS["alice"].headers())
    stats = await mirror_stats(client, 1)
    kept = stats["recent_mismatches"][0]
    assert kept["truncated"] is True and kept["diff"].endswith(CUT_MARKER)
    assert len(kept["diff"].encode()) <= DIFF_MAX_BYTES and len(kept["diff"].split("\n")) <= DIFF_MAX_LINES
