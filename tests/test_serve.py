"""`smtp-probe serve`: metrics per scenario against loopback SMTP servers and the DNS lab
server, the cache and shared probes counted by the connections the servers saw, the
throttled state, the safety rules, and configuration errors."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from probe.catalog import load
from probe.lab.dns import LoopThread, ZoneDNS
from probe.lab.smtp import Scripted, port_of, start_raw, start_smtp
from probe.metrics import PHASES, REASONS, REPLY_CLASSES, STEPS, THROTTLE_SIGNS, TLS_VERSIONS
from probe.model import ACTORS, CATEGORIES
from probe.serve.app import Exporter
from probe.serveconf import ConfigError, parse_config

ZONE = """
ok.test. 60 IN MX 10 mx.ok.test.
mx.ok.test. 60 IN A 127.0.0.2
grey.test. 60 IN MX 10 mx.grey.test.
mx.grey.test. 60 IN A 127.0.0.3
busy.test. 60 IN MX 10 mx.busy.test.
mx.busy.test. 60 IN A 127.0.0.4
plain.test. 60 IN MX 10 mx.plain.test.
mx.plain.test. 60 IN A 127.0.0.6
untrusted.test. 60 IN MX 10 mx.untrusted.test.
mx.untrusted.test. 60 IN A 127.0.0.7
slow.test. 60 IN MX 10 mx.slow.test.
mx.slow.test. 60 IN A 127.0.0.8
count.test. 60 IN MX 10 mx.count.test.
mx.count.test. 60 IN A 127.0.0.9
flaky.test. 60 IN MX 10 mx.flaky.test.
mx.flaky.test. 60 IN A 127.0.0.10
odd.test. 60 IN MX 10 mx.odd.test.
mx.odd.test. 60 IN A 127.0.0.11
two.test. 60 IN MX 10 mx.ok.test.
two.test. 60 IN MX 20 mx.plain.test.
null.test. 60 IN MX 0 .
implicit.test. 60 IN A 127.0.0.6
"""


@dataclass
class Counting:
    """A raw SMTP server that counts connections; `plan` scripts each connection in turn
    ("ok", "421", "close_after_ehlo", "stall"), the last one repeating."""

    ctx: ssl.SSLContext | None = None
    greeting_delay: float = 0.0
    plan: list[str] = field(default_factory=lambda: ["ok"])
    connections: int = 0

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        mode = self.plan[min(self.connections, len(self.plan) - 1)]
        self.connections += 1
        if mode == "stall":
            await asyncio.sleep(30)
            return
        await asyncio.sleep(self.greeting_delay)
        if mode == "421":
            w.write(b"421 4.7.0 mx.test Error: too many connections from your address\r\n")
            await w.drain()
            return
        w.write(b"220 mx.test ESMTP\r\n")
        tls = False
        while line := await r.readline():
            verb = line.decode().strip().split(" ")[0].upper()
            if verb == "EHLO":
                starttls = self.ctx is not None and not tls
                w.write(b"250-mx.test\r\n250 STARTTLS\r\n" if starttls else b"250 mx.test\r\n")
                await w.drain()
                if mode == "close_after_ehlo":
                    return
                continue
            if verb == "STARTTLS" and self.ctx is not None:
                w.write(b"220 2.0.0 go ahead\r\n")
                await w.drain()
                await w.start_tls(self.ctx)
                tls = True
                continue
            if verb == "QUIT":
                w.write(b"221 2.0.0 bye\r\n")
                await w.drain()
                return
            w.write(b"250 2.0.0 ok\r\n")
            await w.drain()


async def odd(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Replies a catalog has never seen: unregistered enhanced codes, markup, odd classes."""
    w.write(b"220 <script>alert(1)</script> 198.51.100.7 ESMTP\r\n")
    while line := await r.readline():
        verb = line.decode().strip().split(" ")[0].upper()
        if verb == "EHLO":
            w.write(b"250-odd.example\r\n250 X-\xff\xfe\r\n")
        elif verb == "QUIT":
            w.write(b"221 bye\r\n")
            await w.drain()
            return
        else:
            w.write(b'451 4.9.987 host 203.0.113.9 said {weird} "quoted"\r\n')
        await w.drain()


