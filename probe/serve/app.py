"""The exporter's HTTP side on aiohttp: `/probe` (a target's metrics, cached and shared),
`/metrics` (the exporter's own), `/` (recent probes)."""

from __future__ import annotations

import asyncio
import html
import time
from collections import deque
from dataclasses import replace
from typing import NamedTuple
from urllib.parse import urlencode

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

from probe.catalog import locale
from probe.config import BatchLimits, SessionOptions, Timeouts
from probe.context import RunContext
from probe.limits import Limited, Limits
from probe.messages import carried, msg, say
from probe.metrics import Memory, Snapshot, remember, samples, success, throttle_sign
from probe.render import probe as probe_render
from probe.resolve import Resolver, make_resolver
from probe.result import (
    DnsResult,
    DnsStatus,
    ErrorKind,
    Outcome,
    ProbeResult,
    Session,
    Step,
    StepError,
    Target,
    TlsInfo,
    Verdict,
)
from probe.runner import probe
from probe.serve.cache import Results
from probe.serve.expose import exposition
from probe.serveconf import BadQuery, Module, ServeConfig, cache_key, query, refused

SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
OFFSET = 0.5  # seconds left for the answer to travel, as blackbox_exporter's --timeout-offset
GRACE = 1.0  # the probe's own bounds end it first; this is the backstop
TEXT = "text/plain"
OPENMETRICS = "text/plain; version=0.0.4; charset=utf-8"


class Refused(Exception):
    """A target the policy refuses; raised before any connection is made."""


class _Recent(NamedTuple):
    when: float
    target: str
    module: str
    snap: Snapshot


