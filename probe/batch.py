"""Bulk probing: a stream of targets in, one JSON record per input line out, in completion order.

Concurrency is bounded overall and per MX address (`probe.limits`); connections are kept
between targets (`probe.pool`); DNS answers are cached for the run; a session without RCPT to
an address already probed is shared rather than repeated. Reading the input and the output
file is `probe.batchinput`'s job.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from probe import exitcodes
from probe.aio import cancel_all
from probe.batchinput import Item, Refused
from probe.catalog import Locale
from probe.config import BatchLimits, ProbeRequest, SessionOptions, changed
from probe.context import RunContext
from probe.limits import Limited, Limits
from probe.messages import Message, carried, message_json
from probe.mxcache import DEFAULT_MAX_AGE, Hit, MxStore, cacheable, fact_key
from probe.pool import Pool
from probe.render.probe import ProbeJson
from probe.resolve import Resolver, lookup, make_resolver
from probe.result import DnsStatus, ProbeResult, Session, Target
from probe.runner import probe
from probe.session import SessionRunner
from probe.shard import best_mx, registrable, shard_of
from probe.target import TargetError, parse_target

SCHEMA = "smtp-probe/batch/2"
Record = dict[str, object]  # one output line: a probe's JSON document, or an error
ProbeFn = Callable[[ProbeRequest], Awaitable[ProbeResult]]
Shared = tuple[Session, str, float]  # a session, where it came from, when (time.time())


@dataclass
class SessionCache:
    """Shares sessions that check no recipient: many domains often point at one provider's MX.

    Sessions with recipients, and the first of each kind without, go to `runner` (the pool
    when connections are kept, so the per-host limit covers kept connections too). With a
    `store` (--cache FILE), a session kept there from an earlier run, younger than `max_age`,
    stands in for the first one too, and every new one that completed is kept for the next.
    `lookup` says where each session's facts came from."""

    runner: SessionRunner
    store: MxStore | None = None
    max_age: float = DEFAULT_MAX_AGE
    _done: dict[tuple[str, str, int, SessionOptions], asyncio.Future[Shared]] = field(
        default_factory=dict
    )

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        return (await self.lookup(host, address, port, opts))[0]

    async def lookup(
        self, host: str, address: str, port: int, opts: SessionOptions
    ) -> tuple[Session, Hit | None]:
        if opts.rcpts:
            if isinstance(self.runner, Pool):
                s, age = await self.runner.serve(host, address, port, opts)
                return s, None if age is None else Hit("connection", age)
            return await self.runner.session(host, address, port, opts), None
        # Which local address a session leaves from changes none of its facts.
        key = (host, address, port, replace(opts, source_address=None))
        fut = self._done.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._done[key] = fut
            try:
                shared = await self._first(host, address, port, opts)
            except BaseException as e:
                fut.set_exception(e)
                fut.exception()  # retrieved: the caller below re-raises it
                del self._done[key]
                raise
            fut.set_result(shared)
            if shared[1] == "new":
                return shared[0], None
        s, source, born = await asyncio.shield(fut)
        return s, Hit("file" if source == "file" else "run", max(0.0, time.time() - born))

    async def _first(self, host: str, address: str, port: int, opts: SessionOptions) -> Shared:
        """The first session of its kind in this run: from the file, or a new one."""
        key = fact_key(host, address, port, opts) if self.store is not None else ""
        if self.store is not None and (got := self.store.get(key, self.max_age)) is not None:
            return got[0], "file", time.time() - got[1]
        s = await self.runner.session(host, address, port, opts)
        if self.store is not None and cacheable(s):
            self.store.put(key, s)
        return s, "new", time.time()


