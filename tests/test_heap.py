"""The cycle collector in a server process (gateway/edge/heap.py)."""

from __future__ import annotations

import asyncio

from gateway.edge.heap import Refreeze


class Collector:
    """Full collections counted by hand; freezes recorded with the count they happened at."""

    def __init__(self) -> None:
        self.full = 0
        self.frozen_at: list[int] = []

    def count(self) -> int:
        return self.full

    def freeze(self) -> None:
        self.frozen_at.append(self.full)


async def test_the_worker_freezes_again_after_so_many_full_collections_each_time_more():
    collector = Collector()
    refreeze = Refreeze(after=(3, 10), check_every=0.01, count=collector.count, freeze=collector.freeze)
    task = asyncio.ensure_future(refreeze.run())
    try:
        for _ in range(40):
            collector.full += 1
            await asyncio.sleep(0.02)
            if task.done():
                break
        assert task.done(), "it stops once every refreeze is done"
        assert refreeze.done == 2
        first, second = collector.frozen_at
        assert 3 <= first <= 4, collector.frozen_at
        assert first + 10 <= second <= first + 11, collector.frozen_at
    finally:
        task.cancel()


async def test_no_full_collection_no_refreeze():
    collector = Collector()
    refreeze = Refreeze(after=(1,), check_every=0.01, count=collector.count, freeze=collector.freeze)
    task = asyncio.ensure_future(refreeze.run())
    await asyncio.sleep(0.1)
    task.cancel()
    assert collector.frozen_at == [], "an idle worker keeps what it has"
