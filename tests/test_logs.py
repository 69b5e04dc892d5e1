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
