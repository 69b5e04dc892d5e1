"""The cycle collector in a server process: what lives as long as the worker is kept out of its sight.

A full (generation 2) collection walks every tracked object and stops the
worker meanwhile: the event loop and every request in flight. Both stacks
load ~130,000 objects at startup that live as long as the worker, and a
Django/DRF request leaves reference cycles behind, so under load full
collections came several times a second, 40-70 ms each. ``gc.freeze()``
after startup (``freeze_loaded_objects``) moves those objects out of the
collector's sight.

The first requests load more: modules imported on first use, their
functions and classes, the frameworks' caches (27,000 objects in a Django
worker after a few seconds of load, mostly functions, tuples, dicts and
types), and every full collection walked them again: 10-13 ms each, one
every 1.5-2 s per worker under a Django list load, every request of the
worker stopped meanwhile. ``Refreeze`` freezes again once the worker has run
``AFTER[0]`` full collections since the last freeze, then after ``AFTER[1]``
more, and so on: what survived that long is what stays. Full collections
then took 1.6-1.9 ms (a callback on ``gc.callbacks`` in both workers,
docs/performance.md).

What freezing gives up: an object frozen that later becomes cyclic garbage
is never collected: the compiled state of a config frozen with it, once a
reload replaces it; at a refreeze, the cycles of the requests in flight at that
moment (about 120 objects per Django request), a few times in a worker's
life (``len(AFTER)``). Objects freed by reference counting are freed as
ever, frozen or not.
"""

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
    gc.freeze()


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
