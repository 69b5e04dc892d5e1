"""Traces of real requests through ``stackgate run --workers 2``, read back from a real OTLP/HTTP receiver.

HTTP in -> the gateway and both stacks -> spans out, decoded from protobuf:
the span tree, the client's ``traceparent`` (linked or continued), the trace
id in the log lines, the sampling ratio, and a collector that is down.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.telemetry.conftest import start_gateway
from tests.telemetry.receiver import Span, wait_until
from tests.users import USERS

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def server_span(spans: list[Span], request_id: str) -> Span | None:
    found = [s for s in spans if s.kind == "SERVER" and s.attributes.get("stackgate.request_id") == request_id]
    assert len(found) <= 1, found
    return found[0] if found else None


def whole_trace(receiver, response: httpx.Response, names: set[str]) -> tuple[Span, list[Span]]:
    """The request's server span and every span of its trace, once the spans named ``names`` arrived."""
    request_id = response.headers["x-request-id"]

    def ready(spans):
        root = server_span(spans, request_id)
        if root is None:
            return None
        mine = [s for s in spans if s.trace_id == root.trace_id]
        return (root, mine) if names <= {s.name for s in mine} else None

    return receiver.wait_for(ready, what=f"the trace of {request_id} with {sorted(names)}")


def only(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [(s.name, s.span_id) for s in spans])
    return found[0]


@pytest.fixture
def gateway(tmp_path, receiver):
    server = start_gateway(tmp_path, endpoint=receiver.endpoint, instrument=["django", "flask"])
    try:
        yield server
    finally:
        server.stop()
        print(server.log()[-6000:])  # shown when the test failed


def test_one_trace_per_request_with_each_stack_under_its_backend_span(gateway, receiver):
    headers = USERS["alice"].headers()
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        flask = client.get("/v1/todos", headers=headers)
        django = client.get("/v2/todos/", headers=headers)
    assert flask.status_code == 200 and django.status_code == 200, (flask.text, django.text)

    for response, route, backend, stack_scope in (
        (flask, "todos-v1", "flask", "opentelemetry.instrumentation.flask"),
        (django, "todos-v2", "django", "opentelemetry.instrumentation.django"),
    ):
        root, spans = whole_trace(receiver, response, {"auth", "throttle", f"backend {backend}", "queue", "run"})
        stack = receiver.wait_for(
            lambda all_spans: [s for s in all_spans if s.trace_id == root.trace_id and s.scope == stack_scope],
            what=f"the {backend} stack's own span",
        )
        spans = receiver.trace(root.trace_id)
        assert [s for s in spans if s.parent_id == ""] == [root]  # one trace, one root
        assert root.name == f"GET {route}"
        attrs = root.attributes
        assert attrs["http.request.method"] == "GET"
        assert attrs["http.response.status_code"] == 200
        assert attrs["http.route"] == f"/{route[-2:]}"
        assert attrs["url.path"] == response.request.url.path
        assert attrs["server.address"] == "127.0.0.1"
        assert attrs["stackgate.backend"] == backend
        assert root.resource["service.name"] == "stackgate"
        auth, throttle, backend_span = only(spans, "auth"), only(spans, "throttle"), only(spans, f"backend {backend}")
        assert auth.parent_id == throttle.parent_id == backend_span.parent_id == root.span_id
        queue, run = only(spans, "queue"), only(spans, "run")
        assert queue.parent_id == run.parent_id == backend_span.span_id
        assert [s.parent_id for s in stack] == [run.span_id]  # the stack's span nests under the backend's call
        assert root.status != 2 and backend_span.attributes["stackgate.backend.kind"] == "wsgi"


def test_a_refused_request_ends_at_its_policy_span(gateway, receiver):
    refused = httpx.get(gateway.url + "/v1/todos", timeout=30)
    assert refused.status_code == 401
    root, spans = whole_trace(receiver, refused, {"auth"})
    assert root.name == "GET todos-v1" and root.attributes["http.response.status_code"] == 401 and root.status != 2
    auth = only(spans, "auth")
    assert auth.parent_id == root.span_id and auth.attributes["http.response.status_code"] == 401
    assert {s.name for s in spans} == {"GET todos-v1", "auth"}  # neither throttle nor the backend ran


