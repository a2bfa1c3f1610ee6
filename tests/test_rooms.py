"""The behaviours the restructured live core promises: one handshake per session, runs that
share nothing, an observer told of each step as it happens, kept connections retired before
a server's error limit, and typos that send nothing."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from probe.config import BatchLimits, ProbeRequest, SessionOptions, Timeouts
from probe.context import RunContext
from probe.lab.dns import LoopThread, ZoneDNS
from probe.lab.smtp import port_of, start_raw
from probe.limits import Limits
from probe.pool import Pool
from probe.result import DnsResult, Session, Step, Target, TlsInfo
from probe.runner import probe
from probe.session import run_session
from probe.tls import TlsState

FAST = Timeouts(2.0, budget=10.0)


@dataclass
class TlsMx:
    """A raw STARTTLS server that counts connections and remembers failed handshakes."""

    ctx: ssl.SSLContext
    greeting_delay: float = 0.0
    connections: int = 0
    handshake_errors: list[str] = field(default_factory=list)
    received: list[tuple[float, str]] = field(default_factory=list)

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        await asyncio.sleep(self.greeting_delay)
        w.write(b"220 mx.test ESMTP\r\n")
        tls = False
        while line := await r.readline():
            cmd = line.decode().strip()
            self.received.append((time.monotonic(), cmd))
            verb = cmd.split(" ")[0].upper()
            if verb == "EHLO":
                w.write(b"250-mx.test\r\n250 STARTTLS\r\n" if not tls else b"250 mx.test\r\n")
            elif verb == "STARTTLS":
                w.write(b"220 2.0.0 go ahead\r\n")
                await w.drain()
                try:
                    await w.start_tls(self.ctx)
                except (ssl.SSLError, ConnectionError) as e:
                    self.handshake_errors.append(str(e))
                    return
                tls = True
                continue
            elif verb == "QUIT":
                w.write(b"221 2.0.0 bye\r\n")
                await w.drain()
                return
            else:
                w.write(b"250 2.0.0 ok\r\n")
            await w.drain()


def leaf_context(ca: trustme.CA, *names: str, **kw: object) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names, **kw).configure_cert(ctx)  # type: ignore[arg-type]
    return ctx


def self_signed_context(tmp: Path) -> ssl.SSLContext:
    """A certificate that is its own issuer, as many MTAs ship by default."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mx.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = tmp / "self.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(pem))
    return ctx


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cafile(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _past() -> datetime:
    return datetime.now(UTC) - timedelta(days=10)


@pytest.mark.parametrize("case", ["self-signed", "expired", "wrong name", "unknown ca"])
async def test_one_connection_and_one_clean_handshake_whatever_the_certificate(
    case: str, ca: trustme.CA, cafile: str, tmp_path: Path
) -> None:
    if case == "self-signed":
        ctx = self_signed_context(tmp_path)
    elif case == "expired":
        past = _past()
        ctx = leaf_context(ca, "mx.test", not_before=past - timedelta(days=90), not_after=past)
    elif case == "wrong name":
        ctx = leaf_context(ca, "other.test")
    else:
        ctx = leaf_context(trustme.CA(), "mx.test")
    mx = TlsMx(ctx)
    srv = await start_raw(mx)
    try:
        opts = SessionOptions(helo="probe.test", cafile=cafile, timeouts=FAST)
        s = await run_session("mx.test", "127.0.0.1", port_of(srv), opts)
    finally:
        srv.close()
    # The server saw one connection and no failed handshake: nothing for its logs or limits.
    assert mx.connections == 1 and mx.handshake_errors == []
    assert s.completed and s.tls.ok
    assert [st.command for st in s.steps][:4] == ["CONNECT", "EHLO", "STARTTLS", "EHLO"]
    why = s.tls.verify_error or ""
    if case == "wrong name":
        assert s.tls.trusted is True and s.tls.name_matches is False and not why
    else:
        assert s.tls.trusted is False
        expected = {
            "self-signed": "self-signed",
            "expired": "expired",
            "unknown ca": "unable to get local issuer certificate",
        }[case]
        assert expected in why, why


async def test_a_trusted_chain_with_an_intermediate_is_trusted(ca: trustme.CA, cafile: str) -> None:
    mx = TlsMx(leaf_context(ca.create_child_ca(), "mx.test"))
    srv = await start_raw(mx)
    try:
        opts = SessionOptions(helo="probe.test", cafile=cafile, timeouts=FAST)
        s = await run_session("mx.test", "127.0.0.1", port_of(srv), opts)
    finally:
        srv.close()
    assert s.tls.trusted is True and s.tls.name_matches is True and s.tls.verify_error is None


@pytest.mark.parametrize("broken", [False, True])
@pytest.mark.parametrize("label", [b"CERTIFICATE", b"X509 CERTIFICATE"])
def test_an_unreadable_certificate_in_a_ca_file_costs_only_itself(
    ca: trustme.CA, tmp_path: Path, broken: bool, label: bytes
) -> None:
    # The bundle is read in one call, or block by block when one cannot be read: either way
    # every readable root counts, under either label OpenSSL reads.
    bad = b"-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n"
    root = ca.cert_pem.bytes().replace(b" CERTIFICATE-----", b" " + label + b"-----")
    path = tmp_path / "mixed.pem"
    path.write_bytes((bad if broken else b"") + root)
    leaf = x509.load_pem_x509_certificate(ca.issue_cert("mx.test").cert_chain_pems[0].bytes())
    chain = (leaf.public_bytes(serialization.Encoding.DER),)
    assert TlsState().judge(chain, str(path)).trusted is True
    assert TlsState().judge(chain, None).trusted is False


async def test_two_probes_share_nothing_unless_handed_the_same_run(
    ca: trustme.CA, cafile: str
) -> None:
    mx = TlsMx(leaf_context(ca, "mx.test"))
    srv = await start_raw(mx)
    req = ProbeRequest(
        Target("[127.0.0.1]", "literal", None, "127.0.0.1", None),
        SessionOptions(helo="probe.test", cafile=cafile, timeouts=FAST),
        port=port_of(srv),
    )
    try:
        alone = [await probe(req), await probe(req)]
        run = RunContext()
        shared = [await probe(req, run=run), await probe(req, run=run)]
    finally:
        srv.close()
    assert [r.sessions[0].tls.resumed for r in alone] == [False, False]
    assert [r.sessions[0].tls.resumed for r in shared] == [False, True]
    assert all(r.sessions[0].tls.trusted for r in alone + shared)


@dataclass
class Recorder:
    """An observer that notes each event and when it came."""

    events: list[tuple[float, str]] = field(default_factory=list)

    def _note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    def resolved(self, dns: DnsResult) -> None:
        self._note("resolved")

    def session_started(self, host: str, address: str, port: int) -> None:
        self._note("started")

    def tls(self, info: TlsInfo) -> None:
        self._note(f"tls trusted={info.trusted}")

    def step(self, step: Step) -> None:
        self._note(step.command)

    def session_ended(self, session: Session) -> None:
        self._note("ended")


async def test_the_observer_hears_each_step_in_order_as_it_happens(
    ca: trustme.CA, cafile: str
) -> None:
    mx = TlsMx(leaf_context(ca, "mx.test"), greeting_delay=0.3)
    srv = await start_raw(mx)
    seen = Recorder()
    opts = SessionOptions(helo="probe.test", cafile=cafile, rcpts=("a@mx.test",), timeouts=FAST)
    try:
        t0 = time.monotonic()
        s = await run_session("mx.test", "127.0.0.1", port_of(srv), opts, RunContext(observer=seen))
    finally:
        srv.close()
    names = [what for _, what in seen.events]
    assert names == [
        "started",
        "CONNECT",
        "EHLO",
        "tls trusted=True",
        "STARTTLS",
        "EHLO",
        "MAIL",
        "RCPT",
        "RSET",
        "QUIT",
        "ended",
    ]
    assert [st.command for st in s.steps] == names[1:3] + names[4:-1]
    # "started" came at once, before the slow greeting; each step was told before the server
    # got the next command, not at the end.
    assert seen.events[0][0] - t0 < 0.25
    told = [t for t, what in seen.events if what not in ("started", "ended") and "tls" not in what]
    sent = [t for t, _cmd in mx.received]
    assert len(sent) == len(told) - 1  # every step but the greeting answers a command
    for step_time, next_command in zip(told, sent, strict=False):
        assert step_time <= next_command


@dataclass
class PenalisingMx:
    """Applies Postfix's smtpd_soft_error_limit: after `limit` errors on one connection,
    every reply is delayed by `sleep` seconds."""

    limit: int = 10
    sleep: float = 1.0
    errors: list[int] = field(default_factory=list)  # per connection, at its end
    penalised: int = 0

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        errors = 0
        w.write(b"220 mx.test ESMTP\r\n")
        try:
            while line := await r.readline():
                if errors >= self.limit:
                    self.penalised += 1
                    await asyncio.sleep(self.sleep)
                verb = line.decode().split(" ")[0].strip().upper()
                if verb == "EHLO":
                    w.write(b"250-mx.test\r\n250 PIPELINING\r\n")
                elif verb == "RCPT":
                    errors += 1
                    w.write(b"550 5.1.1 <nobody@mx.test>: Recipient address rejected\r\n")
                elif verb == "QUIT":
                    w.write(b"221 2.0.0 Bye\r\n")
                    await w.drain()
                    return
                else:
                    w.write(b"250 2.0.0 Ok\r\n")
                await w.drain()
        finally:
            self.errors.append(errors)


async def test_a_kept_connection_retires_before_the_servers_error_limit() -> None:
    mx = PenalisingMx()
    srv = await start_raw(mx)
    limits = BatchLimits(per_host=1, reuse=50)
    pool = Pool(Limits(limits))
    try:
        sessions = []
        for i in range(30):
            opts = SessionOptions(helo="probe.test", rcpts=(f"nobody{i}@mx.test",), timeouts=FAST)
            sessions.append(await pool.session("mx.test", "127.0.0.1", port_of(srv), opts))
        await pool.close()
    finally:
        srv.close()
    assert all(s.completed for s in sessions)
    assert sum(s.reused for s in sessions) > 0  # connections were kept...
    assert mx.penalised == 0  # ...but none lived long enough to be slowed down
    assert max(mx.errors) <= limits.rejections < mx.limit
    assert sum(mx.errors) == 30


def test_a_typo_is_a_usage_error_and_sends_nothing() -> None:
    lt = LoopThread()
    dns = ZoneDNS("example.com. 300 IN MX 10 mx.example.com.\n")
    dns_port = lt.run(dns.start())
    try:
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "probe",
                "prbe",
                "example.com",
                "--nameserver",
                f"127.0.0.1:{dns_port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        lt.run(dns.stop())
        lt.close()
    assert p.returncode == 64, p.stderr
    assert "did you mean 'probe'" in p.stderr
    assert len(p.stderr.strip().splitlines()) <= 3 and "Traceback" not in p.stderr
    assert dns.b.queries == []


def _slow_greeting_server(delay: float) -> tuple[LoopThread, asyncio.Server]:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        w.write(b"220 slow.test ESMTP\r\n")
        while line := await r.readline():
            verb = line.decode().split(" ")[0].strip().upper()
            w.write(b"221 bye\r\n" if verb == "QUIT" else b"250 slow.test\r\n")
            await w.drain()
            if verb == "QUIT":
                return

    lt = LoopThread()
    return lt, lt.run(start_raw(script))


async def _closed(srv: asyncio.Server) -> None:
    srv.close()
    await srv.wait_closed()


def test_on_a_terminal_the_transcript_shows_the_connect_before_the_greeting() -> None:
    import os
    import pty
    import re
    import select

    lt, srv = _slow_greeting_server(1.5)
    args = ["[127.0.0.1]", "--port", str(port_of(srv)), "--helo", "t.test", "--starttls", "never"]
    cmd = [sys.executable, "-m", "probe", *args]
    try:
        master, slave = pty.openpty()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=slave, stderr=subprocess.DEVNULL)
        os.close(slave)
        seen, connect_at = b"", None
        while True:
            if not select.select([master], [], [], 10)[0]:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if connect_at is None and b"===" in seen:
                connect_at = time.monotonic() - started
        os.close(master)
        assert proc.wait(timeout=30) == 0
        piped = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    finally:
        lt.run(_closed(srv))
        lt.close()
    live = seen.decode("utf-8", "replace").replace("\r\n", "\n")
    # The header came while the server still held its greeting back...
    assert connect_at is not None and connect_at < 1.4, (connect_at, live)
    assert "220 slow.test" in live

    # ...and the whole transcript says what the piped one says (timings aside).
    def strip(text: str) -> str:
        return re.sub(r"\(\d+ ms\)", "(ms)", re.sub(r"\x1b\[[0-9;]*m", "", text)).strip()

    assert strip(live) == strip(piped.stdout)


