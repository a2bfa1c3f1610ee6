"""Bulk probing: a stream of targets in, one JSON record per input line out, in completion order.

Concurrency is bounded overall and per MX address (`probe.limits`); connections are kept
between targets (`probe.pool`); DNS answers are cached for the run; a session without RCPT to
an address already probed is shared rather than repeated.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from probe import exitcodes
from probe.aio import cancel_all
from probe.catalog import Locale
from probe.config import BatchLimits, ProbeRequest, SessionOptions
from probe.context import RunContext
from probe.limits import Limited, Limits
from probe.pool import Pool
from probe.render.probe import ProbeJson
from probe.resolve import Resolver, make_resolver
from probe.result import ProbeResult, Session
from probe.runner import probe
from probe.session import SessionRunner
from probe.target import TargetError, parse_target
from probe.verdict import exit_status

SCHEMA = "smtp-probe/batch/1"
Record = dict[str, object]  # one output line: a probe's JSON document, or an error
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


@dataclass
class SessionCache:
    """Shares sessions that check no recipient: many domains often point at one provider's MX.

    Sessions with recipients, and the first of each kind without, go to `runner` (the pool
    when connections are kept, so the per-host limit covers kept connections too)."""

    runner: SessionRunner
    _done: dict[tuple[str, str, int, SessionOptions], asyncio.Future[Session]] = field(
        default_factory=dict
    )

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        if opts.rcpts:
            return await self.runner.session(host, address, port, opts)
        key = (host, address, port, opts)
        fut = self._done.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._done[key] = fut
            try:
                fut.set_result(await self.runner.session(host, address, port, opts))
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

    def add(self, rec: Mapping[str, object]) -> None:
        """Count a record (ours, or one read back from a worker's output)."""
        self.done += 1
        if "error" in rec:
            self.errors += 1
            self.by_verdict["error"] += 1
            return
        self.by_verdict[str(rec.get("verdict"))] += 1
        for s in _dicts(rec.get("sessions")):
            self.sessions += 1
            self.reused += bool(s.get("reused"))
            for st in _dicts(s.get("steps")):
                reply = st.get("reply")
                category = reply.get("category") if isinstance(reply, dict) else None
                if isinstance(category, str) and category != "success":
                    self.by_category[category] += 1


def _dicts(value: object) -> list[Mapping[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def error_record(n: int, text: str, kind: str, detail: str, status: int) -> dict[str, object]:
    """The record of an input line that got no probe result."""
    return {
        "schema": SCHEMA,
        "line": n,
        "input": text,
        "error": {"kind": kind, "detail": detail},
        "exit_status": status,
    }


def runner_for(limits: Limits, run: RunContext) -> tuple[SessionRunner, Pool | None]:
    """Sessions within the limits: through a pool when connections serve several targets."""
    pool = Pool(limits, run) if limits.config.reuse > 1 else None
    inner: SessionRunner = pool if pool is not None else Limited(limits, run)
    return SessionCache(inner), pool


async def run_batch(
    targets: AsyncIterator[tuple[int, str]],
    template: ProbeRequest,
    emit: Callable[[Record], None],
    loc: Locale,
    *,
    limits: BatchLimits | None = None,
    resolver: Resolver | None = None,
    probe_fn: ProbeFn | None = None,
    on_progress: Callable[[Stats], None] | None = None,
) -> Stats:
    """Probe every target; exactly one record per target reaches `emit`, failures included."""
    config = limits or BatchLimits()
    run = RunContext()
    res = resolver or make_resolver(template.nameservers or None, lifetime=template.dns_timeout)
    runner, pool = runner_for(Limits(config), run)
    render = ProbeJson(loc, remember=4096)

    async def default_probe(req: ProbeRequest) -> ProbeResult:
        return await probe(req, resolver=res, runner=runner, run=run)

    run_one = probe_fn or default_probe
    stats = Stats()

    async def one(n: int, text: str) -> Record:
        try:
            t = parse_target(text)
        except TargetError as e:
            return error_record(n, text, "bad_target", str(e), exitcodes.USAGE)
        try:
            result = await run_one(replace(template, target=t))
        except Exception as e:  # one broken probe must never cost the others their records
            detail = f"{type(e).__name__}: {e}"
            return error_record(n, text, "internal", detail, exitcodes.SOFTWARE)
        doc = render.document(result)
        doc.pop("schema", None)
        head = {"schema": SCHEMA, "line": n, "input": text}
        return {**head, **doc, "exit_status": exit_status(result.verdict)}

    def record(rec: Record) -> None:
        stats.add(rec)
        emit(rec)
        if on_progress is not None:
            on_progress(stats)

    try:
        await _drive(targets, one, record, config.concurrency)
    finally:
        if pool is not None:
            await pool.close()
    return stats


async def _drive(
    targets: AsyncIterator[tuple[int, str]],
    one: Callable[[int, str], Awaitable[Record]],
    record: Callable[[Record], None],
    concurrency: int,
) -> None:
    """`concurrency` workers take targets from a bounded queue, in completion order."""
    queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue(maxsize=concurrency * 2)

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            record(await one(*item))

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