def test_an_untrusted_traceparent_starts_a_new_trace_linked_to_it(gateway, receiver):
    response = httpx.get(gateway.url + "/echo/x", headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1"}, timeout=30)
    assert response.status_code == 200
    root, spans = whole_trace(receiver, response, {"backend echo", "run"})
    assert root.trace_id != CLIENT_TRACE and root.parent_id == ""
    assert [(t, s) for t, s, _ in root.links] == [(CLIENT_TRACE, CLIENT_SPAN)]
    # The stack sees the gateway's trace, at its backend call, not the client's header.
    given = _TRACEPARENT.match(response.json()["traceparent"] or "")
    assert given is not None and given.groups() == (root.trace_id, only(spans, "run").span_id), response.json()
    assert response.json()["tracestate"] is None


def test_split_mirror_and_asgi_backends_have_their_spans(gateway, receiver):
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        split = client.get("/ab/item")
        asgi = client.get("/aecho/x")
    assert split.status_code == 200 and asgi.status_code == 200
    root, spans = whole_trace(receiver, split, {"split", "queue", "run"})
    served = root.attributes["stackgate.backend"]
    other = {"a": "b", "b": "a"}[served]
    decision = only(spans, "split")
    assert decision.parent_id == root.span_id and decision.attributes["stackgate.backend"] == served
    assert only(spans, f"backend {served}").parent_id == root.span_id
    # The mirror copy runs after the response (in the shadow process, [split] mirror_process), in the same trace.
    receiver.wait_for(lambda s: any(x.trace_id == root.trace_id and x.name == f"mirror {other}" for x in s), what="the mirror copy")
    mirror = only(receiver.trace(root.trace_id), f"mirror {other}")
    assert mirror.parent_id == root.span_id and mirror.attributes["stackgate.route"] == "ab"

    root, spans = whole_trace(receiver, asgi, {"backend aecho"})
    given = _TRACEPARENT.match(asgi.json()["traceparent"])
    assert given is not None and given.groups() == (root.trace_id, only(spans, "backend aecho").span_id)


def test_a_mirror_copy_in_the_gateways_process_has_the_backend_call_under_it(tmp_path, receiver):
    server = start_gateway(tmp_path, more="\n[split]\nmirror_process = false\n", endpoint=receiver.endpoint)
    try:
        split = httpx.get(server.url + "/ab/item", timeout=30)
        assert split.status_code == 200
        root, _ = whole_trace(receiver, split, {"split", "run"})
        other = {"a": "b", "b": "a"}[root.attributes["stackgate.backend"]]
        receiver.wait_for(lambda s: any(x.trace_id == root.trace_id and x.name == f"backend {other}" for x in s), what="the copy's spans")
        spans = receiver.trace(root.trace_id)
        mirror = only(spans, f"mirror {other}")
        assert mirror.parent_id == root.span_id
        # The copy (and the noise model's replays, docs/migration.md) call the backends under the mirror span.
        served = only([s for s in spans if s.parent_id == root.span_id and s.name.startswith("backend ")], f"backend {root.attributes['stackgate.backend']}")
        copies = [s for s in spans if s.name.startswith("backend ") and s is not served]
        assert any(s.name == f"backend {other}" for s in copies)
        assert {s.parent_id for s in copies} == {mirror.span_id}
    finally:
        server.stop()
        print(server.log()[-4000:])


def test_the_trace_id_is_in_every_log_line_of_the_request(gateway, receiver):
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        echo = client.get("/echo/logged")
        failed = client.get("/fail/x")
    assert echo.status_code == 200 and failed.status_code == 502
    for response, names in ((echo, {"run"}), (failed, {"run"})):
        root, _ = whole_trace(receiver, response, names)
        request_id = response.headers["x-request-id"]

        def logged():  # once its access line (written last, in a batch) is out
            lines = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
            done = any(line["logger"] == "stackgate.access" and line.get("request_id") == request_id for line in lines)
            return [line for line in lines if line.get("trace_id") == root.trace_id] if done else None

        lines = wait_until(logged, what=f"the access line of {request_id}")
        access = [line for line in lines if line["logger"] == "stackgate.access"]
        assert [line["request_id"] for line in access] == [request_id]
        assert access[0]["span_id"] == root.span_id
        if response is echo:  # a line logged by the stack, in its thread
            assert any(line["message"] == "inside the stack" for line in lines), lines
        else:  # the gateway's own error line, with the traceback
            assert any(line["level"] == "error" and "traceback" in line for line in lines), lines


def test_a_trusted_traceparent_is_continued_and_its_sampling_decision_kept(tmp_path, receiver):
    """trust_incoming = loopback, sample_ratio = 0: new traces are never recorded, a sampled parent's always."""
    server = start_gateway(tmp_path, endpoint=receiver.endpoint, trust_incoming=["127.0.0.0/8"], sample_ratio=0.0)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            unsampled = [client.get("/echo/new") for _ in range(20)]
            continued = client.get("/echo/continued", headers={"traceparent": TRACEPARENT})
        assert all(r.status_code == 200 for r in unsampled) and continued.status_code == 200
        root, spans = whole_trace(receiver, continued, {"backend echo", "run"})
        assert (root.trace_id, root.parent_id) == (CLIENT_TRACE, CLIENT_SPAN) and root.links == []
        assert _TRACEPARENT.match(continued.json()["traceparent"]).groups() == (CLIENT_TRACE, only(spans, "run").span_id)
        # Each unsampled request still told its stack a (non-sampled) trace context.
        assert all(int(r.json()["traceparent"][-2:], 16) & 1 == 0 for r in unsampled)  # the sampled flag is off
    finally:
        server.stop()
        print(server.log()[-4000:])
    assert {s.trace_id for s in receiver.snapshot()} == {CLIENT_TRACE}  # after the workers' final export


@pytest.mark.parametrize(("ratio", "requests", "low", "high"), [(1.0, 60, 60, 60), (0.5, 300, 90, 210)], ids=["all", "half"])
def test_the_sampling_ratio_decides_which_new_traces_are_recorded(tmp_path, receiver, ratio, requests, low, high):
    server = start_gateway(tmp_path, endpoint=receiver.endpoint, sample_ratio=ratio)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            ids = [client.get(f"/echo/{i}").headers["x-request-id"] for i in range(requests)]
    finally:
        assert server.stop() == 0  # a worker exports what it holds as it stops
        print(server.log()[-4000:])
    roots = [s for s in receiver.snapshot() if s.kind == "SERVER"]
    assert {s.attributes["stackgate.request_id"] for s in roots} <= set(ids)
    assert len({s.trace_id for s in roots}) == len(roots)
    assert low <= len(roots) <= high, len(roots)


def test_a_collector_that_is_down_fails_no_request_and_drops_are_counted(tmp_path, receiver):
    server = start_gateway(tmp_path, endpoint=receiver.endpoint, max_queue_size=16, max_export_batch_size=8, export_timeout=1.0)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            first = client.get("/echo/first")
            whole_trace(receiver, first, {"run"})  # exporting works ...
            receiver.stop()  # ... until the collector goes away: its port now refuses connections
            statuses = [client.get(f"/echo/{i}").status_code for i in range(100)]
            assert statuses == [200] * 100

            def dropped():
                text = client.get("/_stackgate/metrics").text
                counts = dict(re.findall(r'^stackgate_trace_spans_dropped_total\{reason="(\w+)"\} ([0-9.e+]+)$', text, re.M))
                return counts if float(counts.get("queue_full", 0)) > 0 and float(counts.get("export_failed", 0)) > 0 else None

            wait_until(dropped, what="dropped spans in the metrics")
            assert re.search(r"^stackgate_trace_spans_exported_total [1-9]", client.get("/_stackgate/metrics").text, re.M)
            assert client.get("/echo/after").status_code == 200
        wait_until(lambda: "spans dropped: the OTLP endpoint" in server.log(), what="the drop warning")
    finally:
        server.stop()
        print(server.log()[-4000:])
