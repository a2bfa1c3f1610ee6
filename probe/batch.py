"""Bulk probing: a stream of targets in, one JSON record per input line out, in completion order.

Concurrency is bounded overall and per MX address; DNS answers are cached for the run; a
session without RCPT to an address already probed is shared rather than repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import dns.asyncresolver

from probe.aio import cancel_all
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

    def slot(self, address: str, port: int) -> asyncio.Semaphore:
        return self._sems[f"{address}:{port}"]

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        async with self.slot(address, port):
            await self.pace()
            return await run_session(host, address, port, opts)


PoolKey = tuple[str, str, int, SessionOptions]
Address = tuple[str, int]


@dataclass(eq=False)  # entries are told apart by identity: one connection parks many times
class _Idle:
    key: PoolKey
    kept: Kept
    timer: asyncio.TimerHandle | None = None


class Pool:
    """Connections kept open between targets, the way an MTA's connection cache keeps them.

    A target that checks recipients takes an idle connection to the same MX (name, address
    and options) when there is one: MAIL, RCPT and RSET on it, instead of a new connection,
    greeting, EHLO and TLS handshake. Every session to an address, recipients or not, comes
    through here, so the connections open to it (running, idle or closing) never outnumber the
    per-host limit: running sessions and closings hold its slots, and before a new connection
    opens at the limit an idle one (of another name or options) is closed. A connection serves
    at most `reuse` targets and is closed with QUIT after `idle` seconds unused.
    """

    def __init__(self, limits: Limits, reuse: int, idle: float = 2.0) -> None:
        self.limits = limits
        self.reuse = reuse
        self.idle = idle
        self._idle: dict[Address, list[_Idle]] = {}
        self._open: Counter[Address] = Counter()
        self._closing: set[asyncio.Task[None]] = set()

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        addr = (address, port)
        key = (host, address, port, replace(opts, rcpts=()))
        slot = self.limits.slot(address, port)
        await slot.acquire()
        handed_on = False
        try:
            await self.limits.pace()
            # One budget for the address, whatever kept connections cost before a new one.
            deadline = time.monotonic() + opts.budget
            failed = False
            if opts.rcpts:
                while (kept := self._take(addr, key)) is not None:
                    try:
                        session, again = await reuse_session(kept, _until(opts, deadline))
                    except BaseException:
                        self._open[addr] -= 1  # cut by reuse_session
                        raise
                    if session is not None and again is not None:
                        handed_on = self._park(addr, key, again, slot)
                        return session
                    self._open[addr] -= 1  # reuse_session closed it
                    if session is not None:
                        return session
                    failed = True
            await self._make_room(addr)
            # Time spent making room is not the new session's; a failed kept one's time is.
            fresh = _until(opts, deadline) if failed else opts
            self._open[addr] += 1
            if not opts.rcpts:
                try:
                    return await run_session(host, address, port, fresh)
                finally:
                    self._open[addr] -= 1
            try:
                session, again = await open_session(host, address, port, fresh)
            except BaseException:
                self._open[addr] -= 1
                raise
            if again is None:
                self._open[addr] -= 1
            if failed:
                session = _noted(session, FRESH_NOTE)
            handed_on = self._park(addr, key, again, slot)
            return session
        finally:
            if not handed_on:
                slot.release()

    def _take(self, addr: Address, key: PoolKey) -> Kept | None:
        idle = self._idle.get(addr, [])
        for i in range(len(idle) - 1, -1, -1):
            if idle[i].key == key:
                entry = idle.pop(i)
                if not idle:
                    del self._idle[addr]
                if entry.timer is not None:
                    entry.timer.cancel()
                return entry.kept
        return None

    async def _make_room(self, addr: Address) -> None:
        """Under a slot: at the limit, close an idle connection before a new one opens."""
        while self._open[addr] >= self.limits.per_host and (idle := self._idle.get(addr)):
            entry = idle.pop(0)
            if not idle:
                del self._idle[addr]
            if entry.timer is not None:
                entry.timer.cancel()
            # A server slow to answer QUIT must not hold up the target waiting for room.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._release(addr, entry.kept)

    def _park(
        self, addr: Address, key: PoolKey, kept: Kept | None, slot: asyncio.Semaphore
    ) -> bool:
        """Keep a connection for the next target; True when `slot` went to its closing."""
        if kept is None:
            return False
        if kept.uses >= self.reuse:
            # The record is ready: close in the background, the slot held until it is done.
            self._spawn(self._release(addr, kept), slot)
            return True
        entry = _Idle(key, kept)
        entry.timer = asyncio.get_running_loop().call_later(self.idle, self._expire, addr, entry)
        self._idle.setdefault(addr, []).append(entry)
        return False

    def _expire(self, addr: Address, entry: _Idle) -> None:
        self._spawn(self._close_idle(addr, entry), None)

    async def _close_idle(self, addr: Address, entry: _Idle) -> None:
        # It stays idle, and counted, until a slot is had; a target may take it meanwhile
        # (then this entry, timer and all, is no longer in the list).
        async with self.limits.slot(*addr):
            idle = self._idle.get(addr, [])
            if entry in idle:  # still this parking of it, not a later one
                idle.remove(entry)
                if not idle:
                    del self._idle[addr]
                await self._release(addr, entry.kept)

    async def _release(self, addr: Address, kept: Kept) -> None:
        try:
            await release(kept)
        finally:
            self._open[addr] -= 1

    def _spawn(self, work: Coroutine[Any, Any, None], slot: asyncio.Semaphore | None) -> None:
        async def run() -> None:
            try:
                await work
            finally:
                if slot is not None:
                    slot.release()

        task = asyncio.get_running_loop().create_task(run())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self, wait: float = 3.0) -> None:
        """QUIT every idle connection; after `wait` seconds, cut those still closing."""
        for addr, idle in list(self._idle.items()):
            for entry in idle:
                if entry.timer is not None:
                    entry.timer.cancel()
                self._spawn(self._release(addr, entry.kept), None)
        self._idle.clear()
        closing = list(self._closing)
        if not closing:
            return
        # A slow server must not hold up the end of a run (or a Ctrl-C) for a whole command
        # timeout; a release cut short aborts its connection.
        await asyncio.wait(closing, timeout=wait)
        await cancel_all(closing)  # those still closing


FRESH_NOTE = "a kept connection failed before answering for this target; this is a new one"


def _until(opts: SessionOptions, deadline: float) -> SessionOptions:
    return replace(opts, budget=round(max(0.1, deadline - time.monotonic()), 1))


def _noted(session: Session, note: str) -> Session:
    first, *rest = session.steps or (None,)
    if first is None:
        return session
    text = f"{first.note}; {note}" if first.note else note
    return replace(session, steps=(replace(first, note=text), *rest))


@dataclass
class SessionCache:
    """Shares sessions that check no recipient: many domains often point at one provider's MX.

    Every session goes through the pool when there is one, so that it keeps the per-host limit
    over kept connections too."""

    limits: Limits
    pool: Pool | None = None
    _done: dict[tuple[str, str, int, SessionOptions], asyncio.Future[Session]] = field(
        default_factory=dict
    )

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        runner = self.pool or self.limits
        if opts.rcpts:
            return await runner.session(host, address, port, opts)
        key = (host, address, port, opts)
        fut = self._done.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._done[key] = fut
            try:
                fut.set_result(await runner.session(host, address, port, opts))
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
    sessions: int = 0
    reused: int = 0  # sessions run on a connection kept from an earlier target
    started: float = field(default_factory=time.monotonic)

    def add(self, rec: dict[str, Any]) -> None:
        self.done += 1
        if "error" in rec:
            self.errors += 1
            self.by_verdict["error"] += 1
        else:
            self.by_verdict[rec["verdict"]] += 1
            self.by_category.update(_categories(rec))
            for s in rec.get("sessions", ()):
                self.sessions += 1
                self.reused += bool(s.get("reused"))


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
    res = resolver or make_resolver(template.nameservers or None, lifetime=template.dns_timeout)
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
        await cancel_all(tasks)
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
