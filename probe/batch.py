"""Bulk probing: a stream of targets in, one JSON record per input line out, in completion order.

Concurrency is bounded overall and per MX address (`probe.limits`); connections are kept
between targets (`probe.pool`); DNS answers are cached for the run; a session without RCPT to
an address already probed is shared rather than repeated.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
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

SCHEMA = "smtp-probe/batch/2"
Record = dict[str, object]  # one output line: a probe's JSON document, or an error
ProbeFn = Callable[[ProbeRequest], Awaitable[ProbeResult]]
# Bytes in one input line, its newline not counted. The longest target the grammar allows (a
# 64-byte local part, "@", a 253-character domain written in UTF-8, a port) is well under it.
MAX_LINE = 4096
# Bytes in one line of --output read back by --resume: far more than any record we write
# (a reply is at most 32 KB, a session has a few steps, a target a few sessions), so a
# longer line means the file is not batch output (a sparse file of zeros, say).
MAX_RECORD = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Refused:
    """An input line that cannot name a target (too long, not UTF-8); its record says why."""

    text: str  # as much of the line as was kept, bad bytes replaced
    detail: str


Item = tuple[int, "str | Refused"]  # (line number, target text or why there is none)


class OutputFileError(ValueError):
    """--resume cannot read back the output file; the message is one line for the user."""


async def stream_targets(items: Iterator[Item], room: int = 1024) -> AsyncIterator[Item]:
    """Targets from a blocking iterator (a file, a pipe), each as soon as it is read.

    A thread reads, so a slow pipe never stalls the loop, and at most `room` lines wait in
    memory, so a file of millions of lines is never held. The thread is a daemon: a run that
    ends early (Ctrl-C, the output closed) must not wait for a read that may never return.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Item | BaseException | None] = asyncio.Queue()
    slots = threading.Semaphore(room)
    closed = threading.Event()

    def send(item: Item | BaseException | None) -> bool:
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


def raw_lines(fd: int, limit: int | None = None, size: int = 65536) -> Iterator[bytes]:
    """The lines of a file descriptor, each with its newline (the last may have none).

    Time linear in the input, however long its lines. A line over `limit` bytes comes as its
    first limit + 1 bytes, as soon as they are read (an endless line must not wait for its
    end); the rest is skipped on the way to its newline, never held. Plain os.read, not a
    buffered file: a daemon thread blocked here holds no lock the interpreter needs at exit.
    """
    keep = sys.maxsize if limit is None else limit + 1
    line = bytearray()
    skipping = False  # the line in hand passed the limit and went out: drop to its newline
    while chunk := os.read(fd, size):
        view, start = memoryview(chunk), 0
        while True:
            end = chunk.find(b"\n", start)
            if not skipping:
                stop = len(chunk) if end < 0 else end
                line += view[start : min(stop, start + keep - len(line))]
                if len(line) == keep:
                    skipping = True
                    yield bytes(line)
                    line.clear()
            if end < 0:
                break
            if not skipping:
                line += b"\n"
                yield bytes(line)
                line.clear()
            skipping = False
            start = end + 1
    if line:
        yield bytes(line)


def fd_lines(fd: int) -> Iterator[str]:
    """Lines of a trusted descriptor (a worker's input from its parent), without a newline."""
    for raw in raw_lines(fd):
        yield raw.removesuffix(b"\n").decode("utf-8", "replace")


def input_lines(fd: int, limit: int = MAX_LINE) -> Iterator[str | Refused]:
    """The lines of a batch input: each line's text, or why it cannot be a target."""
    for raw in raw_lines(fd, limit):
        data = raw.removesuffix(b"\n")
        if len(data) > limit:
            shown = data[:limit].decode("utf-8", "replace")
            yield Refused(shown, f"the line is longer than {limit} bytes")
            continue
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError as e:
            shown = data.decode("utf-8", "replace")
            yield Refused(shown, f"the line is not UTF-8 (byte {e.start + 1} of {len(data)})")


