"""`smtp-probe mx`: every finding id produced by a loopback lab, and shown absent elsewhere."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
import trustme
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from probe.checks import mx_pattern_matches, tlsa_matches
from probe.cli import cli
from probe.lab.dns import Behaviour, LoopThread, ZoneDNS
from probe.lab.smtp import Scripted, port_of, start_raw, start_smtp
from tests.conftest import valid

FULL_EHLO = [
    "250-{name}",
    "250-PIPELINING",
    "250-SIZE 10240000",
    "250-STARTTLS",
    "250-ENHANCEDSTATUSCODES",
    "250-8BITMIME",
    "250-SMTPUTF8",
    "250 CHUNKING",
]

CA = trustme.CA()
OTHER_CA = trustme.CA()
NOW = datetime.now(UTC)


def ctx_for(ca: trustme.CA, name: str, **kw: Any) -> tuple[ssl.SSLContext, bytes]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert = ca.issue_cert(name, **kw)
    cert.configure_cert(ctx)
    return ctx, cert.cert_chain_pems[0].bytes()


GOOD_CTX, GOOD_PEM = ctx_for(CA, "mx.good.test")
SPKI = hashlib.sha256(
    x509.load_pem_x509_certificate(GOOD_PEM)
    .public_key()
    .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
).hexdigest()

ZONE = f"""
good.test. 60 IN MX 10 mx.good.test.
good.test. 60 IN TXT "v=spf1 ip4:127.0.0.2" " -all"
good.test. 60 IN TXT "google-site-verification=abc"
_dmarc.good.test. 60 IN TXT "v=DMARC1; p=reject; rua=mailto:d@good.test"
_mta-sts.good.test. 60 IN TXT "v=STSv1; id=20261122"
_smtp._tls.good.test. 60 IN TXT "v=TLSRPTv1; rua=mailto:tls@good.test"
mta-sts.good.test. 60 IN A 127.0.0.2
mx.good.test. 60 IN A 127.0.0.2
mx.good.test. 60 IN AAAA ::1
_25._tcp.mx.good.test. 60 IN TLSA 3 1 1 {SPKI}
2.0.0.127.in-addr.arpa. 60 IN PTR mx.good.test.

bad.test. 60 IN MX 10 plain.bad.test.
bad.test. 60 IN MX 20 plain.bad.test.
bad.test. 60 IN MX 20 wrong.bad.test.
bad.test. 60 IN TXT "v=spf1 -all"
bad.test. 60 IN TXT "v=spf1 a -all"
_dmarc.bad.test. 60 IN TXT "v=DMARC1; rua=mailto:d@bad.test"
_mta-sts.bad.test. 60 IN TXT "v=STSv1; id=1"
plain.bad.test. 60 IN A 127.0.0.3
wrong.bad.test. 60 IN A 127.0.0.4
4.0.0.127.in-addr.arpa. 60 IN PTR elsewhere.bad.test.
_25._tcp.wrong.bad.test. 60 IN TLSA 3 1 1 {"00" * 32}

certs.test. 60 IN MX 10 expired.certs.test.
certs.test. 60 IN MX 20 soon.certs.test.
certs.test. 60 IN MX 30 refuse.certs.test.
certs.test. 60 IN MX 40 broken.certs.test.
certs.test. 60 IN MX 50 closed.certs.test.
certs.test. 60 IN MX 60 banner.certs.test.
_dmarc.certs.test. 60 IN TXT "v=DMARC1; p=none"
_dmarc.certs.test. 60 IN TXT "v=DMARC1; p=reject"
_mta-sts.certs.test. 60 IN TXT "v=STSv1; id=2"
mta-sts.certs.test. 60 IN A 127.0.0.2
expired.certs.test. 60 IN A 127.0.0.5
soon.certs.test. 60 IN A 127.0.0.6
refuse.certs.test. 60 IN A 127.0.0.7
broken.certs.test. 60 IN A 127.0.0.8
closed.certs.test. 60 IN A 127.0.0.9
banner.certs.test. 60 IN A 127.0.0.10
_25._tcp.soon.certs.test. 60 IN TLSA 3 1 1 {"11" * 32}

