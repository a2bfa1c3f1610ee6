"""`batch --ray [ADDRESS]`: the batch engine on a Ray cluster. An adapter at the edge: nothing
else imports Ray, and Ray is imported only when this runs.

- Probe actors (async) each run one `run_batch` for the whole run, fed share by share: the
  driver sends chunks of input lines, an actor answers with their records once the chunk is
  done. A chunk's records are written only when all of them are back, so a chunk is written
  whole or not at all: an actor that dies loses nothing, its chunks go to another actor (or,
  past the retries, become error records), and no line is written twice.
- One named governor actor holds the per-MX-address budgets (--per-host), the per-provider
  ones (--per-provider, --provider-rate) and the pace (--rate) for every actor of the run: the limits hold cluster-wide. It remembers which
  actor holds which slot, so the slots of a dead actor come back.
- The driver writes records as they come, in the usual format; --resume works as without Ray
  (the CLI skips lines already in --output before any reach here). It reads the input in a
  thread of its own and sends what has come, so a slow pipe never holds back records.

Only loopback is used for a local Ray (no address): the node binds 127.0.0.1, without a
dashboard, and usage statistics are off.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import queue
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from probe import exitcodes
from probe.batch import Record, Scale, error_record, refused_record, run_batch
from probe.batchinput import Item, Refused
from probe.config import BatchLimits, ProbeRequest
from probe.limits import Address, Key, Limits
from probe.messages import msg
from probe.text import to_json

CHUNK = 10  # input lines per call to an actor
RETRIES = 2  # further actors a chunk is tried on after its actor died
IDLE_WAIT = 1.0  # seconds the driver waits for input when nothing is in flight
POLL = 0.05  # while input may still come: how often the driver looks for more


class RayMissing(RuntimeError):
    """Ray cannot be imported here; the message is one line for the user."""


@dataclass(frozen=True)
class RayConfig:
    template: ProbeRequest
    lang: str
    limits: BatchLimits
    scale: Scale = field(default_factory=Scale)
    address: str | None = None  # None: a local Ray for this run
    actors: int = 0  # 0: one per CPU of the cluster


def load_ray(local: bool = True) -> Any:
    """Ray, with its usage statistics off; RayMissing when it is not installed.

    For a local Ray, Ray's single-machine mode: its servers then listen on loopback only
    (otherwise Ray swaps 127.0.0.1 for the machine's own address, read when Ray is imported).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise RayMissing(msg("input.no_ray")) from None


class RemoteLimits(Limits):
    """The batch engine's limits, held by the governor actor for the whole cluster."""

    def __init__(self, config: BatchLimits, governor: Any, holder: str) -> None:
        super().__init__(config)
        self.governor, self.holder = governor, holder
        self._returning: set[asyncio.Task[None]] = set()

    async def acquire(self, addr: Address) -> None:
        await self._granted(self.governor.acquire.remote(self.holder, *addr), addr)

    async def acquire_provider(self, provider: str) -> None:
        if self.config.per_provider:
            ref = self.governor.acquire_provider.remote(self.holder, provider)
            await self._granted(ref, provider)

    async def _granted(self, ref: Any, key: Key) -> None:
        try:
            await ref
        except asyncio.CancelledError:
            # The grant may still come: hand it back when it does, or the slot is lost.
            task = asyncio.get_running_loop().create_task(self._give_back(ref, key))
            self._returning.add(task)
            task.add_done_callback(self._returning.discard)
            raise

    async def _give_back(self, ref: Any, key: Key) -> None:
        await ref
        if isinstance(key, str):
            self.release_provider(key)
        else:
            self.release(key)

    def release(self, addr: Address) -> None:
        self.governor.release.remote(self.holder, *addr)

    def release_provider(self, provider: str) -> None:
        if self.config.per_provider:
            self.governor.release_provider.remote(self.holder, provider)

    async def pace(self, provider: str | None = None) -> None:
        await self.governor.pace.remote(provider)


class Governor:
    """The budgets of the whole cluster (runs as an async Ray actor)."""

    def __init__(self, config: BatchLimits) -> None:
        self.config = config
        self.limits: Limits | None = None
        self.held: dict[str, Counter[Key]] = {}
        self.dead: set[str] = set()  # holders forgotten: a grant that still comes is returned

    def _limits(self) -> Limits:
        if self.limits is None:  # made on the actor's own event loop
            self.limits = Limits(self.config)
        return self.limits

    async def acquire(self, holder: str, address: str, port: int) -> None:
        await self._limits().acquire((address, port))
        self._granted(holder, (address, port))

    async def acquire_provider(self, holder: str, provider: str) -> None:
        await self._limits().acquire_provider(provider)
        self._granted(holder, provider)

    def _granted(self, holder: str, key: Key) -> None:
        if holder in self.dead:  # it died while waiting: nobody would give this back
            self._free(key)
            return
        self.held.setdefault(holder, Counter())[key] += 1

    async def release(self, holder: str, address: str, port: int) -> None:
        self._returned(holder, (address, port))

    async def release_provider(self, holder: str, provider: str) -> None:
        self._returned(holder, provider)

    def _returned(self, holder: str, key: Key) -> None:
        held = self.held.get(holder)
        if held is None or held[key] <= 0:
            return  # already given back when its holder was forgotten
        held[key] -= 1
        self._free(key)

    def _free(self, key: Key) -> None:
        if isinstance(key, str):
            self._limits().release_provider(key)
        else:
            self._limits().release(key)

    async def pace(self, provider: str | None = None) -> None:
        await self._limits().pace(provider)

    async def forget(self, holder: str) -> None:
        """A dead actor's slots come back."""
        self.dead.add(holder)
        for key, n in self.held.pop(holder, Counter()).items():
            for _ in range(n):
                self._free(key)


class Prober:
    """One probe actor: a `run_batch` that lives as long as the actor, fed chunk by chunk."""

    def __init__(self, cfg: RayConfig, governor: Any, holder: str) -> None:
        self.cfg, self.governor, self.holder = cfg, governor, holder
        self.queue: asyncio.Queue[Item | None] | None = None
        self.waiting: dict[int, asyncio.Future[Record]] = {}
        self.engine: asyncio.Task[Any] | None = None

    def _start(self) -> asyncio.Queue[Item | None]:
        from probe.catalog import locale

        queue: asyncio.Queue[Item | None] = asyncio.Queue()

        async def items() -> AsyncIterator[Item]:
            while (item := await queue.get()) is not None:
                yield item

        limits = RemoteLimits(self.cfg.limits, self.governor, self.holder)
        self.engine = asyncio.get_running_loop().create_task(
            run_batch(
                items(),
                self.cfg.template,
                self._emit,
                locale(self.cfg.lang),
                limits=self.cfg.limits,
                scale=self.cfg.scale,
                shared=limits,
            )
        )
        self.queue = queue
        return queue

    def _emit(self, rec: Record) -> None:
        line = rec.get("line")
        fut = self.waiting.pop(line, None) if isinstance(line, int) else None
        if fut is not None and not fut.done():
            fut.set_result(rec)

    async def run(self, chunk: list[tuple[int, str]]) -> list[Record]:
        queue = self.queue or self._start()
        loop = asyncio.get_running_loop()
        futs = []
        for line, text in chunk:
            fut: asyncio.Future[Record] = loop.create_future()
            self.waiting[line] = fut
            futs.append(fut)
            await queue.put((line, text))
        return list(await asyncio.gather(*futs))

    async def pid(self) -> int:
        return os.getpid()


def lost_record(n: int, text: str, why: str | None) -> Record:
    """The record of a line no actor answered: `why` names the error, None: no actor left."""
    detail = msg("batch.no_actor_left") if why is None else msg("batch.actor_lost", why=why)
    return error_record(n, text, "internal", detail, exitcodes.SOFTWARE)


@dataclass
class _Chunk:
    lines: list[tuple[int, str]]
    tries: int = 0


class _Feed:
    """The input, read by a thread of its own: the driver collects and writes records while a
    slow pipe has yet to give its next line, and sends what has come instead of waiting for
    a whole chunk. The thread is a daemon, as batch's own reader is."""

    def __init__(self, items: Iterator[Item], room: int) -> None:
        self._queue: queue.Queue[Item | BaseException | None] = queue.Queue(maxsize=room)
        self.ended = False
        reader = threading.Thread(
            target=self._read, args=(items,), name="smtp-probe-input", daemon=True
        )
        reader.start()

    def _read(self, items: Iterator[Item]) -> None:
        try:
            for item in items:
                self._queue.put(item)
        except Exception as e:  # handed to the driver, which raises it
            self._queue.put(e)
            return
        self._queue.put(None)

    def take(self, most: int, wait: float | None) -> list[Item]:
        """Up to `most` items: the first waited for up to `wait` seconds (None: only if it
        is there), the others only if already read."""
        out: list[Item] = []
        while len(out) < most and not self.ended:
            try:
                if out or wait is None:
                    item = self._queue.get_nowait()
                else:
                    item = self._queue.get(timeout=wait)
            except queue.Empty:
                break
            if item is None:
                self.ended = True
            elif isinstance(item, BaseException):
                raise item
            else:
                out.append(item)
        return out


class RayRun:
    """One run on Ray from the driver: start the actors, hand out chunks, write records."""

    def __init__(self, cfg: RayConfig, on_record: Callable[[str, Record], None]) -> None:
        self.cfg, self.on_record = cfg, on_record
        self.ray = load_ray(local=cfg.address is None)
        self.started = False  # a local Ray this run started, and must stop
        self.run_id = uuid.uuid4().hex[:12]
        self.actors: list[Any] = []
        self.holders: list[str] = []
        self.alive: list[bool] = []
        self.chunks: list[int] = []  # chunks each actor has answered
        self.governor: Any = None

    def start(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            if self.cfg.address is None:
                with _quiet("ray._private.authentication"):
                    ray.init(
                        address="local",
                        include_dashboard=False,
                        _node_ip_address="127.0.0.1",
                        log_to_driver=False,
                        configure_logging=False,
                    )
            else:
                ray.init(address=self.cfg.address, log_to_driver=False, configure_logging=False)
            self.started = True
        n = self.cfg.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        common = {"num_cpus": 0, "max_concurrency": 100000}
        name = f"smtp-probe-governor-{self.run_id}"
        self.governor = ray.remote(Governor).options(name=name, **common).remote(self.cfg.limits)
        # Each actor takes its part of --concurrency; --per-host and --rate stay whole: the
        # governor holds them for all. Kept connections would stay open outside the
        # governor's count, so each session has its own (--reuse 1).
        limits = self.cfg.limits
        part = replace(
            self.cfg, limits=replace(limits, concurrency=max(1, limits.concurrency // n), reuse=1)
        )
        for i in range(n):
            holder = f"{self.run_id}-{i}"
            actor = ray.remote(Prober).options(
                name=f"smtp-probe-worker-{holder}", scheduling_strategy="SPREAD", **common
            )
            self.actors.append(actor.remote(part, self.governor, holder))
            self.holders.append(holder)
            self.alive.append(True)
            self.chunks.append(0)
        self.depth = max(2, part.limits.concurrency // CHUNK + 2)

    def stop(self) -> None:
        for a in [*self.actors, self.governor]:
            if a is not None:
                with contextlib.suppress(Exception):  # already gone
                    self.ray.kill(a)
        if self.started:
            self.ray.shutdown()

    def run(self, items: Iterable[Item]) -> None:
        self.start()
        try:
            self._loop(_Feed(iter(items), room=CHUNK * self.depth * len(self.actors)))
        finally:
            self.stop()

    def _loop(self, feed: _Feed) -> None:
        pending: dict[Any, tuple[int, _Chunk]] = {}
        retry: list[_Chunk] = []
        inflight = [0] * len(self.actors)
        while True:
            for i in range(len(self.actors)):
                while self.alive[i] and inflight[i] < self.depth:
                    chunk = retry.pop() if retry else None
                    if chunk is None:
                        # With nothing in flight there is nothing to collect: wait for input.
                        chunk = self._next_chunk(feed, None if pending else IDLE_WAIT)
                    if chunk is None:
                        break
                    pending[self.actors[i].run.remote(chunk.lines)] = (i, chunk)
                    inflight[i] += 1
            if not pending:
                if not any(self.alive):
                    self._lose_the_rest(feed, retry)
                    return
                if feed.ended:
                    return
                continue
            done, _ = self.ray.wait(
                list(pending), num_returns=1, timeout=1.0 if feed.ended else POLL
            )
            for ref in done:
                i, chunk = pending.pop(ref)
                inflight[i] -= 1
                self._settle(ref, i, chunk, retry)

    def _lose_the_rest(self, feed: _Feed, retry: list[_Chunk]) -> None:
        """No actor is left: every line not yet answered still gets its record."""
        for chunk in retry:
            self._lost(chunk, None)
        while not feed.ended:
            for line, text in feed.take(CHUNK, IDLE_WAIT):
                if isinstance(text, Refused):
                    self._write(refused_record(line, text))
                else:
                    self._write(lost_record(line, text, None))

    def _next_chunk(self, feed: _Feed, wait: float | None) -> _Chunk | None:
        """Up to CHUNK lines of what has been read (the first waited for up to `wait`)."""
        lines: list[tuple[int, str]] = []
        for line, text in feed.take(CHUNK, wait):
            if isinstance(text, Refused):  # nothing for an actor to do: recorded here
                self._write(refused_record(line, text))
                continue
            lines.append((line, text))
        return _Chunk(lines) if lines else None

    def _settle(self, ref: Any, i: int, chunk: _Chunk, retry: list[_Chunk]) -> None:
        try:
            records = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            if self.alive[i]:
                self.alive[i] = False
                self.governor.forget.remote(self.holders[i])
            chunk.tries += 1
            if chunk.tries > RETRIES or not any(self.alive):
                self._lost(chunk, type(e).__name__)
            else:
                retry.append(chunk)
            return
        self.chunks[i] += 1
        for rec in records:
            self._write(rec)

    def _lost(self, chunk: _Chunk, why: str | None) -> None:
        for line, text in chunk.lines:
            self._write(lost_record(line, text, why))

    def _write(self, rec: Record) -> None:
        self.on_record(to_json(rec) + "\n", rec)


def run_on_ray(
    items: Iterable[Item], cfg: RayConfig, on_record: Callable[[str, Record], None]
) -> None:
    """Probe every item on Ray; `on_record(line, record)` gets exactly one call per item."""
    RayRun(cfg, on_record).run(items)


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Warnings of logger `name` unsaid while the block runs. For the local cluster a run
    starts itself (on 127.0.0.1 only), Ray turns token authentication on and says so on
    stderr every time: its safe default, not news to the user of a batch."""
    import logging

    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