def read_targets(lines: Iterable[str | Refused]) -> Iterator[Item]:
    """(line number, text) for every line that names a target; blanks and # comments skipped,
    and so is a UTF-8 byte-order mark at the start (editors on Windows write one)."""
    for n, raw in enumerate(lines, 1):
        text = raw.text if isinstance(raw, Refused) else raw
        if n == 1:
            text = text.removeprefix("\ufeff")
        text = text.strip()
        if isinstance(raw, Refused):
            if not text.startswith("#"):
                yield n, Refused(text, raw.detail)
        elif text and not text.startswith("#"):
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
    # Records that did not meet every --expect (an error record meets none).
    unmet: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, rec: Mapping[str, object]) -> None:
        """Count a record (ours, or one read back from a worker's output)."""
        self.done += 1
        if "error" in rec:
            self.errors += 1
            self.unmet += 1
            self.by_verdict["error"] += 1
            return
        self.by_verdict[str(rec.get("verdict"))] += 1
        self.unmet += any(e.get("met") is not True for e in _dicts(rec.get("expectations")))
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


def internal_record(n: int, text: str, e: Exception) -> dict[str, object]:
    detail = f"{type(e).__name__}: {e}"
    return error_record(n, text, "internal", detail, exitcodes.SOFTWARE)


def refused_record(n: int, item: Refused) -> dict[str, object]:
    """The record of an input line that could not even be read as a target."""
    return error_record(n, item.text, "bad_input", item.detail, exitcodes.USAGE)


def runner_for(limits: Limits, run: RunContext) -> tuple[SessionRunner, Pool | None]:
    """Sessions within the limits: through a pool when connections serve several targets."""
    pool = Pool(limits, run) if limits.config.reuse > 1 else None
    inner: SessionRunner = pool if pool is not None else Limited(limits, run)
    return SessionCache(inner), pool


async def run_batch(
    targets: AsyncIterator[Item],
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

    async def one(n: int, item: str | Refused) -> Record:
        if isinstance(item, Refused):
            return refused_record(n, item)
        try:
            t = parse_target(item)
        except TargetError as e:
            return error_record(n, item, "bad_target", str(e), exitcodes.USAGE)
        except Exception as e:  # a bug in the parser costs this line its probe, not the run
            return internal_record(n, item, e)
        try:
            result = await run_one(replace(template, target=t))
        except Exception as e:  # one broken probe must never cost the others their records
            return internal_record(n, item, e)
        doc = render.document(result)
        doc.pop("schema", None)
        head = {"schema": SCHEMA, "line": n, "input": item}
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
    targets: AsyncIterator[Item],
    one: Callable[[int, str | Refused], Awaitable[Record]],
    record: Callable[[Record], None],
    concurrency: int,
) -> None:
    """`concurrency` workers take targets from a bounded queue, in completion order."""
    queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=concurrency * 2)

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
    """Line numbers already in an output file; a torn last line (no newline) is ignored.

    Only a regular file is read, in bounded pieces: a device (/dev/zero), a FIFO or a file
    with a line no record could make would otherwise block or fill memory.
    """
    fd = _open_regular(path)
    if fd is None:
        return set()
    done: set[int] = set()
    try:
        for raw in raw_lines(fd, MAX_RECORD):
            if len(raw.removesuffix(b"\n")) > MAX_RECORD:
                raise OutputFileError(
                    f"{path} has a line longer than {MAX_RECORD // 2**20} MB: it is not "
                    "batch output; refusing to resume from it"
                )
            if not raw.endswith(b"\n"):
                break
            try:
                done.add(int(json.loads(raw)["line"]))
            except (ValueError, KeyError, TypeError):
                continue
    finally:
        os.close(fd)
    return done


def _open_regular(path: str) -> int | None:
    """A read descriptor for an existing regular file; None when there is no file."""
    try:
        # Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputFileError(f"{path} is not a regular file; --resume reads back only files")
    os.set_blocking(fd, True)
    return fd


def torn_tail(path: str) -> int | None:
    """The size of an output file that ends in a torn line (no newline), else None.

    Reads only the last byte, so a file of any size costs nothing; a missing file, or one that
    is not a regular file (/dev/stdout, a FIFO), has no tail to tear.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        return st.st_size if os.pread(fd, 1, st.st_size - 1) != b"\n" else None
    finally:
        os.close(fd)


def drop_torn_tail(path: str) -> None:
    """Cut a torn last line (what an interrupted write leaves) so that --resume probes its
    target again; reads backwards from the end in pieces, never the whole file."""
    size = torn_tail(path)
    if size is None:
        return
    with open(path, "rb+") as f:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            cut = f.read(end - start).rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            end = start
        f.truncate(0)
