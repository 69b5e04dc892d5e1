"""The JSON log: one line per record, batched, and never silently kept in memory."""

from __future__ import annotations

import io
import json
import logging
import logging.config

from gateway import logs


def test_records_are_written_even_after_someone_reconfigures_logging(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", stream)
    logs.setup("info")
    handler = logging.getLogger("stackgate").handlers[0]
    # What Django's setup does when its backend loads: every existing handler is closed.
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    for n in range(300):
        logging.getLogger("stackgate.access").info("request", extra={"n": n})
    logs.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["n"] for line in lines] == list(range(300))
    assert lines[0]["logger"] == "stackgate.access" and isinstance(lines[0]["pid"], int)
    assert handler.buffer == []


def test_access_lines_skip_the_logging_machinery_but_keep_its_shape(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", stream)
    logs.setup("info")
    for n in range(300):
        logs.access({"request_id": f"r{n}", "status": 200, "duration_ms": 1.5})
    logging.getLogger("stackgate").warning("after")  # written at once, after what waited
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line.get("request_id") for line in lines[:300]] == [f"r{n}" for n in range(300)]
    first = lines[0]
    assert first["logger"] == "stackgate.access" and first["level"] == "info" and first["message"] == "request"
    assert isinstance(first["pid"], int) and first["time"].endswith("Z") and len(first["time"]) == 24
    assert lines[-1]["message"] == "after" and lines[-1]["level"] == "warning"


def test_access_lines_follow_the_access_switch(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", stream)
    logs.setup("info", access=False)
    try:
        logs.access({"request_id": "r"})
        logs.flush()
        assert stream.getvalue() == ""
    finally:
        logging.getLogger("stackgate.access").setLevel(logging.INFO)


class StuckStream(io.StringIO):
    """A stream that blocks on write until released: a pipe nobody reads, a stalled disk."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.released = threading.Event()

    def write(self, text: str) -> int:
        assert self.released.wait(10), "never released"
        return super().write(text)


def test_request_lines_never_wait_for_a_stuck_stream():
    import threading

    stream = StuckStream()
    handler = logs.BufferedStreamHandler(stream)
    added = threading.Event()

    def requests():
        for n in range(3 * handler.FLUSH_RECORDS):
            handler.add(json.dumps({"n": n}))
        added.set()

    threading.Thread(target=requests, daemon=True).start()
    assert added.wait(5), "a request's log line waited for the stream (the event loop would have stopped)"
    stream.released.set()
    handler.flush()
    assert [json.loads(line)["n"] for line in stream.getvalue().splitlines()] == list(range(3 * handler.FLUSH_RECORDS))


def test_a_stream_that_takes_nothing_costs_bounded_memory_and_the_loss_is_told(monkeypatch):
    stream = StuckStream()
    handler = logs.BufferedStreamHandler(stream)
    monkeypatch.setattr(handler, "MAX_BUFFERED", 500)
    for n in range(800):
        handler.add(json.dumps({"n": n}))
    assert len(handler.buffer) <= 500 + handler.FLUSH_RECORDS and handler.dropped >= 300 - handler.FLUSH_RECORDS
    stream.released.set()
    handler.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    kept = [line["n"] for line in lines if "n" in line]
    assert kept == list(range(len(kept))), "what was kept is in order, nothing in between is missing"
    assert len(kept) + int(lines[-1]["message"].split()[0]) == 800
    assert lines[-1]["level"] == "warning" and "log lines dropped" in lines[-1]["message"]


def test_uvicorn_lines_are_json_and_a_failure_the_gateway_logged_is_not_written_again():
    config = logs.server_log_config()  # what `stackgate run` gives uvicorn, built by hand (no global dictConfig)
    assert config["formatters"]["json"]["()"] is logs.JSONFormatter
    assert config["filters"]["not_logged_again"]["()"] is logs.NotLoggedAgain
    assert config["loggers"]["uvicorn"]["handlers"] == ["stderr"] and config["handlers"]["stderr"]["filters"]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JSONFormatter())
    handler.addFilter(logs.NotLoggedAgain())
    server = logging.getLogger("tests.uvicorn.error")
    server.handlers[:] = [handler]
    server.propagate = False
    server.setLevel(logging.INFO)
    server.info("Started server process [%d]", 7, extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"})
    try:
        raise logs.Logged("request r1: the backend failed after the response began")
    except logs.Logged as exc:
        server.error("Exception in ASGI application\n", exc_info=exc)
    try:
        raise RuntimeError("not the gateway's")
    except RuntimeError as exc:
        server.error("Exception in ASGI application\n", exc_info=exc)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["Started server process [7]", "Exception in ASGI application\n"]
    assert lines[0]["logger"] == "tests.uvicorn.error" and "color_message" not in lines[0]
    assert "not the gateway's" in lines[1]["traceback"]