@dataclass
class Lab:
    dns_port: int
    port: int
    cafile: str
    count: Counting
    flaky: Counting
    slow: Counting

    def config(self, extra: str = "", private: bool = True, server: str = "") -> str:
        allow = 'private = ["127.0.0.0/8"]' if private else ""
        return f"""
[server]
nameservers = ["127.0.0.1:{self.dns_port}"]
{server}
[targets]
{allow}
[modules.default]
port = {self.port}
timeout = 2
helo = "probe.example"
cafile = "{self.cafile}"
[modules.grey]
port = {self.port}
timeout = 2
rcpt = ["someone@grey.test"]
[modules.noverify]
port = {self.port}
timeout = 2
tls_verify = "none"
[modules.require]
port = {self.port}
timeout = 2
starttls = "require"
[modules.fresh]
port = {self.port}
timeout = 1
cafile = "{self.cafile}"
min_interval = 0
[modules.deutsch]
port = {self.port}
timeout = 2
lang = "de"
{extra}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from running_lab(tmp_path_factory)


def running_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The DNS lab server and every SMTP server of the zone, on loopback, in a thread."""
    ca, other = trustme.CA(), trustme.CA()
    cafile = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))

    def ctx(issuer: trustme.CA, name: str) -> ssl.SSLContext:
        c = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        issuer.issue_cert(name).configure_cert(c)
        return c

    lt = LoopThread()
    dns = ZoneDNS(ZONE)
    servers: list[Any] = []
    count = Counting(greeting_delay=0.3)
    flaky = Counting(ctx(ca, "mx.flaky.test"), plan=["ok", "421", "close_after_ehlo", "stall"])
    slow = Counting(plan=["stall"])
    try:
        dns_port = lt.run(dns.start())
        first = lt.run(
            start_smtp(
                Scripted(),
                host="127.0.0.2",
                tls_context=ctx(ca, "mx.ok.test"),
                hostname="mx.ok.test",
            )
        )
        servers.append(first)
        port = port_of(first)
        grey = Scripted(
            rcpt={
                "": "450 4.2.0 Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/grey.test.html"
            }
        )
        servers.append(lt.run(start_smtp(grey, host="127.0.0.3", port=port)))
        busy = "421 4.3.2 Service busy, try later"
        servers.append(lt.run(start_smtp(Scripted(), host="127.0.0.4", port=port, greeting=busy)))
        servers.append(lt.run(start_smtp(Scripted(), host="127.0.0.6", port=port)))
        untrusted = ctx(other, "mx.untrusted.test")
        servers.append(
            lt.run(start_smtp(Scripted(), host="127.0.0.7", port=port, tls_context=untrusted))
        )
        servers.append(lt.run(start_raw(slow, "127.0.0.8", port)))
        servers.append(lt.run(start_raw(count, "127.0.0.9", port)))
        servers.append(lt.run(start_raw(flaky, "127.0.0.10", port)))
        servers.append(lt.run(start_raw(odd, "127.0.0.11", port)))
        yield Lab(dns_port, port, str(cafile), count, flaky, slow)
    finally:
        for s in servers:
            lt.loop.call_soon_threadsafe(s.close)
        lt.run(dns.stop())
        lt.close()


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(m: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    hits = [v for ls, v in m[name] if all(ls.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, (name, labels, m.get(name))
    return hits[0]


class Client:
    def __init__(self, exporter: Exporter, client: TestClient[Any, Any]) -> None:
        self.exporter, self.c = exporter, client

    async def get(self, path: str, **params: str) -> tuple[int, str]:
        headers = {}
        if "timeout" in params:
            headers["X-Prometheus-Scrape-Timeout-Seconds"] = params.pop("timeout")
        r = await self.c.get(path, params=params, headers=headers)
        return r.status, await r.text()

    async def metrics(self, target: str, module: str = "default", **kw: str) -> Any:
        status, text = await self.get("/probe", target=target, module=module, **kw)
        assert status == 200, text
        return parse(text)


async def client(config: str) -> tuple[Client, TestClient[Any, Any]]:
    exporter = Exporter(parse_config(config))
    tc = TestClient(TestServer(exporter.app()))
    await tc.start_server()
    return Client(exporter, tc), tc


async def test_metrics_per_scenario(lab: Lab) -> None:
    c, tc = await client(lab.config())
    try:
        ok = await c.metrics("ok.test")
        assert value(ok, "probe_success") == 1
        assert value(ok, "smtp_probe_reply_code", step="greeting") == 220
        assert value(ok, "probe_tls_version_info", version="TLS 1.3") == 1
        assert value(ok, "smtp_probe_tls_info", offered="1", trusted="1", name_match="1") == 1
        assert value(ok, "probe_ssl_earliest_cert_expiry") > 1.7e9
        assert value(ok, "smtp_probe_mx_hosts") == value(ok, "smtp_probe_mx_reachable") == 1
        assert value(ok, "probe_ip_protocol") == 4
        assert {ls["phase"] for ls, _ in ok["smtp_probe_phase_duration_seconds"]} >= {
            "resolve",
            "greeting",
            "ehlo",
            "starttls",
            "tls_ehlo",
            "mail",
            "quit",
        }
        assert "smtp_probe_failed_step" not in ok

        grey = await c.metrics("grey.test", "grey")
        assert value(grey, "probe_success") == 0
        assert value(grey, "smtp_probe_failed_step", step="rcpt", reason="transient") == 1
        assert value(grey, "smtp_probe_reply_code", step="rcpt") == 450
        info = value(
            grey,
            "smtp_probe_reply_info",
            step="rcpt",
            category="greylisted",
            retry="yes",
            enhanced="4.2.0",
            actor="nobody",
        )
        assert info == 1
        assert value(grey, "smtp_probe_retry_after_seconds", step="rcpt") > 0
        assert value(grey, "smtp_probe_throttled") == 0

        busy = await c.metrics("busy.test")
        assert value(busy, "probe_success") == 0
        assert value(busy, "smtp_probe_reply_code", step="greeting") == 421
        assert value(busy, "smtp_probe_failed_step", step="greeting", reason="transient") == 1
        assert value(busy, "smtp_probe_throttled") == 1
        assert value(busy, "smtp_probe_mx_reachable") == 0

        plain = await c.metrics("plain.test")  # STARTTLS is not offered: fine for `auto`
        assert value(plain, "probe_success") == 1
        assert value(plain, "smtp_probe_tls_info", offered="0") == 1
        assert "probe_tls_version_info" not in plain
        required = await c.metrics("plain.test", "require")
        assert value(required, "probe_success") == 0
        assert value(required, "smtp_probe_failed_step", step="starttls", reason="not_offered") == 1

        bad = await c.metrics("untrusted.test")
        assert value(bad, "probe_success") == 0
        assert value(bad, "smtp_probe_failed_step", step="tls", reason="untrusted") == 1
        assert value(bad, "smtp_probe_tls_info", trusted="0") == 1
        assert value(await c.metrics("untrusted.test", "noverify"), "probe_success") == 1

        slow = await c.metrics("slow.test", "fresh")
        assert value(slow, "probe_success") == 0
        assert value(slow, "smtp_probe_failed_step", step="greeting", reason="no_greeting") == 1

        null = await c.metrics("null.test")
        assert value(null, "smtp_probe_failed_step", step="resolve", reason="null_mx") == 1
        assert value(null, "smtp_probe_mx_hosts") == 0
        implicit = await c.metrics("implicit.test")
        assert value(implicit, "probe_success") == 1
        assert value(await c.metrics(f"mx.ok.test:{lab.port}"), "probe_success") == 1
    finally:
        await tc.close()


async def test_scrape_timeout_header_bounds_the_probe(lab: Lab) -> None:
    c, tc = await client(lab.config().replace("timeout = 1\n", "timeout = 10\n"))
    try:
        m = await c.metrics("slow.test", "fresh", timeout="1.5")
        assert value(m, "probe_timeout_seconds") == 1.0
        assert value(m, "probe_duration_seconds") < 2.0
        assert value(m, "probe_success") == 0
    finally:
        await tc.close()


async def test_cache_and_shared_probes_counted_by_connections(lab: Lab) -> None:
    c, tc = await client(lab.config())
    try:
        before = lab.count.connections
        got = await asyncio.gather(*(c.metrics("count.test") for _ in range(5)))
        assert all(value(m, "probe_success") == 1 for m in got)
        assert lab.count.connections == before + 1  # five scrapes, one probe
        again = await c.metrics("count.test")
        assert lab.count.connections == before + 1  # within the minimum interval: cached
        assert value(again, "smtp_probe_result_age_seconds") > 0
        own = parse((await c.get("/metrics"))[1])
        assert value(own, "smtp_probe_exporter_probes_total") == 1
        assert value(own, "smtp_probe_exporter_shared_total") == 4
        assert value(own, "smtp_probe_exporter_cache_hits_total") == 1
        await c.metrics("count.test", "fresh")  # another module is another result
        assert lab.count.connections == before + 2
    finally:
        await tc.close()


async def test_throttled_state_keeps_the_last_good_tls_facts(lab: Lab) -> None:
    c, tc = await client(lab.config())
    lab.flaky.connections = 0
    try:
        first = await c.metrics("flaky.test", "fresh")
        assert value(first, "probe_success") == 1
        assert value(first, "smtp_probe_throttled") == 0
        assert value(first, "smtp_probe_tls_facts_age_seconds") == 0
        await asyncio.sleep(0.05)
        for sign in ("421", "closed_after_ehlo", "greeting_stalled"):
            m = await c.metrics("flaky.test", "fresh")
            assert value(m, "probe_success") == 0
            assert value(m, "smtp_probe_throttled") == 1, sign
            assert value(m, "smtp_probe_throttle_sign", sign=sign) == 1
            # The TLS facts of the first probe, with their age, not "no TLS".
            assert value(m, "probe_tls_version_info", version="TLS 1.3") == 1
            assert value(m, "smtp_probe_tls_facts_age_seconds") > 0
        # The connection closed after EHLO is tried again without STARTTLS, as an MTA does:
        # that second connection met the stall.
        assert lab.flaky.connections == 5
        # A server that never answered well is broken, not throttled.
        m = await c.metrics("slow.test", "fresh")
        assert value(m, "smtp_probe_throttled") == 0
    finally:
        await tc.close()


async def test_safety_rules(lab: Lab) -> None:
    c, tc = await client(lab.config(private=False))
    try:
        before = lab.count.connections
        for target in (
            "count.test",
            "127.0.0.9",
            f"[127.0.0.9]:{lab.port}",
            f"mx.count.test:{lab.port}",
        ):
            status, body = await c.get("/probe", target=target)
            assert status == 403, (target, body)
            assert body.count("\n") == 1
        assert "loopback, private or link-local" in (await c.get("/probe", target="count.test"))[1]
        assert lab.count.connections == before  # refused: nothing was sent
        for params in (
            {"target": "ok.test\r\nQUIT"},
            {"target": "a" * 300 + ".test"},
            {"target": "ok.test", "module": "nosuch"},
            {"target": "user@ok.test"},
            {},
        ):
            status, body = await c.get("/probe", **params)
            assert status == 400, (params, body)
            assert body.count("\n") == 1 and "\r" not in body
        status, body = await c.get("/probe", target="ok.test", timeout="soon")
        assert status == 400
        own = parse((await c.get("/metrics"))[1])
        assert value(own, "smtp_probe_exporter_errors_total", kind="refused") == 5
    finally:
        await tc.close()
    only_ok = lab.config().replace("[targets]", '[targets]\ndomains = ["ok.test"]')
    c, tc = await client(only_ok)
    try:
        assert (await c.get("/probe", target="grey.test"))[0] == 403
        assert (await c.get("/probe", target="mx.ok.test"))[0] == 200
    finally:
        await tc.close()


async def test_queue_limit_answers_503(lab: Lab) -> None:
    c, tc = await client(lab.config(server="queue = 2"))
    try:
        got = await asyncio.gather(
            *(c.get("/probe", target="slow.test", module="fresh") for _ in range(6))
        )
        statuses = sorted(s for s, _ in got)
        assert statuses == [200, 200, 503, 503, 503, 503], got
        assert all(b.count("\n") == 1 for s, b in got if s == 503)
    finally:
        await tc.close()


async def test_debug_transcript_in_the_module_language_and_status_page(lab: Lab) -> None:
    c, tc = await client(lab.config())
    try:
        status, text = await c.get("/probe", target="grey.test", module="deutsch", debug="true")
        assert status == 200
        assert "Urteil" in text or "Ergebnis" in text, text
        assert "probe_success" in text
        status, page = await c.get("/")
        assert status == 200
        assert "grey.test" in page and "debug=true" in page and "<script>" not in page
    finally:
        await tc.close()


def enhanced_codes() -> set[str]:
    return {f"{k}.{key}" for key in load().enhanced for k in (2, 4, 5)}


async def test_label_values_stay_within_closed_sets(lab: Lab) -> None:
    import ssl as ssl_

    c, tc = await client(lab.config())
    targets = [
        ("ok.test", "default"),
        ("grey.test", "grey"),
        ("busy.test", "default"),
        ("plain.test", "require"),
        ("untrusted.test", "default"),
        ("odd.test", "grey"),
        ("two.test", "default"),
        ("null.test", "default"),
        ("implicit.test", "default"),
        ("nxdomain.test", "default"),
        ("flaky.test", "default"),
        (f"mx.odd.test:{lab.port}", "default"),
    ]
    seen: dict[str, set[str]] = {}
    try:
        for target, module in targets:
            m = await c.metrics(target, module)
            for samples in m.values():
                for labels, _ in samples:
                    for k, v in labels.items():
                        seen.setdefault(k, set()).add(v)
    finally:
        await tc.close()
    ciphers = {x["name"] for x in ssl_.create_default_context().get_ciphers()}
    allowed = {
        "phase": set(PHASES),
        "step": set(STEPS),
        "reason": set(REASONS),
        "class": set(REPLY_CLASSES),
        "category": set(CATEGORIES),
        "enhanced": enhanced_codes() | {"none", "unregistered"},
        "retry": {"yes", "no", "unknown"},
        "actor": set(ACTORS) | {"unknown"},
        "version": set(TLS_VERSIONS.values()) | {"other"},
        "cipher": ciphers | {"none"},
        "offered": {"0", "1"},
        "trusted": {"0", "1", "unknown"},
        "name_match": {"0", "1", "unknown"},
        "sign": set(THROTTLE_SIGNS),
    }
    assert set(seen) <= set(allowed), set(seen) - set(allowed)
    for name, values in seen.items():
        assert values <= allowed[name], (name, values - allowed[name])
    assert "unregistered" in seen["enhanced"]  # the odd server's 4.9.987
    text = repr(seen)
    for leak in ("127.0.0", "mx.", "198.51.100", "203.0.113", "script", "odd.example"):
        assert leak not in text


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[server]\nqueue = \n", 2, "Invalid value"),
        ("[server]\nlisten = '127.0.0.1:1'\nqueue = 0\n", 3, "queue must be between"),
        ("[modules.x]\nport = 25\nstarttls = 'sometimes'\n", 3, "starttls must be one of"),
        ("[modules.x]\n\n# a comment\nhelo = 'a\\r\\nb'\n", 4, "helo"),
        ("[modules.x]\nexpect = ['rcpt=2xx', 'frobnicate']\n", 2, "expect: --expect 'frobnicate'"),
        ("[modules.x]\ntimeout = -1\n", 2, "timeout must be between"),
        ("[targets]\nprivate = ['10.0.0.0/33']\n", 2, "private"),
        ("[modules.x]\ncolour = 'blue'\n", 2, "unknown key 'colour'"),
        ("[bogus]\n", 1, "unknown table"),
        ("[modules.'a b']\nport = 25\n", 1, "module name"),
        ("[modules.x]\nmx = 'all'\naddresses = 'some'\n", 3, "addresses must be one of"),
    ],
)
def test_config_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert e.value.line == line, e.value
    assert words in str(e.value)


def test_a_module_may_ask_one_address_per_mx_host() -> None:
    from probe.result import Target

    cfg = parse_config("[modules.watch]\nmx = 'all'\naddresses = 'one'\n")
    req = cfg.modules["watch"].request(Target("x.test", "domain", "x.test", None, None), ())
    assert req.all_hosts and req.one_address
    plain = parse_config("[modules.every]\nmx = 'all'\n").modules["every"]
    assert not plain.request(Target("x.test", "domain", "x.test", None, None), ()).one_address


def test_serve_refuses_a_bad_config_at_start(tmp_path: Any) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[modules.x]\nport = 'twenty-five'\n", encoding="utf-8")
    p = subprocess.run(
        [sys.executable, "-m", "probe", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 64
    assert p.stderr.strip().splitlines() == [
        f"smtp-probe: error: {bad}: line 2: port must be a number"
    ]
    good = tmp_path / "good.toml"
    good.write_text("[modules.x]\nport = 2525\nexpect = ['starttls']\n", encoding="utf-8")
    p = subprocess.run(
        [sys.executable, "-m", "probe", "serve", "--config", str(good), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr


def test_earliest_expiry_is_the_chains_not_only_the_leafs() -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from probe.certs import certificate_facts
    from probe.metrics import _expiry
    from probe.result import TlsInfo

    def cert(cn: str, days: int) -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        now = dt.datetime.now(dt.UTC)
        built = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .sign(key, hashes.SHA256())
        )
        return built.public_bytes(serialization.Encoding.DER)

    leaf, intermediate = cert("mx.test", 300), cert("Intermediate", 20)
    facts = certificate_facts(leaf)
    tls = TlsInfo(True, True, ok=True, certificate=facts, chain=(leaf, intermediate, b"junk"))
    soon = _expiry(tls)
    assert soon is not None
    assert 19 * 86400 < soon - dt.datetime.now(dt.UTC).timestamp() < 21 * 86400
    resumed = tls._replace(chain=())  # no chain came: the leaf's date
    later = _expiry(resumed)
    assert later is not None and later - soon > 250 * 86400
