"""Bulk probing: a stream of targets in, one JSON record per input line out, in completion order.

Concurrency is bounded overall and per MX address; DNS answers are cached for the run; a
session without RCPT to an address already probed is shared rather than repeated.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import dns.asyncresolver

from probe.catalog import Locale
from probe.render.probe import to_json
from probe.resolve import make_resolver
from probe.result import ProbeResult, Session
from probe.runner import ProbeRequest, probe
from probe.session import Kept, SessionOptions, open_session, release, reuse_session, run_session
from probe.target import TargetError, parse_target
from probe.verdict import exit_status

SCHEMA = "smtp-probe/batch/1"
ProbeFn = Callable[[ProbeRequest], Awaitable[ProbeResult]]


async def stream_targets(
    items: Iterator[tuple[int, str]], room: int = 1024
) -> AsyncIterator[tuple[int, str]]:
    """Targets from a blocking iterator (a file, a pipe), each as soon as it is read.

    A thread reads, so a slow pipe never stalls the loop, and at most `room` lines wait in
    memory, so a file of millions of lines is never held. The thread is a daemon: a run that
    ends early (Ctrl-C, the output closed) must not wait for a read that may never return.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, str] | BaseException | None] = asyncio.Queue()
    slots = threading.Semaphore(room)
    closed = threading.Event()

    def send(item: tuple[int, str] | BaseException | None) -> bool:
        if closed.is_set():
            return False
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone
            return False
        return True

    def read() -> None:
        try:
            for item in items:
                slots.acquire()
                if not send(item):
                    return
        except Exception as e:  # reading the input failed: the run ends with this error
            send(e)
            return
        send(None)

    threading.Thread(target=read, name="smtp-probe-input", daemon=True).start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            slots.release()
            yield item
    finally:
        closed.set()
        slots.release()  # a reader waiting for room wakes up, sees `closed` and stops


def fd_lines(fd: int, size: int = 65536) -> Iterator[str]:
    """Lines of a file descriptor, decoded as UTF-8 (bad bytes replaced), without a newline.

    Plain os.read, not a buffered file: a daemon thread blocked here holds no lock that the
    interpreter needs at exit.
    """
    pending = b""
    while chunk := os.read(fd, size):
        pending += chunk
        if b"\n" in chunk:
            *whole, pending = pending.split(b"\n")
            for raw in whole:
                yield raw.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


def read_targets(lines: Iterable[str]) -> Iterable[tuple[int, str]]:
    """(line number, text) for every line that names a target; blanks and # comments skipped."""
    for n, raw in enumerate(lines, 1):
        text = raw.strip()
        if text and not text.startswith("#"):
            yield n, text


