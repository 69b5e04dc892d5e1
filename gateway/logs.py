"""JSON log lines: one per request on ``stackgate.access``, and the gateway's own events."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import os
import sys
import threading
import time

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self.pid = os.getpid()  # which worker wrote the line (formatters are made in each worker)

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": self.pid,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                data[key] = value
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class BufferedStreamHandler(logging.handlers.MemoryHandler):
    """Writes records in batches: one write per FLUSH_RECORDS records or FLUSH_SECONDS.

    A write per request (with its lock) is a measurable share of a request's
    cost; warnings and errors are written at once.
    """

    FLUSH_RECORDS = 256
    FLUSH_SECONDS = 0.5

    def __init__(self, stream) -> None:
        target = logging.StreamHandler(stream)
        target.setFormatter(JSONFormatter())
        super().__init__(self.FLUSH_RECORDS, flushLevel=logging.WARNING, target=target, flushOnClose=True)
        self.last_flush = time.monotonic()
        threading.Thread(target=self._flush_periodically, name="stackgate-log-flush", daemon=True).start()

    def _flush_periodically(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            if self.buffer:
                self.flush()

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        return super().shouldFlush(record) or time.monotonic() - self.last_flush >= self.FLUSH_SECONDS

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        super().flush()

    def close(self) -> None:
        # ``logging.config.dictConfig`` closes every handler it finds, and Django's setup
        # calls it when its backend loads. MemoryHandler.close would drop the target, and
        # from then on every record would pile up in the buffer, never written: keep it.
        self.flush()


def flush() -> None:
    """Write what is buffered: at shutdown, before uvicorn re-raises the signal (atexit would not run)."""
    for handler in logging.getLogger("stackgate").handlers:
        handler.flush()


def setup(level: str = "info", access: bool = True) -> None:
    # Where in the source a record came from, and thread/process names, are never logged.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedStreamHandler(sys.stderr)
    atexit.register(handler.flush)
    root = logging.getLogger("stackgate")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging.getLogger("stackgate.access").setLevel(logging.INFO if access else logging.WARNING)