implicit.test. 60 IN A 127.0.0.3
nothing.test. 60 IN TXT "just text"
nullok.test. 60 IN MX 0 .
nullmixed.test. 60 IN MX 0 .
nullmixed.test. 60 IN MX 10 mx.good.test.
nullpref.test. 60 IN MX 10 .
equal.test. 60 IN MX 10 mx.good.test.
equal.test. 60 IN MX 10 plain.bad.test.
cname.test. 60 IN MX 10 alias.cname.test.
alias.cname.test. 60 IN CNAME mx.good.test.
iplit.test. 60 IN MX 10 192.0.2.1.
rawname.test. 60 IN MX 10 b\\255d\\000.rawname.test.
b\\255d\\000.rawname.test. 60 IN A 127.0.0.2
dangling.test. 60 IN MX 10 gone.dangling.test.
noaddr.test. 60 IN MX 10 host.noaddr.test.
host.noaddr.test. 60 IN TXT "no address here"
mismatch.test. 60 IN MX 10 mx.good.test.
_mta-sts.mismatch.test. 60 IN TXT "v=STSv1; id=3"
mta-sts.mismatch.test. 60 IN A 127.0.0.2
trunc.test. 60 IN MX 10 mx.good.test.
trunc.test. 60 IN TXT "v=spf1 -all"
sf.test. 60 IN MX 10 mx.good.test.
lame.test. 60 IN MX 10 mx.good.test.
slow.test. 60 IN MX 10 mx.good.test.
"""

POLICIES = {
    "mta-sts.good.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.good.test\r\nmax_age: 86400\r\n",
    "mta-sts.mismatch.test": "version: STSv1\r\nmode: enforce\r\nmx: *.example.net\r\nmax_age: 86400\r\n",
    "mta-sts.certs.test": "version: STSv1\r\nmode: bogus\r\nmax_age: 86400\r\n",
}


@dataclass
class MxLab:
    dns_port: int
    smtp_port: int
    https_port: int
    cafile: str


async def https_policy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await reader.readuntil(b"\r\n\r\n")
    host = next(
        (
            line.split(b":", 1)[1].strip().decode()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"host:")
        ),
        "",
    )
    body = POLICIES.get(host)
    if body is None:
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    else:
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
        )
    await writer.drain()


async def broken_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 broken.certs.test ESMTP\r\n")
    while line := await reader.readline():
        verb = line.split()[0].upper() if line.split() else b""
        if verb == b"EHLO":
            writer.write(b"250-broken.certs.test\r\n250 STARTTLS\r\n")
        elif verb == b"STARTTLS":
            writer.write(b"220 go ahead\r\n")
            await writer.drain()
            await reader.read(100)
            writer.write(b"this is not a TLS record\r\n")
            await writer.drain()
            return
        else:
            writer.write(b"250 ok\r\n")
        await writer.drain()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MxLab]:
    cafile = tmp_path_factory.mktemp("mxca") / "ca.pem"
    CA.cert_pem.write_to_path(str(cafile))
    lt = LoopThread()
    dns = ZoneDNS(
        ZONE,
        Behaviour(
            servfail={"sf.test."},
            refused={"lame.test."},
            silent={"slow.test."},
            notimp={"odd.test."},
            authenticated={"_25._tcp.mx.good.test."},
            truncate={"trunc.test."},
        ),
    )
    servers: list[Any] = []
    try:
        dns_port = lt.run(dns.start())
        good = lt.run(
            start_smtp(
                Scripted(ehlo=[x.format(name="mx.good.test") for x in FULL_EHLO]),
                host="127.0.0.2",
                tls_context=GOOD_CTX,
                hostname="mx.good.test",
            )
        )
        port = port_of(good)
        servers.append(good)

        def add(host: str, handler: Any = None, **kw: Any) -> None:
            servers.append(lt.run(start_smtp(handler or Scripted(), host=host, port=port, **kw)))

        add("127.0.0.3", hostname="plain.bad.test")
        add(
            "127.0.0.4",
            tls_context=ctx_for(OTHER_CA, "nothing.else.test")[0],
            hostname="wrong.bad.test",
        )
        add(
            "127.0.0.5",
            hostname="expired.certs.test",
            tls_context=ctx_for(
                CA,
                "expired.certs.test",
                not_before=NOW - timedelta(days=90),
                not_after=NOW - timedelta(days=2),
            )[0],
        )
        add(
            "127.0.0.6",
            hostname="soon.certs.test",
            tls_context=ctx_for(CA, "soon.certs.test", not_after=NOW + timedelta(days=12))[0],
        )
        add("127.0.0.7", greeting="554 5.7.1 No SMTP service for you")
        add("127.0.0.10", hostname="somebody.else.test")
        servers.append(lt.run(start_raw(broken_tls, host="127.0.0.8", port=port)))
        https_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        CA.issue_cert(
            "mta-sts.good.test", "mta-sts.mismatch.test", "mta-sts.certs.test"
        ).configure_cert(https_ctx)
        https = lt.run(asyncio.start_server(https_policy, "127.0.0.2", 0, ssl=https_ctx))
        servers.append(https)
        yield MxLab(dns_port, port, port_of(https), str(cafile))
    finally:
        for s in servers:
            lt.loop.call_soon_threadsafe(s.close)
        lt.run(dns.stop())
        lt.close()


def run_mx(lab: MxLab, domain: str, *extra: str) -> tuple[int, dict[str, Any]]:
    r = CliRunner().invoke(
        cli,
        [
            "mx",
            domain,
            "--nameserver",
            f"127.0.0.1:{lab.dns_port}",
            "--port",
            str(lab.smtp_port),
            "--https-port",
            str(lab.https_port),
            "--cafile",
            lab.cafile,
            "--timeout",
            "1.5",
            "--helo",
            "checker.test",
            "--format",
            "json",
            "-4",
            *extra,
        ],
        env={"NO_COLOR": "1"},
    )
    assert "Traceback" not in r.output
    return r.exit_code, valid(json.loads(r.stdout))


CASES: dict[str, tuple[tuple[str, ...], set[str]]] = {
    "good.test": (
        ("--allow-private",),
        {
            "mx-present",
            "mx-ipv6",
            "ptr-ok",
            "smtp-greeting",
            "starttls-ok",
            "cert-ok",
            "dane-match",
            "spf-ok",
            "dmarc-ok",
            "mta-sts-ok",
            "tlsrpt-ok",
            "mx-private-address",
        },
    ),
    "bad.test": (
        (),
        {
            "mx-duplicate-target",
            "mx-equal-preference",
            "mx-no-ipv6",
            "mx-private-address",
            "ptr-missing",
            "ptr-not-confirmed",
            "starttls-missing",
            "smtp-extensions-missing",
            "cert-name-mismatch",
            "cert-untrusted",
            "dane-unauthenticated",
            "dane-mismatch",
            "spf-multiple",
            "dmarc-no-policy",
            "mta-sts-policy-unreachable",
            "tlsrpt-missing",
        },
    ),
    "certs.test": (
        ("--allow-private",),
        {
            "cert-expired",
            "cert-expiring",
            "smtp-greeting-refused",
            "starttls-failed",
            "smtp-unreachable",
            "smtp-banner-name",
            "spf-missing",
            "dmarc-multiple",
            "mta-sts-policy-invalid",
        },
    ),
    "implicit.test": (
        ("--no-connect",),
        {"mx-missing-implicit", "dmarc-missing", "mta-sts-missing"},
    ),
    "nothing.test": (("--no-connect",), {"mx-missing-no-address"}),
    "nullok.test": (("--no-connect",), {"null-mx"}),
    "nullmixed.test": (("--no-connect",), {"null-mx-mixed"}),
    "nullpref.test": (("--no-connect",), {"null-mx-preference"}),
    "equal.test": (("--no-connect",), {"mx-equal-preference"}),
    "cname.test": (("--no-connect",), {"mx-target-cname"}),
    "iplit.test": (("--no-connect",), {"mx-target-ip"}),
    "rawname.test": (("--no-connect",), {"mx-target-invalid"}),
    "dangling.test": (("--no-connect",), {"mx-target-nxdomain"}),
    "noaddr.test": (("--no-connect",), {"mx-target-no-address"}),
    "mismatch.test": (("--no-connect",), {"mta-sts-mx-mismatch"}),
    "sf.test": (("--no-connect",), {"dns-servfail"}),
    "lame.test": (("--no-connect",), {"dns-lame"}),
    "slow.test": (("--no-connect", "--timeout", "1"), {"dns-timeout"}),
    "odd.test": (("--no-connect",), {"dns-error"}),
    # Truncated over UDP, answered over TCP: a real answer, not a DNS finding.
    "trunc.test": (("--no-connect",), {"mx-present", "spf-ok"}),
    "nowhere.test": (("--no-connect",), {"domain-nxdomain"}),
}
SEEN: dict[str, set[str]] = {}


@pytest.mark.parametrize("domain", list(CASES))
def test_findings(lab: MxLab, domain: str) -> None:
    extra, expected = CASES[domain]
    status, doc = run_mx(lab, domain, *extra)
    ids = {f["id"] for f in doc["findings"]}
    SEEN[domain] = ids
    assert expected <= ids, (domain, expected - ids, ids)
    assert doc["schema"] == "smtp-probe/mx/2" and doc["domain"] == domain
    for f in doc["findings"]:
        assert {"id", "severity", "subject", "message"} <= set(f)
        assert f["severity"] in ("error", "warning", "info", "ok")
        assert "{" not in f["message"], f
    errors = [f for f in doc["findings"] if f["severity"] == "error"]
    if domain == "nowhere.test":
        assert status == 68
    else:
        assert status == (69 if errors else 0), (domain, errors)
    sevs = [("ok", "info", "warning", "error").index(f["severity"]) for f in doc["findings"]]
    assert sevs == sorted(sevs, reverse=True)


def test_good_domain_has_no_problem(lab: MxLab) -> None:
    status, doc = run_mx(lab, "good.test", "--allow-private")
    bad = [f for f in doc["findings"] if f["severity"] in ("error", "warning")]
    assert status == 0 and not bad, bad
    strict = run_mx(lab, "good.test")  # without --allow-private the loopback MX is a warning
    assert strict[0] == 0
    assert run_mx(lab, "good.test", "--fail-on", "warning")[0] == 69


def test_every_finding_id_is_produced_and_shown_absent(lab: MxLab) -> None:
    for domain in CASES:
        if domain not in SEEN:
            SEEN[domain] = {f["id"] for f in run_mx(lab, domain, *CASES[domain][0])[1]["findings"]}
    with (
        resources.files("probe.catalog").joinpath("locales", "en", "findings.toml").open("rb") as f
    ):
        all_ids = set(tomllib.load(f))
    produced = set().union(*SEEN.values())
    assert all_ids - produced == set(), f"never produced: {all_ids - produced}"
    for fid in all_ids:
        assert any(fid not in ids for ids in SEEN.values()), f"{fid} is never absent"


def test_text_output_groups_by_host(lab: MxLab) -> None:
    r = CliRunner().invoke(
        cli,
        [
            "mx",
            "bad.test",
            "--nameserver",
            f"127.0.0.1:{lab.dns_port}",
            "--port",
            str(lab.smtp_port),
            "--timeout",
            "1.5",
            "-4",
        ],
        env={"NO_COLOR": "1"},
    )
    assert r.exit_code == 69
    out = r.stdout
    assert "MX 10 plain.bad.test" in out and "MX 20 wrong.bad.test" in out
    assert out.index("[error]") < out.index("[info]")
    assert "Fix:" in out and "(RFC " in out


def test_pure_helpers() -> None:
    assert mx_pattern_matches("*.example.net", "mx1.example.net")
    assert not mx_pattern_matches("*.example.net", "a.b.example.net")
    assert mx_pattern_matches("MX.Good.test", "mx.good.test")
    der = x509.load_pem_x509_certificate(GOOD_PEM).public_bytes(Encoding.DER)
    assert tlsa_matches(f"3 1 1 {SPKI}", der)
    assert tlsa_matches(f"3 0 1 {hashlib.sha256(der).hexdigest()}", der)
    assert not tlsa_matches(f"3 1 1 {'00' * 32}", der)
