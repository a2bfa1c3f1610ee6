"""DNSSEC and DANE against real components: NSD serving a zone signed at test start by
`ldns-signzone` (with one TLSA signature and one denial signature broken on purpose), and
Debian's `unbound` validating it with the zone's trust anchor, asked by the probe.

Started once for the module on loopback ports; `.ci/run` installs nsd, unbound and
ldnsutils.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from probe.cli import cli
from probe.lab.dns import LoopThread
from probe.lab.smtp import Scripted, port_of, start_smtp
from probe.resolve import lookup, make_resolver
from probe.result import Dnssec, DnsStatus
from tests.interop.test_real_servers import free_port, stop_pid, wait_for_port, workdir

CA = trustme.CA()
CERT = CA.issue_cert("mx.dane.test")
SPKI = hashlib.sha256(
    x509.load_pem_x509_certificate(CERT.cert_chain_pems[0].bytes())
    .public_key()
    .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
).hexdigest()
MX_ADDRESS = "127.0.0.21"

SIGNED = f"""$ORIGIN dane.test.
$TTL 60
@ IN SOA ns.dane.test. hostmaster.dane.test. 1 3600 600 86400 60
@ IN NS ns.dane.test.
ns IN A 127.0.0.1
@ IN MX 10 mx.dane.test.
mx IN A {MX_ADDRESS}
_25._tcp.mx IN TLSA 3 1 1 {SPKI}
bad IN A {MX_ADDRESS}
_25._tcp.bad IN TLSA 3 1 1 {SPKI}
deny IN A {MX_ADDRESS}
deny IN AAAA ::1
nodane IN A {MX_ADDRESS}
nodane IN AAAA ::1
alias IN CNAME mx.dane.test.
bogustlsa IN MX 10 bad.dane.test.
bogusdeny IN MX 10 deny.dane.test.
none IN MX 10 nodane.dane.test.
viacname IN MX 10 alias.dane.test.
"""
PLAIN = """$ORIGIN plain.test.
$TTL 60
@ IN SOA ns.plain.test. hostmaster.plain.test. 1 3600 600 86400 60
@ IN NS ns.plain.test.
ns IN A 127.0.0.1
@ IN MX 10 mx.dane.test.
"""
NSD_CONF = """server:
    ip-address: 127.0.0.1
    port: {port}
    username: ""
    chroot: ""
    zonesdir: "{dir}"
    pidfile: "{dir}/nsd.pid"
    database: ""
    zonelistfile: "{dir}/zone.list"
    xfrdfile: "{dir}/xfrd.state"
    xfrdir: "{dir}"
    logfile: "{dir}/nsd.log"
    server-count: 1
remote-control:
    control-enable: no
zone:
    name: dane.test
    zonefile: dane.test.zone.signed
zone:
    name: plain.test
    zonefile: plain.test.zone
"""
UNBOUND_CONF = """server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    logfile: "{dir}/unbound.log"
    use-syslog: no
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "validator iterator"
    trust-anchor-file: "{dir}/{anchor}"
    local-zone: "test." nodefault
    qname-minimisation: no
    ede: yes
    val-log-level: 2
stub-zone:
    name: "dane.test"
    stub-addr: 127.0.0.1@{nsd}
stub-zone:
    name: "plain.test"
    stub-addr: 127.0.0.1@{nsd}
stub-zone:
    # Nothing else exists: the root is asked of NSD, which refuses, so nothing leaves loopback.
    name: "."
    stub-addr: 127.0.0.1@{nsd}
remote-control:
    control-enable: no
