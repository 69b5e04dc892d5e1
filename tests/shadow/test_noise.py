"""The comparison's parts without a server: field paths, the noise rule, endpoint names, quantiles."""

from __future__ import annotations

import json

import pytest

from gateway.shadow.compare import (
    FIELDS_MAX,
    OTHER_FIELDS,
    STATUS_FIELD,
    Answer,
    Check,
    field_differences,
    outcome,
    self_fields,
)
from gateway.shadow.endpoints import ENDPOINTS_MAX, OTHER_ENDPOINT, Endpoints, _django_template, fold_path
from gateway.shadow.noise import CHECKS_TO_SETTLE, WINDOW, NoiseModel, Significant, is_noise
from gateway.shadow.report import quantile

JSON = b"application/json"


def answer(data, status=200) -> Answer:
    return Answer(status, JSON, json.dumps(data).encode())


@pytest.mark.parametrize(
    "a, b, paths",
    [
        ({"x": 1, "y": 2}, {"x": 1, "y": 3}, {"y"}),
        ({"results": [{"id": 1, "at": "t1"}, {"id": 2, "at": "t2"}]}, {"results": [{"id": 1, "at": "u1"}, {"id": 2, "at": "u2"}]}, {"results[].at"}),
        ({"a": {"b": [[1, 2]]}}, {"a": {"b": [[1, 3]]}}, {"a.b[][]"}),
        ({"x": 1}, {"x": 1, "extra": True}, {"extra"}),
        ({"items": [1, 2]}, {"items": [1, 2, 3]}, {"items"}),
        ({"x": 1}, {"x": 1.5}, {"x"}),
        ({"x": 1}, {"x": True}, {"x"}),
        ({"by_id": {"42": {"n": 1}}}, {"by_id": {"42": {"n": 2}}}, {"by_id.{id}.n"}),
        ([1], [2], {"[]"}),
        (1, 2, {"(root)"}),
    ],
    ids=["key", "list-folded", "nested-lists", "missing-key", "list-length", "number", "bool-vs-int", "id-keys", "root-list", "root"],
)
def test_field_differences_name_each_path_with_list_indices_folded(a, b, paths):
    assert set(field_differences(a, b)) == paths


def test_field_differences_keep_the_first_values_and_are_bounded():
    found = field_differences({"x": "a" * 500, "y": 1}, {"x": "b", "y": None})
    assert found["y"] == ("1", "null") and len(found["x"][0]) <= 120 and found["x"][0].endswith("…")
    many = field_differences({f"k{i}": 1 for i in range(100)}, {f"k{i}": 2 for i in range(100)})
    assert len(many) == FIELDS_MAX + 1 and OTHER_FIELDS in many


def test_a_mismatch_names_its_fields_and_the_status():
    kind, mismatch = outcome(answer({"t": 1, "x": 1}, 200), answer({"t": 2, "x": 1}, 404), frozenset(), "a", "b")
    assert kind == "mismatch" and set(mismatch.fields) == {"t", STATUS_FIELD}
    kind, mismatch = outcome(answer({"t": 1, "x": 1}), answer({"t": 2, "x": 2}), frozenset({"t"}), "a", "b")
    assert set(mismatch.fields) == {"x"}, "mirror_ignore keys are not fields"


def test_self_fields_compare_two_answers_of_one_stack():
    assert self_fields(answer({"t": 1}), answer({"t": 2}), frozenset()) == {"t": ("1", "2")}
    assert self_fields(answer({"t": 1}), answer({"t": 1}), frozenset()) == {}
    assert self_fields(answer({"t": 1}), None, frozenset()) is None
    assert self_fields(answer({"t": 1}), Answer(200, b"text/html", b"<p>"), frozenset()) is None


def test_a_check_is_wanted_for_unsettled_fields_only_unless_forced():
    mismatch = outcome(answer({"t": 1}), answer({"t": 2}), frozenset(), "a", "b")
    assert Check(frozenset()).wanted(mismatch)
    assert not Check(frozenset({"t"})).wanted(mismatch)
    assert not Check(frozenset()).wanted(("match",))
    assert Check(None).wanted(("match",))
    assert not Check(None).wanted(("not_comparable",)) and not Check(None).wanted(("skipped",))


def test_significant_matches_key_names_at_any_depth_and_full_paths():
    significant = Significant(["title", "results[].owner"])
    assert "title" in significant and "results[].title" in significant and "a.b.title" in significant
    assert "results[].owner" in significant and "owner" not in significant
    assert STATUS_FIELD in significant and "stamp" not in significant


def test_noise_needs_second_answers_that_differ_on_every_stack_and_is_never_significant():
    backends = ["django", "flask"]
    none = Significant([])
    assert is_noise({"django": 3, "flask": 1}, {"django": 3, "flask": 2}, backends, "stamp", none)
    assert not is_noise({"django": 3}, {"django": 3, "flask": 5}, backends, "stamp", none), "one stack only: a real difference"
    assert not is_noise({"django": 1, "flask": 1}, {"django": 10, "flask": 10}, backends, "count", none), "rarely: a race, not noise"
    assert not is_noise({"django": 3, "flask": 1}, {"django": 3, "flask": 1}, backends, "stamp", Significant(["stamp"]))
    assert not is_noise({"django": 3, "flask": 1}, {"django": 3, "flask": 1}, backends, STATUS_FIELD, none)


