"""The supervisor's view of its workers, shared with them: ``/_stackgate/status`` shows it."""

from __future__ import annotations

import json
import multiprocessing
import time
from typing import Any, Optional

_FORK = multiprocessing.get_context("fork")


class SharedStatus:
    """The supervisor's view of its workers, as a small JSON document the workers can read.

    No lock (a lock of the fork context cannot reach the spawned workers of a rolling restart,
    and one of the spawn context needs multiprocessing's resource tracker process): the one
    writer, the supervisor, makes ``sequence`` odd while it writes, and a reader reads again
    until it saw the same even ``sequence`` before and after.
    """

    SIZE = 8192

    def __init__(self) -> None:
        self.data = _FORK.RawArray("c", self.SIZE)
        self.sequence = _FORK.RawValue("Q", 0)

    def publish(self, status: dict[str, Any]) -> None:
        raw = json.dumps(status, separators=(",", ":")).encode()[: self.SIZE - 1]
        self.sequence.value += 1
        self.data.raw = raw + b"\0" * (self.SIZE - len(raw))
        self.sequence.value += 1

    def read(self) -> dict[str, Any]:
        while True:
            before = self.sequence.value
            if before % 2 == 0:
                raw = self.data.value
                if self.sequence.value == before:
                    return json.loads(raw) if raw else {}
            time.sleep(0.001)


STATUS: Optional[SharedStatus] = None
"""In a worker of ``stackgate run --workers N``: the supervisor's status (None otherwise; set by the worker at start)."""


def workers_status() -> Optional[dict[str, Any]]:
    """What ``/_stackgate/status`` shows under ``workers``: None when no supervisor runs this process."""
    return STATUS.read() if STATUS is not None else None