@dataclass
class Tracked:
    """One target's view of the run's `SessionCache`: notes, in the order its sessions ran,
    where each one's facts came from (None: this session's own)."""

    cache: SessionCache
    picker: SourcePicker | None = None
    hits: list[Hit | None] = field(default_factory=list)

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        if self.picker is not None:
            opts = self.picker.pick(host, address, opts)
        s, hit = await self.cache.lookup(host, address, port, opts)
        self.hits.append(hit)
        return s


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
    cached: int = 0  # sessions whose facts came from the run's or the file's cache
    skipped: int = 0  # targets of other shards (--shard)
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
            self.cached += isinstance(s.get("cache"), dict) and not s.get("reused")
            self._categories(s.get("steps"))

    def add_result(self, r: ProbeResult, hits: Sequence[Hit | None]) -> None:
        """Count a probe as `add` counts its record, read from the typed result rather than
        from the record's dicts (`hits`: where each session's facts came from)."""
        self.done += 1
        self.by_verdict[r.verdict.value] += 1
        self.unmet += any(not e.met for e in r.expectations)
        for i, s in enumerate(r.sessions):
            self.sessions += 1
            self.reused += s.reused
            self.cached += i < len(hits) and hits[i] is not None and not s.reused
            for st in s.steps:
                meaning = st.reply.interpretation if st.reply is not None else None
                if meaning is not None and meaning.category != "success":
                    self.by_category[meaning.category] += 1

    def _categories(self, steps: object) -> None:
        """Count the categories of the replies that were not a success."""
        for st in steps if isinstance(steps, list) else ():
            try:  # (a record of ours always has these; one read back may not)
                category = st["reply"]["category"]
            except (KeyError, TypeError, IndexError):  # no reply (null), or no mapping
                continue
            if category != "success" and isinstance(category, str):
                self.by_category[category] += 1