class Limits:
    """Sessions at once per MX address, and targets started per second overall."""

    def __init__(self, per_host: int, rate: float | None) -> None:
        self.per_host = per_host
        self._sems: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_host))
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def _pace(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self._interval
        if wait > 0:
            await asyncio.sleep(wait)

    def slot(self, address: str, port: int) -> asyncio.Semaphore:
        return self._sems[f"{address}:{port}"]

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        async with self.slot(address, port):
            await self._pace()
            return await run_session(host, address, port, opts)


PoolKey = tuple[str, str, int, SessionOptions]


class Pool:
    """Connections kept open between targets, the way an MTA's connection cache keeps them.

    A target that checks recipients takes an idle connection to its MX address when there is
    one: MAIL, RCPT and RSET on it, instead of a new connection, greeting, EHLO and TLS
    handshake. Only the sessions running hold a slot of the per-host limit, and a new
    connection is opened only when none is idle, so the connections open to an address never
    outnumber the limit. A connection serves at most `reuse` targets and is closed (QUIT) after
    `idle` seconds unused.
    """

    def __init__(self, limits: Limits, reuse: int, idle: float = 2.0) -> None:
        self.limits = limits
        self.reuse = reuse
        self.idle = idle
        self._idle: dict[PoolKey, list[tuple[Kept, asyncio.TimerHandle]]] = defaultdict(list)
        self._closing: set[asyncio.Task[None]] = set()

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        key = (host, address, port, replace(opts, rcpts=()))
        async with self.limits.slot(address, port):
            await self.limits._pace()
            while (kept := self._take(key)) is not None:
                session, again = await reuse_session(kept, opts)
                if session is not None:
                    await self._park(key, again)
                    return session
            session, again = await open_session(host, address, port, opts)
            await self._park(key, again)
            return session

    def _take(self, key: PoolKey) -> Kept | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        kept, timer = idle.pop()
        timer.cancel()
        return kept

    async def _park(self, key: PoolKey, kept: Kept | None) -> None:
        """Under the caller's slot, so a connection being closed still counts against it."""
        if kept is None:
            return
        if kept.uses >= self.reuse:
            await release(kept)
            return
        timer = asyncio.get_running_loop().call_later(self.idle, self._expire, key, kept)
        self._idle[key].append((kept, timer))

    def _expire(self, key: PoolKey, kept: Kept) -> None:
        task = asyncio.get_running_loop().create_task(self._close_idle(key, kept))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_idle(self, key: PoolKey, kept: Kept) -> None:
        # It stays idle (and counted) until a slot is had; a target may take it meanwhile.
        async with self.limits.slot(kept.conv.address, kept.conv.port):
            idle = self._idle.get(key, [])
            for i, (k, _) in enumerate(idle):
                if k is kept:
                    del idle[i]
                    await release(kept)
                    return

    async def close(self, wait: float = 3.0) -> None:
        """QUIT every idle connection; after `wait` seconds, cut those still closing."""
        kept = [k for idle in self._idle.values() for k, _ in idle]
        for idle in self._idle.values():
            for _, timer in idle:
                timer.cancel()
        self._idle.clear()
        closing = [*self._closing, *(asyncio.ensure_future(release(k)) for k in kept)]
        if not closing:
            return
        # A slow server must not hold up the end of a run (or a Ctrl-C) for a whole command
        # timeout.
        _, late = await asyncio.wait(closing, timeout=wait)
        for task in late:
            task.cancel()
        await asyncio.gather(*closing, return_exceptions=True)
        for k in kept:
            k.conv.abort()


@dataclass
class SessionCache:
    """Shares sessions that check no recipient: many domains often point at one provider's MX.

    Sessions that do check recipients go through the pool, when there is one."""

    limits: Limits
    pool: Pool | None = None
    _done: dict[tuple[str, str, int, SessionOptions], asyncio.Future[Session]] = field(
        default_factory=dict
    )

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        if opts.rcpts:
            if self.pool is not None:
                return await self.pool.session(host, address, port, opts)
            return await self.limits.session(host, address, port, opts)
        key = (host, address, port, opts)
        fut = self._done.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._done[key] = fut
            try:
                fut.set_result(await self.limits.session(host, address, port, opts))
            except BaseException as e:
                fut.set_exception(e)
                fut.exception()  # retrieved: the caller below re-raises it
                del self._done[key]
                raise
        return await asyncio.shield(fut)


@dataclass
class Stats:
    done: int = 0
    errors: int = 0
    by_verdict: Counter[str] = field(default_factory=Counter)
    by_category: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def add(self, rec: dict[str, Any]) -> None:
        self.done += 1
        if "error" in rec:
            self.errors += 1
            self.by_verdict["error"] += 1
        else:
            self.by_verdict[rec["verdict"]] += 1
            self.by_category.update(_categories(rec))


def _categories(doc: dict[str, Any]) -> list[str]:
    out = []
    for s in doc.get("sessions", []):
        for st in s["steps"]:
            reply = st.get("reply")
            if reply and reply.get("category") and reply["category"] != "success":
                out.append(reply["category"])
    return out


async def run_batch(
    targets: AsyncIterator[tuple[int, str]],
    template: ProbeRequest,
    emit: Callable[[dict[str, Any]], None],
    loc: Locale,
    *,
    concurrency: int = 20,
    per_host: int = 2,
    rate: float | None = None,
    resolver: dns.asyncresolver.Resolver | None = None,
    probe_fn: ProbeFn | None = None,
    on_progress: Callable[[Stats], None] | None = None,
    reuse: int = 1,
) -> Stats:
    """Probe every target; exactly one record per target reaches `emit`, failures included.

    `reuse` > 1 lets a connection serve that many targets (see `Pool`)."""
    res = resolver or make_resolver(template.nameservers or None)
    limits = Limits(per_host, rate)
    pool = Pool(limits, reuse) if reuse > 1 else None
    cache = SessionCache(limits, pool)

    async def default_probe(req: ProbeRequest) -> ProbeResult:
        return await probe(req, resolver=res, session_fn=cache.session)

    run_one = probe_fn or default_probe
    stats = Stats()
    queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue(maxsize=concurrency * 2)

    async def one(n: int, text: str) -> dict[str, Any]:
        head: dict[str, Any] = {"schema": SCHEMA, "line": n, "input": text}
        try:
            t = parse_target(text)
        except TargetError as e:
            return {**head, "error": {"kind": "bad_target", "detail": str(e)}, "exit_status": 64}
        try:
            result = await run_one(replace(template, target=t))
        except Exception as e:  # one broken probe must never cost the others their records
            return {
                **head,
                "error": {"kind": "internal", "detail": f"{type(e).__name__}: {e}"},
                "exit_status": 70,
            }
        doc = to_json(result, loc)
        doc.pop("schema", None)
        return {**head, **doc, "exit_status": exit_status(result.verdict)}

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            rec = await one(*item)
            stats.add(rec)
            emit(rec)
            if on_progress is not None:
                on_progress(stats)

    async def feed() -> None:
        try:
            async for item in targets:
                await queue.put(item)
        finally:
            # Stopped early: close the input now (its reader thread ends), not at garbage
            # collection.
            aclose = getattr(targets, "aclose", None)
            if aclose is not None:
                await aclose()
        for _ in range(concurrency):
            await queue.put(None)

    tasks = [asyncio.create_task(feed())]
    tasks += [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        # A failing sink (the reader of stdout gone) ends the run at once; waiting for the
        # feeder alone would wait forever on a queue that nobody empties any more.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if not t.cancelled() and (exc := t.exception()) is not None:
                raise exc
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if pool is not None:
            await pool.close()
    return stats


def recorded_lines(path: str) -> set[int]:
    """Line numbers already in an output file; a torn last line (no newline) is ignored."""
    done: set[int] = set()
    try:
        with open(path, encoding="utf-8") as f:
            for raw in f:
                if not raw.endswith("\n"):
                    break
                try:
                    done.add(int(json.loads(raw)["line"]))
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return done
