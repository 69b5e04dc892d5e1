"""Storage adapters of the throttle: the Redis sliding window (memory storage comes from ``limits``).

``WindowState`` is what every storage answers per rate; it lives here so that a
config without Redis never imports redis-py (``redis_window`` does).
"""

from __future__ import annotations

from typing import NamedTuple


class WindowState(NamedTuple):
    """One rate's answer: whether it let the request through, what is left, when the next unit frees (epoch s)."""

    allowed: bool
    remaining: int
    reset: float