class _Watch:
    """A probe's observer: the DNS time, and every address checked before the first session."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self.started = time.perf_counter()
        self.dns: DnsResult | None = None
        self.dns_seconds: float | None = None

    def resolved(self, dns: DnsResult) -> None:
        self.dns, self.dns_seconds = dns, time.perf_counter() - self.started
        for host in dns.mx:
            for address in host.addresses:
                why = self.exporter.config.targets.address_refused(address)
                if why is not None:
                    raise Refused(why)

    def session_started(self, host: str, address: str, port: int) -> None: ...
    def tls(self, info: TlsInfo) -> None: ...
    def step(self, step: Step) -> None: ...
    def session_ended(self, session: Session) -> None: ...


def _within(t: Timeouts, left: float) -> Timeouts:
    # Each wait ends before the session's budget does: a budget that runs out while the
    # connection is being opened cannot close it (the session does not hold it yet).
    wait = left * 0.9
    return Timeouts(
        connect=min(t.connect, wait),
        greeting=min(t.greeting, wait),
        command=min(t.command, wait),
        dns=min(t.dns, wait),
        budget=min(t.budget, left),
    )


class _Guarded:
    """Sessions within the exporter's limits and the scrape's deadline, to allowed addresses."""

    def __init__(self, exporter: Exporter, inner: Limited, deadline: float) -> None:
        self.exporter, self.inner, self.deadline = exporter, inner, deadline

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        why = self.exporter.config.targets.address_refused(address)
        if why is not None:
            raise Refused(why)
        left = self.deadline - asyncio.get_running_loop().time()
        if left < 0.1:
            err = StepError(ErrorKind.BUDGET, msg("http.no_time_left"))
            step = Step("CONNECT", None, None, 0.0, err)
            return Session(host, address, port, (step,), TlsInfo(False, False), (), Outcome.BUDGET)
        opts = replace(opts, timeouts=_within(opts.timeouts, left))
        async with self.exporter.sessions:
            return await self.inner.session(host, address, port, opts)


def _timed_out(target: Target, watch: _Watch, allowed: float) -> ProbeResult:
    why = msg("http.took_longer", seconds=allowed)
    dns = watch.dns or DnsResult(target.domain or target.host or "", DnsStatus.TIMEOUT, error=why)
    verdict = Verdict.DNS_FAILURE if watch.dns is None else Verdict.UNREACHABLE
    return ProbeResult(target, dns, (), verdict, why, elapsed_ms=allowed * 1000)


class Exporter:
    """One server's state: configuration, results, limits and its own metrics."""

    def __init__(self, config: ServeConfig, lang: str = "en") -> None:
        self.config = config
        self.lang = lang
        self.results = Results(config.cache_size)
        self.limits = Limits(BatchLimits(concurrency=config.concurrency, per_host=config.per_host))
        self.sessions = asyncio.Semaphore(config.concurrency)
        self.shared = RunContext()  # TLS sessions and interpreted replies, across probes
        self._resolvers: dict[str, Resolver] = {}
        self.recent: deque[_Recent] = deque(maxlen=config.history)
        self.pending = 0
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.probes = Counter("smtp_probe_exporter_probes", "Probes run", registry=r)
        self.hits = Counter(
            "smtp_probe_exporter_cache_hits", "Scrapes served a cached result", registry=r
        )
        self.joined = Counter(
            "smtp_probe_exporter_shared", "Scrapes that joined a probe in flight", registry=r
        )
        self.errors = Counter(
            "smtp_probe_exporter_errors", "Scrapes answered with an error", ["kind"], registry=r
        )
        Gauge("smtp_probe_exporter_in_flight", "Probes running", registry=r).set_function(
            lambda: self.results.in_flight
        )
        Gauge("smtp_probe_exporter_waiting", "Scrapes waiting", registry=r).set_function(
            lambda: self.pending
        )
        Gauge("smtp_probe_exporter_cached", "Results kept", registry=r).set_function(
            lambda: len(self.results)
        )

    def resolver(self, module: Module) -> Resolver:
        got = self._resolvers.get(module.name)
        if got is None:
            ns = self.config.nameservers or None
            got = self._resolvers[module.name] = make_resolver(ns, lifetime=module.timeouts.dns)
        return got

    async def run_probe(self, target: Target, module: Module, allowed: float) -> Snapshot:
        """Probe now, remember what it taught, and keep the result for the minimum interval."""
        key = cache_key(target, module)
        loop = asyncio.get_running_loop()
        watch = _Watch(self)
        run = RunContext(tls=self.shared.tls, replies=self.shared.replies, observer=watch)
        runner = _Guarded(self, Limited(self.limits, run), loop.time() + allowed)
        req = module.request(target, self.config.nameservers)
        self.probes.inc()
        made = time.time()
        try:
            async with asyncio.timeout(allowed + GRACE):
                result = await probe(req, resolver=self.resolver(module), runner=runner, run=run)
        except TimeoutError:
            result = _timed_out(target, watch, allowed)
        before = self.results.memory(key)
        snap = Snapshot(
            result,
            made,
            allowed,
            watch.dns_seconds,
            throttle_sign(result, before),
            before or Memory(),
            module.tls_verify == "pkix",
        )
        self.results.keep(key, snap, remember(result, before, made))
        if self.recent.maxlen:
            self.recent.append(_Recent(made, target.display or target.raw, module.name, snap))
        return snap

    def allowed(self, request: web.Request, module: Module) -> float:
        """Seconds the probe may take: the scrape timeout less the offset, within the module's."""
        limit = module.timeouts.budget
        header = request.headers.get(SCRAPE_TIMEOUT_HEADER)
        if header is None:
            return limit
        try:
            scrape = float(header)
        except ValueError:
            raise BadQuery(msg("http.scrape_not_number", header=SCRAPE_TIMEOUT_HEADER)) from None
        if not 0 < scrape < 86400:
            raise BadQuery(msg("http.scrape_range", header=SCRAPE_TIMEOUT_HEADER))
        return min(limit, max(0.1, scrape - OFFSET))

    def _fail(self, status: int, kind: str, message: str, lang: str = "en") -> web.Response:
        """A one-line refusal, in the module's language (English before one is known)."""
        self.errors.labels(kind).inc()
        text = say(locale(lang), message)
        return web.Response(status=status, text=text.replace("\n", " ") + "\n")

    async def handle_probe(self, request: web.Request) -> web.Response:
        asked = self.config.modules.get(request.query.get("module", "default"))
        try:
            target, module = query(self.config, request.query)
            allowed = self.allowed(request, module)
        except BadQuery as e:
            return self._fail(400, "bad_request", carried(e), asked.lang if asked else "en")
        why = refused(self.config.targets, target)
        if why is not None:
            return self._fail(403, "refused", why, module.lang)
        key = cache_key(target, module)
        interval = self.config.interval(module)
        if self.results.fresh(key, interval) is None and self.pending >= self.config.queue:
            return self._fail(503, "overloaded", msg("http.overloaded"), module.lang)
        self.pending += 1
        try:
            served = await self.results.get(
                key, interval, lambda: self.run_probe(target, module, allowed), allowed + GRACE
            )
        except Refused as e:
            return self._fail(403, "refused", carried(e), module.lang)
        except TimeoutError:
            late = msg("http.timeout", seconds=allowed + GRACE)
            return self._fail(503, "timeout", late, module.lang)
        finally:
            self.pending -= 1
        if served.how == "cached":
            self.hits.inc()
        elif served.how == "shared":
            self.joined.inc()
        body = exposition(samples(served.snapshot, time.time()))
        if request.query.get("debug", "").lower() in ("true", "1", "yes"):
            text = probe_render.to_text(served.snapshot.result, locale(module.lang))
            return web.Response(text=f"{text}\n\n{body.decode()}", content_type=TEXT)
        return web.Response(body=body, headers={"Content-Type": OPENMETRICS})

    async def handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": OPENMETRICS}
        )

    async def handle_index(self, request: web.Request) -> web.Response:
        return web.Response(text=status_page(self), content_type="text/html")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/probe", self.handle_probe)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/", self.handle_index)
        return app


