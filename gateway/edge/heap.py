"""The cycle collector in a server process: what lives as long as the worker is kept out of its sight.

``freeze_loaded_objects`` calls ``gc.freeze()`` after startup, and ``Refreeze``
freezes again after ``AFTER`` full collections: what survived that long stays.
The price: cyclic garbage among frozen objects is never collected (a config's
compiled state once a reload replaces it; the cycles of the requests in
flight at a refreeze). Objects freed by reference counting are freed as ever.
"""
# Why, with the pauses measured: docs/performance.md#the-garbage-collector

from __future__ import annotations

import asyncio
import gc
from typing import Callable

AFTER = (3, 30, 300)
"""Full collections since the last freeze after which the worker freezes again, in turn."""
CHECK_EVERY = 1.0
"""Seconds between two looks at the collector's statistics."""


def freeze_loaded_objects() -> None:
    """Collect what is garbage now, then move every object left out of the collector's sight."""
    gc.collect()
    collect_from_here()


def collect_from_here() -> None:
    """Freeze the heap as it is, and turn the collector on (``stackgate`` starts with it off: ``gateway.launch``)."""
    gc.freeze()
    gc.enable()


def full_collections() -> int:
    return gc.get_stats()[2]["collections"]


class Refreeze:
    """Freeze again what the first requests loaded (``AFTER``), looking every ``CHECK_EVERY`` seconds."""

    def __init__(self, after: tuple[int, ...] = AFTER, check_every: float = CHECK_EVERY,
                 count: Callable[[], int] = full_collections,
                 freeze: Callable[[], None] = freeze_loaded_objects) -> None:
        self.after = after
        self.check_every = check_every
        self.count = count
        self.freeze = freeze
        self.done = 0
        """Refreezes so far."""

    async def run(self) -> None:
        since = self.count()
        while self.done < len(self.after):
            await asyncio.sleep(self.check_every)
            if self.count() - since >= self.after[self.done]:
                self.freeze()
                self.done += 1
                since = self.count()