"""


@dataclass
class Lab:
    resolver_port: int
    smtp_port: int
    cafile: str


def _break_signature(zone: str, owner: str, covered: str) -> str:
    """The zone with the RRSIG over (owner, covered type) made invalid: one base64
    character of the signature changed."""
    out, broken = [], False
    for line in zone.splitlines():
        f = line.split()
        if len(f) > 5 and f[0] == owner and f[3] == "RRSIG" and f[4] == covered:
            sig = f[-1]
            mid = len(sig) // 2
            f[-1] = sig[:mid] + ("A" if sig[mid] != "A" else "B") + sig[mid + 1 :]
            line, broken = "\t".join(f), True
        out.append(line)
    assert broken, (owner, covered)
    return "\n".join(out) + "\n"


def _sign(d: Path) -> str:
    """Sign dane.test with a fresh key; break two signatures; return the anchor file name."""
    key = subprocess.run(
        ["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", "dane.test"],
        cwd=d,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (d / "dane.test.zone").write_text(SIGNED)
    subprocess.run(["ldns-signzone", "dane.test.zone", key], cwd=d, check=True)
    signed = (d / "dane.test.zone.signed").read_text()
    signed = _break_signature(signed, "_25._tcp.bad.dane.test.", "TLSA")
    # The NSEC at deny.dane.test proves that nothing exists below it: _25._tcp.deny's
    # denial of existence becomes bogus, while deny's own A and AAAA stay valid.
    signed = _break_signature(signed, "deny.dane.test.", "NSEC")
    (d / "dane.test.zone.signed").write_text(signed)
    return f"{key}.ds"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    tools = {t: shutil.which(t) for t in ("nsd", "unbound", "ldns-keygen", "ldns-signzone")}
    missing = [t for t, path in tools.items() if path is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install nsd unbound ldnsutils)")
    d = workdir()
    anchor = _sign(d)
    (d / "plain.test.zone").write_text(PLAIN)
    nsd_port, unbound_port = free_port(), free_port()
    (d / "nsd.conf").write_text(NSD_CONF.format(dir=d, port=nsd_port))
    (d / "unbound.conf").write_text(
        UNBOUND_CONF.format(dir=d, port=unbound_port, nsd=nsd_port, anchor=anchor)
    )
    CA.cert_pem.write_to_path(str(d / "ca.pem"))
    procs = [
        subprocess.Popen([str(tools["nsd"]), "-d", "-c", str(d / "nsd.conf")]),
        subprocess.Popen([str(tools["unbound"]), "-d", "-c", str(d / "unbound.conf")]),
    ]
    lt = LoopThread()
    try:
        wait_for_port(nsd_port)
        wait_for_port(unbound_port)
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        CERT.configure_cert(ctx)
        smtp = lt.run(
            start_smtp(Scripted(), host=MX_ADDRESS, tls_context=ctx, hostname="mx.dane.test")
        )
        yield Lab(unbound_port, port_of(smtp), str(d / "ca.pem"))
        lt.loop.call_soon_threadsafe(smtp.close)
    finally:
        lt.close()
        for p in procs:
            stop_pid(p.pid)
            p.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


async def _statuses(port: int, queries: list[tuple[str, str]]) -> list[tuple[DnsStatus, Dnssec]]:
    res = make_resolver([("127.0.0.1", port)], lifetime=5.0)
    got = await asyncio.gather(*(lookup(res, n, t) for n, t in queries))
    return [(g.status, g.dnssec) for g in got]


def test_the_four_dnssec_results_are_told_apart(lab: Lab) -> None:
    queries = [
        ("dane.test", "MX"),
        ("_25._tcp.mx.dane.test", "TLSA"),
        ("_25._tcp.nodane.dane.test", "TLSA"),
        ("plain.test", "MX"),
        ("_25._tcp.bad.dane.test", "TLSA"),
        ("_25._tcp.deny.dane.test", "TLSA"),
        ("nowhere.example", "MX"),
    ]
    got = asyncio.run(_statuses(lab.resolver_port, queries))
    assert got == [
        (DnsStatus.OK, Dnssec.SECURE),
        (DnsStatus.OK, Dnssec.SECURE),
        (DnsStatus.NXDOMAIN, Dnssec.SECURE),  # a validated denial: really no DANE
        (DnsStatus.OK, Dnssec.INSECURE),
        (DnsStatus.SERVFAIL, Dnssec.BOGUS),  # broken signature
        (DnsStatus.SERVFAIL, Dnssec.BOGUS),  # broken denial of existence
        (DnsStatus.SERVFAIL, Dnssec.INDETERMINATE),  # nobody serves it: nothing to judge
    ], got


def run_mx(lab: Lab, domain: str) -> dict[str, Any]:
    r = CliRunner().invoke(
        cli,
        [
            "mx",
            domain,
            "--nameserver",
            f"127.0.0.1:{lab.resolver_port}",
            "--port",
            str(lab.smtp_port),
            "--cafile",
            lab.cafile,
            "--timeout",
            "5",
            "--helo",
            "checker.test",
            "--allow-private",
            "-4",
            "--format",
            "json",
        ],
    )
    assert "Traceback" not in r.output, r.output
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def ids(doc: dict[str, Any]) -> set[str]:
    return {f["id"] for f in doc["findings"]}


def test_signed_mx_and_matching_tlsa_validate(lab: Lab) -> None:
    doc = run_mx(lab, "dane.test")
    assert "dane-match" in ids(doc), ids(doc)
    assert not ids(doc) & {"dane-mx-unsigned", "dane-unauthenticated", "dane-mismatch"}


def test_unsigned_mx_means_dane_does_not_apply(lab: Lab) -> None:
    assert "dane-mx-unsigned" in ids(run_mx(lab, "plain.test"))


def test_bogus_tlsa_and_bogus_denial_are_failures(lab: Lab) -> None:
    for domain, query in (
        ("bogustlsa.dane.test", "_25._tcp.bad.dane.test TLSA"),
        ("bogusdeny.dane.test", "_25._tcp.deny.dane.test TLSA"),
    ):
        doc = run_mx(lab, domain)
        bogus = [f for f in doc["findings"] if f["id"] == "dnssec-bogus"]
        assert [f["params"]["query"] for f in bogus] == [query], doc["findings"]
        assert "dane-match" not in ids(doc)


def test_secure_denial_is_no_dane(lab: Lab) -> None:
    found = ids(run_mx(lab, "none.dane.test"))
    assert not found & {"dnssec-bogus", "dane-match", "dane-mismatch", "dns-servfail"}, found


def test_tlsa_found_through_a_secure_cname(lab: Lab) -> None:
    """RFC 7672 §2.2.2: the MX host is an alias; its TLSA records live at the target."""
    doc = run_mx(lab, "viacname.dane.test")
    assert "dane-match" in ids(doc), ids(doc)