def status_page(exporter: Exporter) -> str:
    """Recent probes, newest first, each linked to its annotated transcript; all text escaped."""
    loc = locale(exporter.lang)
    e = html.escape
    head = [
        loc.ui(f"serve.{k}")
        for k in ("when", "target", "module", "verdict", "throttled", "transcript")
    ]
    rows = []
    for r in reversed(exporter.recent):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.when))
        link = "/probe?" + urlencode({"target": r.target, "module": r.module, "debug": "true"})
        ok = (
            loc.ui("serve.ok")
            if success(r.snap)
            else loc.ui(f"verdict.{r.snap.result.verdict.value}")
        )
        throttled = loc.ui("probe.yes") if r.snap.throttle else ""
        cells = [when, r.target, r.module, ok, throttled]
        tds = "".join(f"<td>{e(c)}</td>" for c in cells)
        rows.append(f'<tr>{tds}<td><a href="{e(link)}">{e(loc.ui("serve.show"))}</a></td></tr>')
    ths = "".join(f"<th>{e(h)}</th>" for h in head)
    empty = f"<p>{e(loc.ui('serve.none_yet'))}</p>" if not rows else ""
    title = e(loc.ui("serve.title"))
    return (
        f'<!doctype html><html lang="{e(exporter.lang)}"><head><meta charset="utf-8">'
        f"<title>{title}</title></head><body><h1>{title}</h1>"
        f'<p><a href="/metrics">/metrics</a></p><h2>{e(loc.ui("serve.recent"))}</h2>{empty}'
        f"<table><tr>{ths}</tr>{''.join(rows)}</table></body></html>\n"
    )


async def start(exporter: Exporter, host: str, port: int) -> web.AppRunner:
    """Listen on host:port; the caller cleans the runner up."""
    runner = web.AppRunner(exporter.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
