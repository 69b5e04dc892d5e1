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
