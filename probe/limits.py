"""I/O: the runtime side of `BatchLimits`: sessions at once per MX address and per provider,
and the pace (overall and per provider)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from probe.config import BatchLimits, SessionOptions
from probe.context import RunContext
from probe.result import Session
from probe.session import open_session
from probe.shard import registrable

Address = tuple[str, int]
Key = Address | str  # an MX address, or a provider


def provider_of(host: str, address: str) -> str:
    """The provider a session counts against: the registrable domain of the MX host name
    (the rule --shard splits by), or the address itself for an address literal."""
    return registrable(host) if host else address


@dataclass(eq=False)
class _Slot:
    sem: asyncio.Semaphore
    users: int = 0  # holding or waiting; the slot is forgotten when none is left


class Limits:
    """Semaphores per MX address and per provider (made when needed, dropped when free, so a
    run over millions of addresses keeps only those in use), a start pace for the whole run
    and one per provider."""

    def __init__(self, config: BatchLimits) -> None:
        self.config = config
        self._slots: dict[Key, _Slot] = {}
        self._interval = 1.0 / config.rate if config.rate else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()
        rate = config.provider_rate
        self._provider_interval = 1.0 / rate if rate else 0.0
        self._provider_next: dict[str, float] = {}  # only starts still to come are kept
        self._prune_at = 1024

    @property
    def by_provider(self) -> bool:
        """Whether sessions are counted or paced per provider at all."""
        return bool(self.config.per_provider or self._provider_interval)

    async def acquire(self, addr: Address) -> None:
        await self._take(addr, self.config.per_host)

    def release(self, addr: Address) -> None:
        self._give(addr)

    async def acquire_provider(self, provider: str) -> None:
        if self.config.per_provider:
            await self._take(provider, self.config.per_provider)

    def release_provider(self, provider: str) -> None:
        if self.config.per_provider:
            self._give(provider)

    async def _take(self, key: Key, size: int) -> None:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(asyncio.Semaphore(size))
        slot.users += 1
        try:
            await slot.sem.acquire()
        except BaseException:
            self._leave(key, slot)
            raise

    def _give(self, key: Key) -> None:
        slot = self._slots[key]
        slot.sem.release()
        self._leave(key, slot)

    def _leave(self, key: Key, slot: _Slot) -> None:
        slot.users -= 1
        if slot.users == 0:
            del self._slots[key]

    @asynccontextmanager
    async def slot(self, addr: Address) -> AsyncIterator[None]:
        await self.acquire(addr)
        try:
            yield
        finally:
            self.release(addr)

    @asynccontextmanager
    async def provider_slot(self, provider: str) -> AsyncIterator[None]:
        await self.acquire_provider(provider)
        try:
            yield
        finally:
            self.release_provider(provider)

    async def pace(self, provider: str | None = None) -> None:
        """Wait for the next start the rates allow (the provider's, then the overall one)."""
        if provider is not None and self._provider_interval:
            await _sleep(self._provider_start(provider))
        if not self._interval:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self._interval
        await _sleep(wait)

    def _provider_start(self, provider: str) -> float:
        """Book the provider's next start; how long to wait for it."""
        now = time.monotonic()
        nexts = self._provider_next
        booked = nexts.get(provider, now)
        nexts[provider] = max(now, booked) + self._provider_interval
        if len(nexts) >= self._prune_at:  # a provider whose next start is past needs no entry
            for key in [k for k, t in nexts.items() if t <= now]:
                del nexts[key]
            self._prune_at = max(1024, 2 * len(nexts))
        return booked - now


async def _sleep(wait: float) -> None:
    if wait > 0:
        await asyncio.sleep(wait)


class Limited:
    """Sessions within the limits, each on a connection of its own."""

    def __init__(self, limits: Limits, run: RunContext | None = None) -> None:
        self.limits = limits
        self.run = run or RunContext()

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        limits = self.limits
        # Provider before address, everywhere: one order, so no two sessions wait on each
        # other. Plain try blocks, not context managers: this runs once per target.
        provider = provider_of(host, address) if limits.by_provider else None
        if provider is not None:
            await limits.acquire_provider(provider)
        try:
            await limits.acquire((address, port))
            try:
                await limits.pace(provider)
                # (open_session itself, not run_session around it: one coroutine less to
                # resume at every reply)
                session, _ = await open_session(host, address, port, opts, self.run, keep=False)
                return session
            finally:
                limits.release((address, port))
        finally:
            if provider is not None:
                limits.release_provider(provider)
