"""Hostile peers on the live side: certificates no builder would make, names from DNS that are
no host names, address literals, many MX hosts that never answer, and an MTA-STS policy that
arrives in pieces. Every case ends as data in the result, never as a traceback.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification as xv
from cryptography.x509.oid import NameOID, ObjectIdentifier

from probe.certs import judge
from probe.checks import tlsa_matches
from probe.cli import cli
from probe.config import SessionOptions, Timeouts
from probe.context import RunContext
from probe.lab.dns import Behaviour, LoopThread, ZoneDNS
from probe.lab.smtp import Scripted, port_of, start_raw, start_smtp
from probe.mxscan import POLICY_LIMIT, fetch_policy
from probe.resolve import make_resolver
from probe.session import run_session
from probe.target import parse_target
from tests.conftest import valid

RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
CA = trustme.CA()
CA_KEY = serialization.load_pem_private_key(CA.private_key_pem.bytes(), None)
CA_NAME = x509.load_pem_x509_certificate(CA.cert_pem.bytes()).subject
LEAF_KEY = ec.generate_private_key(ec.SECP256R1())
NOW = datetime.now(UTC)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), env={"NO_COLOR": "1"})


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def cafile(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    CA.cert_pem.write_to_path(str(path))
    return str(path)


# -- certificates no builder makes --------------------------------------------------------------


def _tlv_end(data: bytes, at: int) -> int:
    """Where the DER element starting at `at` ends."""
    n, start = data[at + 1], at + 2
    if n & 0x80:
        size = n & 0x7F
        n, start = int.from_bytes(data[start : start + size], "big"), start + size
    return start + n


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def resigned(der: bytes, old: bytes, new: bytes) -> bytes:
    """`der` with `old` replaced by `new` (same length) and signed again by the test CA: the
    only thing wrong with it is what was replaced."""
    assert len(old) == len(new) and der.count(old) == 1
    der = der.replace(old, new)
    body = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)  # past the outer SEQUENCE's header
    tbs_end = _tlv_end(der, body)
    alg_end = _tlv_end(der, tbs_end)
    tbs, alg = der[body:tbs_end], der[tbs_end:alg_end]
    signature = CA_KEY.sign(tbs, ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr,call-arg,arg-type]
    bits = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    content = tbs + alg + bits
    return b"\x30" + _der_length(len(content)) + content


def issued(
    *names: str,
    serial: int = 0x7F11223344,
    not_after: datetime | None = None,
    extra: tuple[tuple[x509.ExtensionType, bool], ...] = (),
    common_name: str = "mx.test",
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(CA_NAME)
        .public_key(LEAF_KEY.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=60))
    )
    if names:
        sans = x509.SubjectAlternativeName([x509.DNSName(n) for n in names])
        builder = builder.add_extension(sans, critical=False)
    for ext, critical in extra:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(CA_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


def _private(n: int) -> ObjectIdentifier:
    return ObjectIdentifier(f"1.3.6.1.4.1.99999.{n}")


def _opaque(n: int, size: int = 2) -> tuple[x509.ExtensionType, bool]:
    return x509.UnrecognizedExtension(_private(n), b"\x04" + b"x" * (size - 1)), False


LATE = datetime(2040, 1, 1, tzinfo=UTC)
# name -> (DER, words the verdict must hold, whether the names could be read)
PRESENTABLE: dict[str, tuple[bytes, str, bool]] = {
    "SAN with raw bytes": (
        resigned(issued("aaaaaaaaaa.test", "mx.test"), b"aaaaaaaaaa", b"\xff\x00\xfe a\x1b[2J!"),
        "names cannot be read",
        False,
    ),
    "unknown critical extension": (
        issued("mx.test", extra=((x509.UnrecognizedExtension(_private(2), b"\x05\x00"), True),)),
        "critical extension",
        True,
    ),
    "negative serial": (
        resigned(
            issued("mx.test"), bytes.fromhex("02057f11223344"), bytes.fromhex("0205ff11223344")
        ),
        "serial number",
        True,
    ),
    "month 13": (
        resigned(issued("mx.test", not_after=LATE), b"400101000000Z", b"401301000000Z"),
        "cannot be parsed",
        False,
    ),
    "duplicate extension": (
        resigned(
            issued("mx.test", extra=(_opaque(3), _opaque(4))),
            bytes.fromhex("2b06010401868d1f04"),  # the DER of the second one's OID ...
            bytes.fromhex("2b06010401868d1f03"),  # ... made the first one's
        ),
        "Duplicate",
        False,
    ),
}
# OpenSSL will not load these for a server (it checks UTF-8 and lengths); the judge still must
# not fall over when a chain holds one.
UNPRESENTABLE = {
    "subject not UTF-8": resigned(
        issued("mx.test", common_name="cccccccc"), b"\x0c\x08cccccccc", b"\x0c\x08\xff\xfecccccc"
    ),
    "SAN length past its end": issued("aaaaaaaaaa.test")[:-80],
    "empty": b"",
    "not DER": b"\x30\x03abc",
}


def test_every_malformed_certificate_is_a_verdict_with_a_reason() -> None:
    """Straight on the DER: warnings are errors under pytest, so a warning fails here too."""
    store = xv.Store([x509.load_pem_x509_certificate(CA.cert_pem.bytes())])
    for name, (der, words, names_known) in PRESENTABLE.items():
        j = judge(store, (der,))
        assert j.trusted is False and words in (j.error or ""), (name, j.error)
        assert j.names_known is names_known, name
    for name, der in UNPRESENTABLE.items():
        j = judge(store, (der,) if der else ())
        assert j.trusted is False and j.error and j.names_known is False, name
        assert j.certificate is None, name
    good = issued("mx.test")
    assert judge(store, (good,)).trusted is True
    # A chain whose second certificate is garbage: the leaf's facts stand, trust does not.
    j = judge(store, (good, b"\x30\x03abc"))
    assert j.certificate is not None and not j.trusted and "chain" in (j.error or "")
    assert tlsa_matches("3 1 1 " + "00" * 32, b"\x30\x03abc") is False


def test_random_corruptions_never_escape_the_judge() -> None:
    store = xv.Store([x509.load_pem_x509_certificate(CA.cert_pem.bytes())])
    good = issued("mx.test", "*.w.test")
    rng = random.Random(13)
    reasons = set()
    for _ in range(3000):
        der = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            der[rng.randrange(len(der))] = rng.randrange(256)
        j = judge(store, (bytes(der),))
        reasons.add((j.error or "trusted").split(":")[0])
    # Most corruptions break the parse or the signature; each is named.
    assert len(reasons) > 3 and "the server's certificate cannot be parsed" in reasons


def _server_context(der: bytes, tmp: Path) -> ssl.SSLContext:
    pem = tmp / "leaf.pem"
    pem.write_bytes(
        ssl.DER_cert_to_PEM_cert(der).encode()
        + LEAF_KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pem))
    return ctx


@dataclass
class StartTlsMx:
    """A raw STARTTLS server presenting one certificate; counts connections."""

    ctx: ssl.SSLContext
    connections: int = 0

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        w.write(b"220 mx.test ESMTP\r\n")
        while line := await r.readline():
            verb = line.split()[0].upper() if line.split() else b""
            if verb == b"STARTTLS":
                w.write(b"220 2.0.0 go ahead\r\n")
                await w.drain()
                await w.start_tls(self.ctx)
                continue
            if verb == b"QUIT":
                w.write(b"221 2.0.0 bye\r\n")
                await w.drain()
                return
            w.write(b"250-mx.test\r\n250 STARTTLS\r\n" if verb == b"EHLO" else b"250 2.0.0 ok\r\n")
            await w.drain()


@pytest.mark.parametrize("case", list(PRESENTABLE))
def test_malformed_certificate_on_the_wire_is_a_tls_fact(
    loop_thread: LoopThread, cafile: str, case: str, tmp_path: Path
) -> None:
    der, words, names_known = PRESENTABLE[case]
    srv = loop_thread.run(start_raw(StartTlsMx(_server_context(der, tmp_path))))
    try:
        args = [f"[127.0.0.1]:{port_of(srv)}", "--cafile", cafile, "--timeout", "3"]
        r = invoke(*args, "--helo", "probe.test", "--format", "json")
        text = invoke(*args, "--helo", "probe.test")
    finally:
        loop_thread.loop.call_soon_threadsafe(srv.close)
    assert r.exit_code == 0, r.output  # opportunistic TLS goes on: the session is accepted
    assert r.stderr == "" and "Traceback" not in r.output
    tls = valid(json.loads(r.stdout))["sessions"][0]["tls"]
    assert tls["ok"] is True and tls["trusted"] is False
    assert words in tls["verify_error"]
    if not names_known:
        assert tls["name_matches"] is None
        assert "Name matches: - (127.0.0.1)" in text.stdout
    assert text.exit_code == 0 and not RAW_CONTROL.search(text.stdout)


async def test_a_certificate_over_64_kb_is_judged_and_its_session_simply_not_kept(
    tmp_path: Path,
) -> None:
    # OpenSSL cannot serialise a TLS session holding a certificate this big (i2d fails):
    # the session is not kept for resumption, and the next one makes a full handshake.
    der = issued("mx.test", extra=(_opaque(1, 70_000),))
    assert len(der) > 64 * 1024
    mx = StartTlsMx(_server_context(der, tmp_path))
    srv = await start_raw(mx)
    cafile = tmp_path / "ca.pem"
    CA.cert_pem.write_to_path(str(cafile))
    run = RunContext()
    opts = SessionOptions(helo="probe.test", cafile=str(cafile), timeouts=Timeouts(3))
    try:
        first = await run_session("mx.test", "127.0.0.1", port_of(srv), opts, run)
        second = await run_session("mx.test", "127.0.0.1", port_of(srv), opts, run)
    finally:
        srv.close()
    for s in (first, second):
        assert s.completed and s.tls.ok and s.tls.trusted is True and s.tls.name_matches is True
        assert s.tls.resumed is False
    assert len(run.tls.sessions) == 0 and mx.connections == 2


# -- names from DNS that are no host names ------------------------------------------------------

LONG = "\\255" * 63  # a 63-byte label: legal in DNS, 252 characters once escaped
BAD_NAMES = ["\\255x.w.test", "a\\000b.w.test", "sp\\032ace.w.test", f"{LONG}.w.test"]
NAMES_ZONE = "\n".join(
    [
        *(f"w.test. 60 IN MX {10 * (i + 1)} {n}." for i, n in enumerate(BAD_NAMES)),
        "w.test. 60 IN MX 50 alias.w.test.",
        "w.test. 60 IN MX 60 good.w.test.",
        *(f"{n}. 60 IN A 127.0.0.1" for n in BAD_NAMES),
        f"alias.w.test. 60 IN CNAME {LONG}.w.test.",
        "good.w.test. 60 IN A 127.0.0.1",
    ]
)


@pytest.fixture(scope="module")
def names_lab(loop_thread: LoopThread) -> Iterator[tuple[int, int, Scripted]]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CA.issue_cert("good.w.test").configure_cert(ctx)
    dns = ZoneDNS(NAMES_ZONE)
    dns_port = loop_thread.run(dns.start())
    handler = Scripted()
    srv = loop_thread.run(start_smtp(handler, tls_context=ctx))
    yield dns_port, port_of(srv), handler
    loop_thread.loop.call_soon_threadsafe(srv.close)
    loop_thread.run(dns.stop())


def test_probe_records_bad_mx_names_and_probes_the_good_host(
    names_lab: tuple[int, int, Scripted], cafile: str
) -> None:
    dns_port, smtp_port, _ = names_lab
    args = ["w.test", "--all", "--nameserver", f"127.0.0.1:{dns_port}", "--port", str(smtp_port)]
    r = invoke(*args, "--cafile", cafile, "--timeout", "3", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = valid(json.loads(r.stdout))
    hosts = {h["host"]: h for h in doc["mx"]}
    for name in BAD_NAMES:
        assert hosts[name]["status"] == "error" and hosts[name]["addresses"] == []
        assert "not a valid host name" in hosts[name]["error"]
    alias = hosts["alias.w.test"]
    assert alias["status"] == "error" and "alias (CNAME)" in alias["error"]
    assert [s["host"] for s in doc["sessions"]] == ["good.w.test"]
    assert doc["sessions"][0]["tls"]["trusted"] is True
    text = invoke(*args, "--timeout", "3")
    assert text.exit_code == 0 and "Traceback" not in text.output
    assert not RAW_CONTROL.search(text.stdout)
    assert "\\255x.w.test" in text.stdout and "a\\000b.w.test" in text.stdout


def test_mx_command_reports_bad_mx_names_and_checks_the_good_host(
    names_lab: tuple[int, int, Scripted], cafile: str
) -> None:
    dns_port, smtp_port, _ = names_lab
    r = invoke(
        "mx", "w.test", "--nameserver", f"127.0.0.1:{dns_port}", "--port", str(smtp_port),
        "--cafile", cafile, "--allow-private", "--timeout", "3", "--format", "json",
    )  # fmt: skip
    assert r.exit_code == 69, r.output  # the bad names are error findings
    assert "Traceback" not in r.output
    findings = valid(json.loads(r.stdout))["findings"]
    invalid = {f["subject"] for f in findings if f["id"] == "mx-target-invalid"}
    assert invalid == {*BAD_NAMES, "alias.w.test"}
    connected = {f["subject"] for f in findings if f["id"] == "starttls-ok"}
    assert connected == {"good.w.test [127.0.0.1]"}


# -- user@[address literal] ---------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("literal", "address"), [("[127.0.0.1]", "127.0.0.1"), ("[IPv6:::1]", "::1")]
)
def test_mailbox_at_an_address_literal_is_probed_there_without_dns(
    loop_thread: LoopThread, literal: str, address: str
) -> None:
    if address == "::1" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    t = parse_target(f"user@{literal}")
    assert (t.kind, t.domain, t.host, t.rcpt) == ("address", None, address, (f"user@{literal}",))
    behaviour = Behaviour()
    dns = ZoneDNS("x.test. 60 IN A 127.0.0.1", behaviour)
    dns_port = loop_thread.run(dns.start())
    handler = Scripted()
    srv = loop_thread.run(start_smtp(handler, host=address))
    try:
        r = invoke(
            f"user@{literal}", "--nameserver", f"127.0.0.1:{dns_port}",
            "--port", str(port_of(srv)), "--timeout", "3", "--format", "json",
        )  # fmt: skip
    finally:
        loop_thread.loop.call_soon_threadsafe(srv.close)
        loop_thread.run(dns.stop())
    assert r.exit_code == 0, r.output
    doc = valid(json.loads(r.stdout))
    assert doc["dns"] is None and doc["sessions"][0]["address"] == address
    assert f"RCPT user@{literal}" in handler.seen
    assert behaviour.queries == []


# -- the budget and the caps --------------------------------------------------------------------


@dataclass
class Counting:
    """A server that counts connections, and either never says a word (a blackhole that
    accepts) or refuses at once with 421."""

    silent: bool
    connections: int = 0

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.silent:
            await asyncio.sleep(30)
            return
        w.write(b"421 4.3.2 busy, try another\r\n")
        await w.drain()


def _many_mx(n: int) -> str:
    return "\n".join(
        f"many.test. 60 IN MX {i} mx{i:02d}.many.test.\nmx{i:02d}.many.test. 60 IN A 127.0.0.1"
        for i in range(n)
    )


@pytest.fixture
def many_mx(loop_thread: LoopThread) -> Iterator[Any]:
    started: list[Any] = []

    def start(n: int, silent: bool) -> tuple[int, int, Counting]:
        dns = ZoneDNS(_many_mx(n))
        dns_port = loop_thread.run(dns.start())
        server = Counting(silent)
        srv = loop_thread.run(start_raw(server))
        started.append((dns, srv))
        return dns_port, port_of(srv), server

    yield start
    for dns, srv in started:
        loop_thread.loop.call_soon_threadsafe(srv.close)
        loop_thread.run(dns.stop())


def test_the_budget_covers_every_mx_host_of_the_target(many_mx: Any) -> None:
    dns_port, port, server = many_mx(6, silent=True)
    t0 = time.monotonic()
    r = invoke(
        "many.test", "--nameserver", f"127.0.0.1:{dns_port}", "--port", str(port),
        "--timeout", "1", "--budget", "2.5", "--format", "json",
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert r.exit_code == 75, r.output
    doc = valid(json.loads(r.stdout))
    # Six hosts that each hold a session for its 1 s greeting timeout would take 6 s; the
    # budget ends the whole probe at 2.5 s by its own clock (the wall-clock margin is for the
    # command's start-up on a busy machine).
    assert doc["elapsed_ms"] < 3500, doc["elapsed_ms"]
    assert elapsed < 5.5, elapsed
    assert 2 <= len(doc["sessions"]) <= 3 and server.connections == len(doc["sessions"])
    assert doc["sessions"][-1]["outcome"] == "budget"
    assert [n["kind"] for n in doc["notes"]] == ["budget"]
    assert "2.5 s" in doc["notes"][0]["detail"] and "2.5 s" in doc["reason"]
    text = invoke(
        "many.test", "--nameserver", f"127.0.0.1:{dns_port}", "--port", str(port),
        "--timeout", "1", "--budget", "1.5",
    )  # fmt: skip
    assert "*** the budget of 1.5 s for the whole target (--budget) ran out" in text.stdout


def test_the_caps_limit_how_many_hosts_and_addresses_are_tried(many_mx: Any) -> None:
    dns_port, port, server = many_mx(15, silent=False)
    common = ["many.test", "--nameserver", f"127.0.0.1:{dns_port}", "--port", str(port)]
    r = invoke(*common, "--timeout", "2", "--format", "json")
    assert r.exit_code == 75, r.output
    doc = valid(json.loads(r.stdout))
    assert len(doc["mx"]) == 10 and len(doc["sessions"]) == 10 and server.connections == 10
    assert doc["notes"] == [
        {
            "kind": "max_mx",
            "detail": "only the first 10 of 15 MX hosts were looked up and tried (--max-mx)",
            "message": {"id": "runner.max_mx", "params": {"tried": 10, "total": 15}},
        }
    ]
    raised = valid(json.loads(invoke(*common, "--max-mx", "12", "--format", "json").stdout))
    assert len(raised["sessions"]) == 12 and server.connections == 22
    few = valid(json.loads(invoke(*common, "--max-addresses", "3", "--format", "json").stdout))
    assert len(few["sessions"]) == 3
    assert [n["kind"] for n in few["notes"]] == ["max_mx", "max_addresses"]
    assert invoke(*common, "--max-mx", "0").exit_code == 64


# -- MTA-STS policy in pieces -------------------------------------------------------------------

POLICY = (
    b"version: STSv1\r\nmode: enforce\r\nmx: mx1.sts.test\r\nmx: *.sts.test\r\nmax_age: 86400\r\n"
)


@pytest.fixture
async def sts(tmp_path: Path) -> AsyncIterator[Any]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CA.issue_cert("mta-sts.sts.test").configure_cert(ctx)
    cafile = tmp_path / "ca.pem"
    CA.cert_pem.write_to_path(str(cafile))
    dns = ZoneDNS("mta-sts.sts.test. 60 IN A 127.0.0.1")
    res = make_resolver([("127.0.0.1", await dns.start())], lifetime=2)
    servers: list[asyncio.Server] = []

    async def serve(chunks: list[bytes], pause: float, hold: float = 0.0) -> int:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await r.readuntil(b"\r\n\r\n")
                for chunk in chunks:
                    w.write(chunk)
                    await w.drain()
                    await asyncio.sleep(pause)
                await asyncio.sleep(hold)  # a server that keeps the connection open
            except (ConnectionError, asyncio.CancelledError, ssl.SSLError):
                pass
            finally:
                w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
        servers.append(srv)
        return port_of(srv)

    yield serve, res, str(cafile)
    for srv in servers:
        srv.close()
    await dns.stop()


async def test_a_policy_arriving_in_several_reads_is_read_whole(sts: Any) -> None:
    serve, res, cafile = sts
    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + POLICY
    # Cut mid-header and mid-line, each piece a separate TLS record some time after the last.
    pieces = [response[i : i + 17] for i in range(0, len(response), 17)]
    port = await serve(pieces, 0.02)
    policy = await fetch_policy(res, "sts.test", port=port, cafile=cafile, timeout=5)
    assert policy.fetched and policy.error is None
    assert policy.mode == "enforce" and policy.mx_patterns == ("mx1.sts.test", "*.sts.test")


async def test_a_policy_with_a_length_is_read_to_it_in_pieces(sts: Any) -> None:
    serve, res, cafile = sts
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(POLICY)
    pieces = [head[:9], head[9:], POLICY[:20], POLICY[20:50], POLICY[50:]]
    port = await serve(pieces, 0.02, hold=10)
    t0 = time.monotonic()
    policy = await fetch_policy(res, "sts.test", port=port, cafile=cafile, timeout=5)
    assert time.monotonic() - t0 < 3  # it did not wait for the server to close
    assert policy.fetched and policy.mx_patterns == ("mx1.sts.test", "*.sts.test")


@pytest.mark.parametrize("announced", [False, True])
async def test_a_policy_over_the_limit_is_refused(sts: Any, announced: bool) -> None:
    serve, res, cafile = sts
    body = POLICY + b"# " + b"x" * POLICY_LIMIT + b"\r\n"
    length = b"Content-Length: %d\r\n" % len(body) if announced else b""
    big = b"HTTP/1.1 200 OK\r\n" + length + b"\r\n" + body
    port = await serve([big[i : i + 16_384] for i in range(0, len(big), 16_384)], 0.01)
    policy = await fetch_policy(res, "sts.test", port=port, cafile=cafile, timeout=5)
    assert not policy.fetched and "larger than 64 KB" in (policy.error or "")


async def test_a_policy_that_never_ends_stops_at_the_timeout(sts: Any) -> None:
    serve, res, cafile = sts
    port = await serve([b"HTTP/1.1 200 OK\r\n\r\n", POLICY, b""], 10)
    t0 = time.monotonic()
    policy = await fetch_policy(res, "sts.test", port=port, cafile=cafile, timeout=0.5)
    assert time.monotonic() - t0 < 3
    assert not policy.fetched and "no whole response within 0.5 s" in (policy.error or "")