def _dicts(value: object) -> list[Mapping[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def error_record(n: int, text: str, kind: str, detail: str, status: int) -> dict[str, object]:
    """The record of an input line that got no probe result; a detail that is one of our
    sentences has its id and parameters beside it, for reports in other languages."""
    error: dict[str, object] = {"kind": kind, "detail": detail}
    if isinstance(detail, Message):
        error["message"] = message_json(detail)
    return {"schema": SCHEMA, "line": n, "input": text, "error": error, "exit_status": status}


def internal_record(n: int, text: str, e: Exception) -> dict[str, object]:
    detail = f"{type(e).__name__}: {e}"
    return error_record(n, text, "internal", detail, exitcodes.SOFTWARE)


def refused_record(n: int, item: Refused) -> dict[str, object]:
    """The record of an input line that could not even be read as a target."""
    return error_record(n, item.text, "bad_input", item.detail, exitcodes.USAGE)


@dataclass(frozen=True, slots=True)
class Scale:
    """How a run spreads beyond one process: the MX facts file (--cache, --max-age), the
    shard it is (--shard K/N: K counted from 1) and the local addresses it leaves from."""

    cache_file: str | None = None
    max_age: float = DEFAULT_MAX_AGE
    shard: tuple[int, int] | None = None
    sources: tuple[str, ...] = ()


@dataclass
class SourcePicker:
    """--source-address: each provider's sessions leave from the addresses in turn (those of
    the MX address's family), so that every address carries a share of every provider."""

    addresses: tuple[str, ...]
    _next: dict[str, int] = field(default_factory=dict)

    def pick(self, host: str, address: str, opts: SessionOptions) -> SessionOptions:
        version = ipaddress.ip_address(address).version
        same = [a for a in self.addresses if ipaddress.ip_address(a).version == version]
        if not same:
            return opts
        provider = registrable(host)
        turn = self._next.get(provider, 0)
        self._next[provider] = turn + 1
        return replace(opts, source_address=same[turn % len(same)])


def runner_for(
    limits: Limits, run: RunContext, store: MxStore | None = None, max_age: float = DEFAULT_MAX_AGE
) -> tuple[SessionCache, Pool | None]:
    """Sessions within the limits: through a pool when connections serve several targets."""
    pool = Pool(limits, run) if limits.config.reuse > 1 else None
    inner: SessionRunner = pool if pool is not None else Limited(limits, run)
    return SessionCache(inner, store, max_age), pool


async def shard_key(res: Resolver, target: Target, text: str) -> str:
    """The provider a target belongs to (`probe.shard`): its best MX host's registrable
    domain; the domain's own when it has no usable MX or DNS fails."""
    if target.kind in ("domain", "address") and target.domain:
        found = await lookup(res, target.domain, "MX")
        if found.status is DnsStatus.OK:
            hosts = []
            for rec in found.records:
                pref, _, exch = rec.partition(" ")
                if exch.rstrip("."):
                    hosts.append((int(pref), exch.rstrip(".")))
            if (best := best_mx(hosts)) is not None:
                return registrable(best)
        return registrable(target.domain)
    return registrable(target.host or text)


@dataclass
class _Targets:
    """What one run does with each input line: parse it, keep it to its shard, probe it."""

    template: ProbeRequest
    scale: Scale
    res: Resolver
    cache: SessionCache
    render: ProbeJson
    probe_fn: ProbeFn | None
    run: RunContext = field(default_factory=RunContext)
    picker: SourcePicker | None = None
    stats: Stats = field(default_factory=Stats)

    async def one(self, n: int, item: str | Refused) -> Record | None:
        """The line's record, counted in `stats`; None for a line of another shard."""
        rec = await self._record(n, item)
        if rec is not None and "error" in rec:
            self.stats.add(rec)
        return rec

    async def _record(self, n: int, item: str | Refused) -> Record | None:
        mine = _mine(self.scale, item.text if isinstance(item, Refused) else item)
        if isinstance(item, Refused):
            return refused_record(n, item) if mine else None
        try:
            t = parse_target(item)
        except TargetError as e:
            rec = error_record(n, item, "bad_target", carried(e), exitcodes.USAGE)
            return rec if mine else None
        except Exception as e:  # a bug in the parser costs this line its probe, not the run
            return internal_record(n, item, e) if mine else None
        tracked = Tracked(self.cache, self.picker)
        try:
            if self.scale.shard and not await self._in_shard(t, item):
                return None
            req = changed(self.template, target=t)
            if self.probe_fn is not None:
                result = await self.probe_fn(req)
            else:
                result = await probe(req, resolver=self.res, runner=tracked, run=self.run)
        except Exception as e:  # one broken probe must never cost the others their records
            return internal_record(n, item, e)
        doc = self.render.document(result, {"schema": SCHEMA, "line": n, "input": item})
        _mark_hits(doc, tracked.hits)
        self.stats.add_result(result, tracked.hits)
        return doc

    async def _in_shard(self, t: Target, text: str) -> bool:
        shard = self.scale.shard
        return not shard or shard_of(await shard_key(self.res, t, text), shard[1]) == shard[0]


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
    scale: Scale | None = None,
    on_skip: Callable[[int], None] | None = None,
    shared: Limits | None = None,
) -> Stats:
    """Probe every target; exactly one record per target reaches `emit`, failures included.

    With `scale.shard`, targets of other shards get no record: `on_skip(line)` hears of them.
    `shared`: limits held outside this run (a cluster's governor) instead of its own.
    """
    config, scale = limits or BatchLimits(), scale or Scale()
    run = RunContext()
    res = resolver or make_resolver(template.nameservers or None, lifetime=template.dns_timeout)
    store = MxStore.open(scale.cache_file) if scale.cache_file else None
    cache, pool = runner_for(shared or Limits(config), run, store, scale.max_age)
    picker = SourcePicker(scale.sources) if scale.sources else None
    render = ProbeJson(loc, remember=4096)
    stats = Stats()
    lines = _Targets(template, scale, res, cache, render, probe_fn, run, picker, stats)

    def record(n: int, rec: Record | None) -> None:
        if rec is None:
            stats.skipped += 1
            if on_skip is not None:
                on_skip(n)
            return
        emit(rec)  # (counted already, by `lines.one`)
        if on_progress is not None:
            on_progress(stats)

    try:
        await _drive(targets, lines.one, record, config.concurrency)
    finally:
        if pool is not None:
            await pool.close()
        if store is not None:
            store.close()
    return stats


def _mine(scale: Scale, text: str) -> bool:
    """Whether a line with no target to look up belongs to this shard (by its text)."""
    return not scale.shard or shard_of(text, scale.shard[1]) == scale.shard[0]


def _mark_hits(doc: dict[str, object], hits: list[Hit | None]) -> None:
    """Each session's record says where its facts came from (null: its own)."""
    sessions = doc.get("sessions")
    if isinstance(sessions, list):
        for i, s in enumerate(sessions):
            if isinstance(s, dict):
                hit = hits[i] if i < len(hits) else None
                s["cache"] = hit.json() if hit is not None else None


async def _drive(
    targets: AsyncIterator[Item],
    one: Callable[[int, str | Refused], Awaitable[Record | None]],
    record: Callable[[int, Record | None], None],
    concurrency: int,
) -> None:
    """`concurrency` workers take targets from a bounded queue, in completion order."""
    queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=concurrency * 2)

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            record(item[0], await one(*item))

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
