"""JSON log lines: one per request on ``stackgate.access``, and the gateway's own events."""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
from typing import Callable, Optional

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}
"""Record attributes that are not a line's fields (uvicorn adds ``color_message`` for its terminal format)."""


context_fields: "Callable[[], Optional[dict]] | None" = None
"""Fields every line of a request gets (``trace_id``, ``span_id``): set by ``gateway.telemetry`` when tracing is on."""


class Logged(Exception):
    """A response that failed after its first byte, already logged with its traceback by the gateway.

    Raised to the server so that it closes the connection (a truncated body
    must not look complete); ``NotLoggedAgain`` keeps uvicorn from writing
    the same failure a second time as its own traceback.
    """


class NotLoggedAgain(logging.Filter):
    """On uvicorn's loggers: drop its "Exception in ASGI application" for a ``Logged`` failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Logged))


def server_log_config() -> dict:
    """``log_config`` for uvicorn under ``stackgate run``: its own lines (start, stop, workers,
    protocol warnings) as JSON lines on stderr, like the gateway's; its access log stays off."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"not_logged_again": {"()": NotLoggedAgain}},
        "formatters": {"json": {"()": JSONFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["not_logged_again"],
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": [], "level": "INFO", "propagate": False},
        },
    }


class _Clock:
    """The timestamp of a line, with the part up to the second made once per second.

    One tuple, replaced whole: a thread that reads it while another writes it
    sees the old second or the new one, never one with the other's prefix.
    """

    __slots__ = ("cached",)

    def __init__(self) -> None:
        self.cached: tuple[int, str] = (-1, "")

    def stamp(self, created: float) -> str:
        second = int(created)
        cached = self.cached
        if cached[0] != second:
            cached = self.cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{cached[1]}.{int((created - second) * 1000):03d}Z"


class JSONFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self.pid = os.getpid()  # which worker wrote the line (formatters are made in each worker)
        self.clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.clock.stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": self.pid,
        }
        if context_fields is not None and (extra := context_fields()):
            data.update(extra)
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                data[key] = value
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)

    def line(self, logger: str, message: str, fields: dict, level: str = "info") -> str:
        """A line without a LogRecord (the access log's path)."""
        data = {"time": self.clock.stamp(time.time()), "level": level, "logger": logger, "message": message, "pid": self.pid}
        data.update(fields)
        return json.dumps(data, default=str)


class BufferedStreamHandler(logging.Handler):
    """Writes lines in batches, from its own thread: every FLUSH_SECONDS, or as soon as FLUSH_RECORDS wait.

    A write per request (with its lock) is a measurable share of a request's
    cost, and a write on the event loop stops every request of the worker for
    as long as the stream blocks (a pipe nobody reads, a slow disk). So
    request lines only go into the buffer; warnings and errors are written at
    once, with what was waiting before them. Beyond MAX_BUFFERED lines (the
    stream has stopped taking them) new lines are dropped and counted, and the
    count is written when the stream takes lines again.
    """

    FLUSH_RECORDS = 256
    FLUSH_SECONDS = 0.5
    MAX_BUFFERED = 100_000

    def __init__(self, stream) -> None:
        super().__init__()
        self.stream = stream
        self.formatter: JSONFormatter = JSONFormatter()
        self.buffer: list[str] = []
        self.dropped = 0
        self._due = threading.Event()
        threading.Thread(target=self._flush_periodically, name="stackgate-log-flush", daemon=True).start()

    def _flush_periodically(self) -> None:
        while True:
            self._due.wait(self.FLUSH_SECONDS)
            self._due.clear()
            if self.buffer or self.dropped:
                self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.add(self.formatter.format(record), record.levelno >= logging.WARNING)
        except Exception:  # pragma: no cover - logging must never fail a request
            self.handleError(record)

    def add(self, line: str, urgent: bool = False) -> None:
        buffer = self.buffer
        if len(buffer) >= self.MAX_BUFFERED and not urgent:
            self.dropped += 1  # the stream is stuck: memory stays bounded
            return
        buffer.append(line)  # list.append is atomic: no lock on the request's path
        if urgent:
            self.flush()
        elif len(buffer) >= self.FLUSH_RECORDS and not self._due.is_set():
            self._due.set()  # the flush thread writes; the caller (the event loop) never does

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            buffer = self.buffer  # one list for good: a line appended meanwhile stays for the next write
            count = len(buffer)
            lines = buffer[:count]
            del buffer[:count]
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                lines.append(self.formatter.line(
                    "stackgate", f"{dropped} log lines dropped: the log stream took no lines while {self.MAX_BUFFERED} waited",
                    {}, level="warning"))
            if lines:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                except (OSError, ValueError):  # pragma: no cover - the stream is gone (shutdown)
                    pass

    def close(self) -> None:
        # ``logging.config.dictConfig`` closes every handler it finds, and Django's setup
        # calls it when its backend loads. Closing must not stop the writing: flush and stay.
        self.flush()


_access_handler: "BufferedStreamHandler | None" = None
_access_logger = logging.getLogger("stackgate.access")
_stackgate_logger = logging.getLogger("stackgate")


def access(fields: dict) -> None:
    """One access line: straight into the buffer when ``setup`` made it, through logging otherwise.

    A LogRecord, the handler's lock and the generic formatter cost about
    10 µs per request, more than the rest of the gateway's own work on a
    bare route (docs/performance.md).
    """
    if not _access_logger.isEnabledFor(logging.INFO):
        return
    if context_fields is not None and (extra := context_fields()):
        fields.update(extra)
    handler = _access_handler
    if handler is not None and not _access_logger.handlers and _stackgate_logger.handlers == [handler]:
        handler.add(handler.formatter.line("stackgate.access", "request", fields))
    else:
        _access_logger.info("request", extra=fields)


def flush() -> None:
    """Write what is buffered: at shutdown, before uvicorn re-raises the signal (atexit would not run)."""
    for handler in logging.getLogger("stackgate").handlers:
        handler.flush()


def last_resort_json() -> None:
    """What a library logs where no handler is set up (asyncio's own errors, say), and Python's
    warnings, go to stderr as JSON lines too: ``logging.lastResort`` wrote them as plain text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    handler.setLevel(logging.WARNING)
    logging.lastResort = handler
    logging.captureWarnings(True)


def setup(level: str = "info", access: bool = True) -> None:
    # Where in the source a record came from, and thread/process names, are never logged.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _access_handler
    handler = _access_handler = BufferedStreamHandler(sys.stderr)
    atexit.register(handler.flush)
    root = logging.getLogger("stackgate")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging.getLogger("stackgate.access").setLevel(logging.INFO if access else logging.WARNING)
    last_resort_json()