async def test_connect_and_handshake_are_timed_apart_from_the_replies(
    ca: trustme.CA, cafile: str
) -> None:
    from probe.metrics import phase_totals
    from probe.render.views import chart

    mx = TlsMx(leaf_context(ca, "mx.test"), greeting_delay=0.3)
    srv = await start_raw(mx)
    try:
        opts = SessionOptions(helo="probe.test", cafile=cafile, timeouts=FAST)
        s = await run_session("mx.test", "127.0.0.1", port_of(srv), opts)
    finally:
        srv.close()
    connect, starttls = s.steps[0], s.steps[2]
    assert connect.command == "CONNECT" and starttls.command == "STARTTLS"
    # The greeting waited 0.3 s after the connection was up: that wait is not the connect.
    assert connect.setup_ms is not None and connect.setup_ms < 100 <= 300 <= connect.elapsed_ms
    assert starttls.setup_ms is not None and 0 < starttls.setup_ms <= starttls.elapsed_ms
    assert all(st.setup_ms is None for st in s.steps if st.command not in ("CONNECT", "STARTTLS"))
    phases = phase_totals(s)
    assert phases["connect"] == pytest.approx(connect.setup_ms / 1000)
    assert phases["greeting"] == pytest.approx((connect.elapsed_ms - connect.setup_ms) / 1000)
    # The report's bar for CONNECT marks its connect part, to the same scale.
    from probe.catalog import locale
    from probe.render.probe import session_json

    row = chart([session_json(s, locale("en"))], locale("en"), "t").rows[0]
    bar = row.bars[0]
    assert 0 < bar.setup_w < bar.w
    assert bar.setup_w == pytest.approx(bar.w * connect.setup_ms / connect.elapsed_ms, abs=0.01)


