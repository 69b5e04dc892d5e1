"""The ``stackgate`` command: the cycle collector stays off while it imports the gateway and the stacks.

Imports make a few hundred thousand long-lived objects and almost no cyclic garbage, yet they set
off hundreds of collections. ``gateway.cli`` turns the collector back on where the imports end: at
once for a short verb; for ``run``, when the loaded heap is frozen (``gateway.edge.heap``).
"""
# Measured (0.15-0.2 s of a start, 1,145 objects of garbage): docs/performance.md#memory

from __future__ import annotations

import gc
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    gc.disable()
    from gateway.cli import main as cli_main

    return cli_main(argv)
