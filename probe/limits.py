"""I/O: the runtime side of `BatchLimits`: sessions at once per MX address, and the pace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from probe.config import BatchLimits, SessionOptions
from probe.context import RunContext
from probe.result import Session
from probe.session import run_session

Address = tuple[str, int]


@dataclass(eq=False)
class _Slot:
    sem: asyncio.Semaphore
    users: int = 0  # holding or waiting; the slot is forgotten when none is left


class Limits:
    """Semaphores per MX address (made when needed, dropped when free, so a run over
    millions of addresses keeps only those in use) and a start pace for the whole run."""

    def __init__(self, config: BatchLimits) -> None:
        self.config = config
        self._slots: dict[Address, _Slot] = {}
        self._interval = 1.0 / config.rate if config.rate else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self, addr: Address) -> None:
        slot = self._slots.get(addr)
        if slot is None:
            slot = self._slots[addr] = _Slot(asyncio.Semaphore(self.config.per_host))
        slot.users += 1
        try:
            await slot.sem.acquire()
        except BaseException:
            self._leave(addr, slot)
            raise

    def release(self, addr: Address) -> None:
        slot = self._slots[addr]
        slot.sem.release()
        self._leave(addr, slot)

    def _leave(self, addr: Address, slot: _Slot) -> None:
        slot.users -= 1
        if slot.users == 0:
            del self._slots[addr]

    @asynccontextmanager
    async def slot(self, addr: Address) -> AsyncIterator[None]:
        await self.acquire(addr)
        try:
            yield
        finally:
            self.release(addr)

    async def pace(self) -> None:
        """Wait for the next start the rate allows."""
        if not self._interval:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self._interval
        if wait > 0:
            await asyncio.sleep(wait)


class Limited:
    """Sessions within the limits, each on a connection of its own."""

    def __init__(self, limits: Limits, run: RunContext | None = None) -> None:
        self.limits = limits
        self.run = run or RunContext()

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        async with self.limits.slot((address, port)):
            await self.limits.pace()
            return await run_session(host, address, port, opts, self.run)