async def test_one_address_per_mx_host_when_asked() -> None:
    """`all_hosts` walks every MX address; with `one_address`, an MX host that answered
    once is not asked again at its other addresses (the exporter's `addresses = "one"`)."""
    zone = "\n".join(
        [
            "two.test. 60 IN MX 10 a.two.test.",
            "two.test. 60 IN MX 20 b.two.test.",
            "a.two.test. 60 IN A 127.0.0.21",
            "a.two.test. 60 IN A 127.0.0.22",
            "b.two.test. 60 IN A 127.0.0.23",
            "b.two.test. 60 IN A 127.0.0.24",
        ]
    )
    dns = ZoneDNS(zone)
    dns_port = await dns.start()
    seen: list[str] = []

    async def mx(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(w.get_extra_info("sockname")[0])
        w.write(b"220 mx ESMTP\r\n")
        while line := await r.readline():
            w.write(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else b"250 ok\r\n")

    first = await start_raw(mx, host="127.0.0.21")
    port = port_of(first)
    servers = [first] + [await start_raw(mx, host=f"127.0.0.{n}", port=port) for n in (22, 23, 24)]
    try:
        from probe.resolve import make_resolver
        from probe.target import parse_target

        base = ProbeRequest(
            target=parse_target("two.test"),
            port=port,
            session=SessionOptions(helo="probe.test", starttls="never", timeouts=FAST),
            nameservers=(("127.0.0.1", dns_port),),
            all_hosts=True,
        )
        res = make_resolver([("127.0.0.1", dns_port)], lifetime=2)
        every = await probe(base, resolver=res)
        one = await probe(replace(base, one_address=True), resolver=res)
    finally:
        for s in servers:
            s.close()
        await dns.stop()
    assert sorted(s.address for s in every.sessions) == [f"127.0.0.{n}" for n in (21, 22, 23, 24)]
    assert [s.host for s in one.sessions] == ["a.two.test", "b.two.test"]
    assert not one.notes  # skipped addresses are not a budget that ran out
    assert len(seen) == 6
