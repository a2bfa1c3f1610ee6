"""The results an exporter keeps: one probe per target and module per minimum interval, and
one probe in flight shared by every scrape that asks for it meanwhile.

Owned by one server (no process-wide state); bounded, like every cache of a run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from probe.cache import Bounded
from probe.metrics import Memory, Snapshot

Key = tuple[str, str]  # (target, module)


@dataclass(frozen=True, slots=True)
class Served:
    snapshot: Snapshot
    how: str  # "probed", "cached" or "shared"


class Results:
    """Fresh results by key, the probes in flight, and what each target taught us."""

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._done: Bounded[Key, tuple[float, Snapshot]] = Bounded(size)
        self._memory: Bounded[Key, Memory] = Bounded(size)
        self._flight: dict[Key, asyncio.Task[Snapshot]] = {}
        self._clock = clock

    def __len__(self) -> int:
        return len(self._done)

    @property
    def in_flight(self) -> int:
        return len(self._flight)

    def memory(self, key: Key) -> Memory | None:
        return self._memory.get(key)

    def fresh(self, key: Key, interval: float) -> Snapshot | None:
        hit = self._done.get(key)
        if hit is None or self._clock() - hit[0] >= interval:
            return None
        return hit[1]

    def keep(self, key: Key, snap: Snapshot, memory: Memory) -> None:
        self._done.put(key, (self._clock(), snap))
        self._memory.put(key, memory)

    def _landed(self, key: Key, task: asyncio.Task[Snapshot]) -> None:
        self._flight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every scrape may have given up waiting for it

    async def get(
        self,
        key: Key,
        interval: float,
        probe: Callable[[], Coroutine[object, None, Snapshot]],
        wait: float,
    ) -> Served:
        """A fresh result, the one in flight, or a new probe; at most `wait` seconds for it
        (a scrape that gives up leaves a shared probe running for the others)."""
        snap = self.fresh(key, interval)
        if snap is not None:
            return Served(snap, "cached")
        task = self._flight.get(key)
        how = "shared"
        if task is None:
            task = asyncio.get_running_loop().create_task(probe())
            self._flight[key] = task
            task.add_done_callback(lambda t: self._landed(key, t))
            how = "probed"
        async with asyncio.timeout(wait):
            return Served(await asyncio.shield(task), how)