def test_the_model_learns_noise_and_settles_real_fields():
    model = NoiseModel("r", ["a", "b"])
    question = {"stamp": ("1", "2"), "title": ("x", "y")}
    assert model.needs_check(question)
    model.learn("a", question, {"stamp": ("1", "3")})
    assert model.real_fields(question) == ["stamp", "title"]
    model.learn("b", question, {"stamp": ("2", "4")})
    assert model.real_fields(question) == ["title"] and model.noise("stamp")
    for _ in range(CHECKS_TO_SETTLE - 1):
        for stack in ("a", "b"):
            model.learn(stack, question, {"stamp": ("5", "6")})
    assert not model.needs_check(question), "both checked enough on both stacks: settled"
    shown = model.as_dict()["fields"]
    assert shown["stamp"]["verdict"] == "noise" and shown["title"]["verdict"] == "real"
    assert shown["stamp"]["self_differences"] == {"a": 3, "b": 3} and shown["title"]["self_checks"] == {"a": 3, "b": 3}


def test_a_verdict_follows_the_recent_checks():
    """A field that differed on replays while writes raced becomes real again once replays agree."""
    model = NoiseModel("r", ["a", "b"])
    for stack in ("a", "b"):
        model.learn(stack, {"title": ()}, {"title": ("x", "y")})
    assert model.noise("title")
    for _ in range(WINDOW):
        for stack in ("a", "b"):
            model.learn(stack, {"title": ()}, {})
    assert not model.noise("title")


@pytest.mark.parametrize(
    "path, folded",
    [("/todos/42", "/todos/{id}"), ("/todos/42/", "/todos/{id}/"), ("/u/3f2b6c1e-9a0d-4c8e-8f7a-1b2c3d4e5f60", "/u/{id}"), ("/todos/mine", "/todos/mine"), ("/", "/")],
)
def test_fold_path(path, folded):
    assert fold_path(path) == folded


@pytest.mark.parametrize(
    "route, template",
    [("todos/<int:pk>", "/todos/{pk}"), ("^todos/(?P<pk>[^/.]+)/?$", "/todos/{pk}"), ("^todos\\.(?P<format>[a-z0-9]+)/?$", "/todos.{format}"), ("^todos/?$", "/todos")],
)
def test_django_route_templates(route, template):
    assert _django_template(route) == template


def test_endpoint_names_are_cached_and_capped():
    endpoints = Endpoints([("x", lambda method, path: "/items/{n}" if path.startswith("/items/") else None)])
    scope = {"method": "GET", "path": "/api/items/7", "root_path": "/api"}
    assert endpoints.name(scope) == "GET /api/items/{n}"
    assert endpoints.name(dict(scope, path="/api/other/9")) == "GET /api/other/{id}"
    assert endpoints.templates("GET /api/items/{n}") == {"x": "/api/items/{n}"}
    for i in range(ENDPOINTS_MAX * 2):
        endpoints.name(dict(scope, path=f"/api/p{i}"))
    assert endpoints.name(dict(scope, path="/api/last")) == OTHER_ENDPOINT
    assert len(endpoints.names) == ENDPOINTS_MAX


def test_quantile_interpolates_within_the_bucket():
    buckets = [(0.01, 50.0), (0.1, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == 0.01
    assert quantile(0.75, buckets) == pytest.approx(0.055)
    assert quantile(0.5, []) is None and quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.99, [(0.1, 0.0), (float("inf"), 5.0)]) == 0.1


SPLIT = '[backends.a]\nkind = "wsgi"\napp = "a:b"\n[backends.b]\nkind = "wsgi"\napp = "a:c"\n'


@pytest.mark.parametrize(
    "extra, message",
    [
        ('[split]\nmirror_noise_share = 2\n', "split.mirror_noise_share: Input should be less than or equal to 1"),
        ('[split]\nmirror_noise_share = -0.1\n', "split.mirror_noise_share: Input should be greater than or equal to 0"),
        ('', 'routes[0].mirror_significant: " " is not a field: give a key ("title") or a path ("results[].title")'),
    ],
)
def test_bad_noise_config_is_reported_as_file_key_message(extra, message):
    from gateway.config import ConfigError, parse_config

    significant = '[" "]' if not extra else '["title"]'
    text = extra + SPLIT + f'[[routes]]\nprefix = "/x"\nauth = "none"\nsplit = {{ a = 1, b = 1 }}\nmirror = true\nmirror_significant = {significant}\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text.encode(), "c.toml", {})
    assert any(p.startswith(f"c.toml: {message}") for p in info.value.problems), info.value.problems


def test_noise_keys_are_accepted():
    from gateway.config import parse_config

    text = '[split]\nmirror_noise_share = 0.2\n' + SPLIT + '[[routes]]\nprefix = "/x"\nauth = "none"\nsplit = { a = 1, b = 1 }\nmirror = true\nmirror_significant = ["title", "results[].owner"]\n'
    config = parse_config(text.encode(), "c.toml", {})
    assert config.split.mirror_noise_share == 0.2 and config.routes[0].mirror_significant == ["title", "results[].owner"]


def test_a_check_of_a_stack_without_the_field_tells_nothing_of_its_noise():
    """One stack answers an error without ``stamp``: its replays agreeing must not make ``stamp`` real."""
    model = NoiseModel("r", ["a", "b"])
    for stack, side in (("a", 0), ("b", 1)):
        model.learn(stack, {"stamp": ('"1"', '"2"')}, {"stamp": ('"1"', '"3"')}, side)
    for _ in range(WINDOW):
        model.learn("a", {"stamp": ('"1"', "(missing)")}, {"stamp": ('"1"', '"4"')}, 0)
        model.learn("b", {"stamp": ('"1"', "(missing)")}, {}, 1)
    assert model.noise("stamp")
