"""JSON log lines: one per request on ``stackgate.access``, and the gateway's own events."""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


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
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                data[key] = value
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)

    def line(self, logger: str, message: str, fields: dict) -> str:
        """An info line without a LogRecord (the access log's path)."""
        data = {"time": self.clock.stamp(time.time()), "level": "info", "logger": logger, "message": message, "pid": self.pid}
        data.update(fields)
        return json.dumps(data, default=str)


class BufferedStreamHandler(logging.Handler):
    """Writes lines in batches: one write per FLUSH_RECORDS lines or FLUSH_SECONDS.

    A write per request (with its lock) is a measurable share of a request's
    cost; warnings and errors are written at once, with what was waiting
    before them.
    """

    FLUSH_RECORDS = 256
    FLUSH_SECONDS = 0.5

    def __init__(self, stream) -> None:
        super().__init__()
        self.stream = stream
        self.formatter: JSONFormatter = JSONFormatter()
        self.buffer: list[str] = []
        self.last_flush = time.monotonic()
        threading.Thread(target=self._flush_periodically, name="stackgate-log-flush", daemon=True).start()

    def _flush_periodically(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            if self.buffer:
                self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.add(self.formatter.format(record), record.levelno >= logging.WARNING)
        except Exception:  # pragma: no cover - logging must never fail a request
            self.handleError(record)

    def add(self, line: str, urgent: bool = False) -> None:
        buffer = self.buffer
        buffer.append(line)  # list.append is atomic: no lock on the request's path
        if urgent or len(buffer) >= self.FLUSH_RECORDS or time.monotonic() - self.last_flush >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self.last_flush = time.monotonic()
            buffer = self.buffer  # one list for good: a line appended meanwhile stays for the next write
            count = len(buffer)
            lines = buffer[:count]
            del buffer[:count]
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
    handler = _access_handler
    if handler is not None and not _access_logger.handlers and _stackgate_logger.handlers == [handler]:
        handler.add(handler.formatter.line("stackgate.access", "request", fields))
    else:
        _access_logger.info("request", extra=fields)


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
    global _access_handler
    handler = _access_handler = BufferedStreamHandler(sys.stderr)
    atexit.register(handler.flush)
    root = logging.getLogger("stackgate")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging.getLogger("stackgate.access").setLevel(logging.INFO if access else logging.WARNING)
