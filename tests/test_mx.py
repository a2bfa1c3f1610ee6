"""`smtp-probe mx`: every finding id produced by a loopback lab, and shown absent elsewhere."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import tomllib
import warnings
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

# DANE labs: a DANE-EE certificate whose names and dates are wrong (they must not matter), a
# chain under an intermediate CA published as DANE-TA, and the same anchor with a leaf that
# names another host.
EE_CTX, EE_PEM = ctx_for(
    OTHER_CA,
    "other.name.test",
    not_before=NOW - timedelta(days=90),
    not_after=NOW - timedelta(days=2),
)
INTER = CA.create_child_ca()
TA_CTX, _ = ctx_for(INTER, "mx.ta.test")
TA_BAD_CTX, _ = ctx_for(INTER, "wrong.ta.test")
INTER_SHA = hashlib.sha256(
    x509.load_pem_x509_certificate(INTER.cert_pem.bytes()).public_bytes(Encoding.DER)
).hexdigest()


def tls_scan_ctx(
    name: str, lowest: str, highest: str, ciphers: str | None = None
) -> ssl.SSLContext:
    """A server context for `--tls-scan`: the versions it takes, and an RSA key (so that a
    cipher list of RSA key transport suites can be chosen)."""
    ctx = ctx_for(CA, name, key_type=trustme.KeyType.RSA)[0]
    if ciphers:
        ctx.set_ciphers(ciphers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # naming TLS 1.0 is deprecated
        ctx.minimum_version = ssl.TLSVersion[lowest]
        ctx.maximum_version = ssl.TLSVersion[highest]
    return ctx


# TLS 1.0 to 1.2 with RSA key transport only (OpenSSL needs @SECLEVEL=0 for the old versions);
# and TLS 1.2 and 1.3 only, requiring STARTTLS before MAIL.
LEGACY_CTX = tls_scan_ctx(
    "mx.legacy.tls.test", "TLSv1", "TLSv1_2", "AES256-GCM-SHA384:AES256-SHA:@SECLEVEL=0"
)
MODERN_CTX = tls_scan_ctx("mx.modern.tls.test", "TLSv1_2", "TLSv1_3")


def spki_sha256(pem: bytes) -> str:
    key = x509.load_pem_x509_certificate(pem).public_key()
    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


LONG_SPF_A = " ".join(f"ip4:192.0.2.{i}" for i in range(1, 16))
LONG_SPF_B = " " + " ".join(f"include:_spf{i}.provider-with-a-long-name.example" for i in range(4))
LONG_SPF_C = " " + " ".join(f"include:_spf{i}.another-provider.example" for i in range(4, 8))
LONG_SPF = f"v=spf1 {LONG_SPF_A}{LONG_SPF_B}{LONG_SPF_C} ~all"
BIG = 40
BIG_ZONE = "".join(f"bigmx.test. 60 IN MX {i} h{i}.bigmx.test.\n" for i in range(BIG))

ZONE = (
    BIG_ZONE
    + f"""
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
lamedel.test. 60 IN MX 10 mx.good.test.
signed.test. 60 IN MX 10 mx.signed.test.
mx.signed.test. 60 IN A 127.0.0.11
_25._tcp.mx.signed.test. 60 IN TLSA 3 1 1 {spki_sha256(EE_PEM)}
_25._tcp.mx.signed.test. 60 IN TLSA 1 1 1 {spki_sha256(EE_PEM)}
unsigned.test. 60 IN MX 10 mx.signed.test.
usage1.test. 60 IN MX 10 mx.usage1.test.
mx.usage1.test. 60 IN A 127.0.0.2
_25._tcp.mx.usage1.test. 60 IN TLSA 1 1 1 {SPKI}
ta.test. 60 IN MX 10 mx.ta.test.
ta.test. 60 IN MX 20 mx.tabad.test.
mx.ta.test. 60 IN A 127.0.0.12
mx.tabad.test. 60 IN A 127.0.0.13
_25._tcp.mx.ta.test. 60 IN TLSA 2 0 1 {INTER_SHA}
_25._tcp.mx.tabad.test. 60 IN TLSA 2 0 1 {INTER_SHA}
stsexpired.test. 60 IN MX 10 mx.good.test.
_mta-sts.stsexpired.test. 60 IN TXT "v=STSv1; id=1"
mta-sts.stsexpired.test. 60 IN A 127.0.0.14
stswrong.test. 60 IN MX 10 mx.good.test.
_mta-sts.stswrong.test. 60 IN TXT "v=STSv1; id=1"
mta-sts.stswrong.test. 60 IN A 127.0.0.15
stsbig.test. 60 IN MX 10 mx.good.test.
_mta-sts.stsbig.test. 60 IN TXT "v=STSv1; id=1"
mta-sts.stsbig.test. 60 IN A 127.0.0.2
stsredirect.test. 60 IN MX 10 mx.good.test.
_mta-sts.stsredirect.test. 60 IN TXT "v=STSv1; id=1"
mta-sts.stsredirect.test. 60 IN A 127.0.0.2
stsbad.test. 60 IN MX 10 mx.good.test.
_mta-sts.stsbad.test. 60 IN TXT "v=STSv1; id=1"
mta-sts.stsbad.test. 60 IN A 127.0.0.2
stsrecord.test. 60 IN MX 10 mx.good.test.
_mta-sts.stsrecord.test. 60 IN TXT "v=STSv1; id=not-an-id!"
mta-sts.stsrecord.test. 60 IN A 127.0.0.2
_smtp._tls.stsrecord.test. 60 IN TXT "v=TLSRPTv1; rua=ftp://reports.stsrecord.test"
stscert.test. 60 IN MX 10 wrong.bad.test.
_mta-sts.stscert.test. 60 IN TXT "v=STSv1; id=1"
mta-sts.stscert.test. 60 IN A 127.0.0.2
pool.test. 60 IN MX 10 mx.good.test.
pool.test. 60 IN MX 20 plain.bad.test.
certpool.test. 60 IN MX 10 two.certpool.test.
two.certpool.test. 60 IN A 127.0.0.2
two.certpool.test. 60 IN A 127.0.0.11
v6pool.test. 60 IN MX 10 mixed.v6pool.test.
mixed.v6pool.test. 60 IN A 127.0.0.3
mixed.v6pool.test. 60 IN AAAA ::1
longspf.test. 60 IN MX 10 mx.good.test.
longspf.test. 60 IN TXT "v=spf1 {LONG_SPF_A}" "{LONG_SPF_B}" "{LONG_SPF_C} ~all"
bogus.test. 60 IN MX 10 mx.bogus.test.
mx.bogus.test. 60 IN A 127.0.0.2
legacy.tls.test. 60 IN MX 10 mx.legacy.tls.test.
mx.legacy.tls.test. 60 IN A 127.0.0.16
modern.tls.test. 60 IN MX 10 mx.modern.tls.test.
mx.modern.tls.test. 60 IN A 127.0.0.17
"""
)
SIGNED = {
    "good.test.",
    "_25._tcp.mx.good.test.",
    "signed.test.",
    "_25._tcp.mx.signed.test.",
    "usage1.test.",
    "_25._tcp.mx.usage1.test.",
    "ta.test.",
    "_25._tcp.mx.ta.test.",
    "_25._tcp.mx.tabad.test.",
    "bogus.test.",
    # A signed answer to a name in an unsigned zone cannot be; only TLSA is signed here.
    "_25._tcp.mx.bogus.test.",
}

POLICIES = {
    "mta-sts.good.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.good.test\r\nmax_age: 86400\r\n",
    "mta-sts.mismatch.test": "version: STSv1\r\nmode: enforce\r\nmx: *.example.net\r\nmax_age: 86400\r\n",
    "mta-sts.certs.test": "version: STSv1\r\nmode: bogus\r\nmax_age: 86400\r\n",
    "mta-sts.stsexpired.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.good.test\r\nmax_age: 86400\r\n",
    "mta-sts.stswrong.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.good.test\r\nmax_age: 86400\r\n",
    "mta-sts.stsbig.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.good.test\r\nmax_age: 86400\r\n"
    + "# padding\r\n" * 7000,
    "mta-sts.stsredirect.test": "REDIRECT https://elsewhere.test/policy.txt",
    "mta-sts.stsbad.test": "version: STSv2\nmode: strict\nmx: mx.good.test\nmax_age: 99999999999\n",
    "mta-sts.stsrecord.test": "version: STSv1\r\nmode: testing\r\nmx: mx.good.test\r\nmax_age: 604800\r\n",
    "mta-sts.stscert.test": "version: STSv1\r\nmode: enforce\r\nmx: wrong.bad.test\r\nmax_age: 604800\r\n",
}
STS_NAMES = [h for h in POLICIES if h not in ("mta-sts.stsexpired.test", "mta-sts.stswrong.test")]


@dataclass
class MxLab:
    dns_port: int
    smtp_port: int
    https_port: int
    cafile: str


async def https_policy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await _answer_policy(reader, writer)
    finally:
        writer.close()  # (Python 3.13 warns of a stream writer left open)


async def _answer_policy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
    if body is not None and body.startswith("REDIRECT "):
        where = body.split(" ", 1)[1]
        writer.write(
            f"HTTP/1.1 301 Moved\r\nLocation: {where}\r\nContent-Length: 0\r\n\r\n".encode()
        )
    elif body is None:
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
            servfail={"sf.test."} | {f"h{i}.bigmx.test." for i in range(BIG)},
            refused={"lame.test."},
            silent={"slow.test."},
            notimp={"odd.test."},
            authenticated=SIGNED,
            truncate={"trunc.test."},
            bogus={"_25._tcp.mx.bogus.test."},
            lame={"lamedel.test."},
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
        add("127.0.0.11", hostname="mx.signed.test", tls_context=EE_CTX)
        add("127.0.0.12", hostname="mx.ta.test", tls_context=TA_CTX)
        add("127.0.0.13", hostname="mx.tabad.test", tls_context=TA_BAD_CTX)
        add("::1", hostname="mixed.v6pool.test", tls_context=GOOD_CTX)
        add("127.0.0.16", hostname="mx.legacy.tls.test", tls_context=LEGACY_CTX)
        add(
            "127.0.0.17",
            hostname="mx.modern.tls.test",
            tls_context=MODERN_CTX,
            require_starttls=True,
        )
        servers.append(lt.run(start_raw(broken_tls, host="127.0.0.8", port=port)))
        https_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        CA.issue_cert(*STS_NAMES).configure_cert(https_ctx)
        https = lt.run(asyncio.start_server(https_policy, "127.0.0.2", 0, ssl=https_ctx))
        servers.append(https)
        for address, sts_ctx in (
            (
                "127.0.0.14",
                ctx_for(
                    CA,
                    "mta-sts.stsexpired.test",
                    not_before=NOW - timedelta(days=90),
                    not_after=NOW - timedelta(days=1),
                )[0],
            ),
            ("127.0.0.15", ctx_for(CA, "mta-sts.somebody-else.test")[0]),
        ):
            servers.append(
                lt.run(asyncio.start_server(https_policy, address, port_of(https), ssl=sts_ctx))
            )
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
            # Both families when asked ("-46" is this helper's word for it), else IPv4 only.
            *([] if "-46" in extra else ["-4"]),
            *(x for x in extra if x != "-46"),
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
    # REFUSED is a refusal, not a lame delegation; a referral is one.
    "lame.test": (("--no-connect",), {"dns-refused"}),
    "lamedel.test": (("--no-connect",), {"dns-lame"}),
    "bigmx.test": (("--no-connect",), {"dns-servfail"}),
    "signed.test": (("--allow-private",), {"dane-match", "dane-unusable", "dane-rollover"}),
    "unsigned.test": (("--allow-private",), {"dane-mx-unsigned", "dane-match"}),
    "usage1.test": (("--allow-private",), {"dane-unusable", "cert-name-mismatch"}),
    "ta.test": (("--allow-private",), {"dane-match", "dane-mismatch", "dane-rollover"}),
    "bogus.test": (("--allow-private",), {"dnssec-bogus"}),
    "stsexpired.test": (("--no-connect",), {"mta-sts-policy-unreachable"}),
    "stswrong.test": (("--no-connect",), {"mta-sts-policy-unreachable"}),
    "stsbig.test": (("--no-connect",), {"mta-sts-policy-unreachable"}),
    "stsredirect.test": (("--no-connect",), {"mta-sts-policy-unreachable"}),
    "stsbad.test": (("--no-connect",), {"mta-sts-policy-invalid"}),
    "stsrecord.test": (("--no-connect",), {"mta-sts-record-invalid", "tlsrpt-invalid"}),
    "stscert.test": ((), {"mta-sts-cert-invalid"}),
    "pool.test": (("--allow-private",), {"pool-starttls-inconsistent"}),
    "certpool.test": (("--allow-private",), {"pool-cert-differs"}),
    "v6pool.test": (("--allow-private", "-46"), {"pool-ipv6-differs"}),
    "legacy.tls.test": (
        ("--allow-private", "--tls-scan"),
        {"tls-legacy-versions", "smtp-mail-before-starttls", "tls-no-forward-secrecy"},
    ),
    "modern.tls.test": (
        ("--allow-private", "--tls-scan"),
        {"tls-versions-ok", "smtp-starttls-required"},
    ),
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


def by_id(doc: dict[str, Any], fid: str) -> list[dict[str, Any]]:
    return [f for f in doc["findings"] if f["id"] == fid]


def test_dane_ee_match_means_no_name_or_date_error(lab: MxLab) -> None:
    """RFC 7672 §3.1.1: under DANE-EE a certificate for another name, expired and from an
    unknown CA, is fine; the PKIX-EE record beside it is unusable, not a match."""
    status, doc = run_mx(lab, "signed.test", "--allow-private")
    ids = {f["id"] for f in doc["findings"]}
    assert not ids & {"cert-name-mismatch", "cert-expired", "cert-untrusted"}, ids
    (match,) = by_id(doc, "dane-match")
    assert match["params"]["usage"] == "DANE-EE" and match["params"]["record"].startswith("3 1 1")
    (unusable,) = by_id(doc, "dane-unusable")
    assert unusable["params"]["records"].startswith("1 1 1")
    assert status == 0


def test_pkix_ee_usage_is_never_matched(lab: MxLab) -> None:
    _, doc = run_mx(lab, "usage1.test", "--allow-private")
    ids = {f["id"] for f in doc["findings"]}
    assert "dane-match" not in ids and "dane-mismatch" not in ids
    # Nothing authenticates the certificate, so its name counts again.
    assert "cert-name-mismatch" in ids


def test_dane_ta_matched_against_the_chain_with_name_checks(lab: MxLab) -> None:
    _, doc = run_mx(lab, "ta.test", "--allow-private")
    (match,) = by_id(doc, "dane-match")
    assert match["subject"].startswith("mx.ta.test [") and match["params"]["usage"] == "DANE-TA"
    (miss,) = by_id(doc, "dane-mismatch")
    assert miss["subject"].startswith("mx.tabad.test [")
    assert (
        "wrong.ta.test" in miss["params"]["detail"] and "mx.tabad.test" in miss["params"]["detail"]
    )


def test_bogus_denial_is_a_failure_not_no_dane(lab: MxLab) -> None:
    _, doc = run_mx(lab, "bogus.test", "--allow-private")
    (bogus,) = by_id(doc, "dnssec-bogus")
    assert bogus["params"]["query"] == "_25._tcp.mx.bogus.test TLSA"
    assert "bogus" in bogus["message"].lower() or "DNSSEC" in bogus["message"]


def test_one_dns_error_for_forty_hosts_is_one_finding(lab: MxLab) -> None:
    _, doc = run_mx(lab, "bigmx.test", "--no-connect")
    servfail = by_id(doc, "dns-servfail")
    assert len(servfail) == 1, [f["subject"] for f in servfail]
    assert servfail[0]["params"]["count"] == str(BIG)
    assert all(f"h{i}.bigmx.test A" in servfail[0]["params"]["query"] for i in range(BIG))
    assert servfail[0]["subject"] == "bigmx.test"


def test_refused_and_referral_are_told_apart(lab: MxLab) -> None:
    _, refused = run_mx(lab, "lame.test", "--no-connect")
    _, lame = run_mx(lab, "lamedel.test", "--no-connect")
    assert by_id(refused, "dns-refused") and not by_id(refused, "dns-lame")
    assert by_id(lame, "dns-lame") and not by_id(lame, "dns-refused")
    assert "delegation" not in by_id(refused, "dns-refused")[0]["message"].lower()


@pytest.mark.parametrize(
    ("domain", "words"),
    [
        ("stsexpired.test", "certificate has expired"),
        ("stswrong.test", "mta-sts.stswrong.test"),
        ("stsbig.test", "larger than 64 KB"),
        ("stsredirect.test", "redirects are not followed"),
    ],
)
def test_policy_fetch_refuses_what_a_sender_refuses(lab: MxLab, domain: str, words: str) -> None:
    _, doc = run_mx(lab, domain, "--no-connect")
    (f,) = by_id(doc, "mta-sts-policy-unreachable")
    assert words in f["params"]["detail"], f["params"]
    assert not by_id(doc, "mta-sts-ok")


def test_policy_fields_and_records_are_checked(lab: MxLab) -> None:
    _, doc = run_mx(lab, "stsbad.test", "--no-connect")
    detail = by_id(doc, "mta-sts-policy-invalid")[0]["params"]["detail"]
    assert "'STSv2'" in detail and "'strict'" in detail and "over the limit" in detail
    _, doc = run_mx(lab, "stsrecord.test", "--no-connect")
    assert "not-an-id!" in by_id(doc, "mta-sts-record-invalid")[0]["params"]["detail"]
    assert "ftp://" in by_id(doc, "tlsrpt-invalid")[0]["params"]["detail"]
    _, good = run_mx(lab, "good.test", "--no-connect")
    assert by_id(good, "tlsrpt-ok")[0]["params"]["rua"] == "mailto:tls@good.test"


def test_enforced_policy_needs_pkix_valid_mx_certificates(lab: MxLab) -> None:
    _, doc = run_mx(lab, "stscert.test")
    (f,) = by_id(doc, "mta-sts-cert-invalid")
    assert f["severity"] == "error" and "wrong.bad.test [127.0.0.4]" in f["params"]["hosts"]
    _, good = run_mx(lab, "good.test", "--allow-private")
    assert not by_id(good, "mta-sts-cert-invalid")


def verdict(doc: dict[str, Any], host: str, address: str | None = None) -> dict[str, Any]:
    rows = [r for r in doc["addresses"] if r["host"] == host and address in (None, r["address"])]
    assert rows, doc["addresses"]
    return rows[0]


def answers(row: dict[str, Any]) -> tuple[tuple[bool | None, str], ...]:
    return tuple(
        (row[k]["delivers"], row[k]["reason"])
        for k in ("opportunistic", "dane_enforcing", "mta_sts_enforcing")
    )


def test_the_three_answers_per_address(lab: MxLab) -> None:
    _, good = run_mx(lab, "good.test", "--allow-private")
    row = verdict(good, "mx.good.test")
    assert answers(row) == ((True, "tls"), (True, "dane-valid"), (True, "sts-valid"))
    assert row["starttls"] is True and row["pkix_valid"] is True and row["dane"] == "validated"
    assert row["mta_sts_listed"] is True and row["family"] == 4
    _, bad = run_mx(lab, "bad.test")
    assert answers(verdict(bad, "plain.bad.test")) == (
        (True, "plaintext"),
        (True, "dane-none"),
        (True, "sts-unusable"),
    )
    _, ta = run_mx(lab, "ta.test", "--allow-private")
    assert answers(verdict(ta, "mx.tabad.test"))[1] == (False, "dane-mismatch")
    assert answers(verdict(ta, "mx.ta.test"))[1] == (True, "dane-valid")
    _, sts = run_mx(lab, "stscert.test")
    assert answers(verdict(sts, "wrong.bad.test"))[2] == (False, "sts-pkix")
    _, unsigned = run_mx(lab, "unsigned.test", "--allow-private")
    assert answers(verdict(unsigned, "mx.signed.test"))[1] == (True, "dane-none")
    _, usage1 = run_mx(lab, "usage1.test", "--allow-private")
    assert answers(verdict(usage1, "mx.usage1.test"))[1] == (True, "dane-unusable")
    _, certs = run_mx(lab, "certs.test", "--allow-private")
    assert answers(verdict(certs, "closed.certs.test"))[0] == (False, "unreachable")
    assert answers(verdict(certs, "broken.certs.test"))[0] == (
        True,
        "plaintext-after-tls-failure",
    )


def test_verdict_table_in_text(lab: MxLab) -> None:
    r = CliRunner().invoke(
        cli,
        [
            "mx",
            "ta.test",
            "--nameserver",
            f"127.0.0.1:{lab.dns_port}",
            "--port",
            str(lab.smtp_port),
            "--cafile",
            lab.cafile,
            "--allow-private",
            "-4",
        ],
        env={"NO_COLOR": "1"},
    )
    table = r.stdout.split("Would a sender deliver?", 1)[1].splitlines()
    assert "Opportunistic" in table[1] and "DANE-enforcing" in table[1]
    ok = next(line for line in table if "mx.ta.test" in line)
    bad = next(line for line in table if "mx.tabad.test" in line)
    assert "127.0.0.12" in ok and "yes: certificate matches TLSA" in ok
    assert "no: certificate does not match TLSA" in bad
    assert ok.index("yes: over TLS") < ok.index("yes: certificate matches TLSA")


def test_pool_consistency(lab: MxLab) -> None:
    _, doc = run_mx(lab, "pool.test", "--allow-private")
    (f,) = by_id(doc, "pool-starttls-inconsistent")
    assert "plain.bad.test [127.0.0.3]" in f["params"]["missing"]
    assert "mx.good.test [127.0.0.2]" in f["params"]["offering"]
    _, doc = run_mx(lab, "v6pool.test", "--allow-private", "-46")
    (f,) = by_id(doc, "pool-ipv6-differs")
    assert f["subject"] == "mixed.v6pool.test"
    assert verdict(doc, "mixed.v6pool.test", "::1")["starttls"] is True
    assert verdict(doc, "mixed.v6pool.test", "127.0.0.3")["starttls"] is False
    _, same = run_mx(lab, "good.test", "--allow-private")
    assert not {f["id"] for f in same["findings"]} & {
        "pool-starttls-inconsistent",
        "pool-cert-differs",
        "pool-ipv6-differs",
    }


def test_spf_record_is_shown_whole_and_wrapped(lab: MxLab) -> None:
    _, doc = run_mx(lab, "longspf.test", "--no-connect")
    assert by_id(doc, "spf-ok")[0]["params"]["record"] == LONG_SPF
    assert len(LONG_SPF) > 400  # longer than one TXT string, and than the old cut at 200
    r = CliRunner().invoke(
        cli,
        ["mx", "longspf.test", "--nameserver", f"127.0.0.1:{lab.dns_port}", "--no-connect"],
        env={"NO_COLOR": "1"},
    )
    lines = r.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "v=spf1" in line)
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("      "))
    block = lines[start:end]
    assert len(block) > 3
    assert all(len(line) <= 110 for line in block)
    assert " ".join(x.strip() for x in block).count(LONG_SPF) == 1


def mx_text(lab: MxLab, domain: str, *extra: str) -> tuple[int, str]:
    r = CliRunner().invoke(
        cli,
        [
            "mx",
            domain,
            "--nameserver",
            f"127.0.0.1:{lab.dns_port}",
            "--port",
            str(lab.smtp_port),
            "--timeout",
            "1.5",
            "--helo",
            "checker.test",
            "-4",
            "--allow-private",
            *extra,
        ],
        env={"NO_COLOR": "1"},
    )
    assert "Traceback" not in r.output
    return r.exit_code, r.stdout


def test_tls_scan_facts_per_address_in_json(lab: MxLab) -> None:
    _, doc = run_mx(lab, "legacy.tls.test", "--allow-private", "--tls-scan")
    (row,) = doc["tls_scan"]
    assert (row["host"], row["address"], row["connections"]) == (
        "mx.legacy.tls.test",
        "127.0.0.16",
        5,
    )
    states = {v: x["state"] for v, x in row["versions"].items()}
    assert states == {
        "TLSv1": "accepted",
        "TLSv1.1": "accepted",
        "TLSv1.2": "accepted",
        "TLSv1.3": "refused",
    }
    assert row["versions"]["TLSv1"]["cipher"] == "AES256-SHA"
    assert row["mail_before_starttls"] == {"accepted": True, "reply": "250 2.1.0 Sender OK"}
    # The probe's own handshake (at the default security level) does not agree with a
    # server that offers RSA key transport only: no handshake facts, and the finding names
    # the suites the server chose when offered everything.
    assert row["handshake"] is None
    (weak,) = by_id(doc, "tls-no-forward-secrecy")
    assert "TLSv1.2 AES256-GCM-SHA384" in weak["params"]["ciphers"]
    (legacy,) = by_id(doc, "tls-legacy-versions")
    assert legacy["params"]["versions"] == "TLSv1, TLSv1.1" and legacy["severity"] == "warning"
    assert legacy["fix"] and legacy["reference"]

    _, modern = run_mx(lab, "modern.tls.test", "--allow-private", "--tls-scan")
    (row,) = modern["tls_scan"]
    assert row["versions"]["TLSv1"]["state"] == row["versions"]["TLSv1.1"]["state"] == "refused"
    assert row["mail_before_starttls"]["accepted"] is False
    assert row["mail_before_starttls"]["reply"].startswith("530 ")
    hs = row["handshake"]
    assert hs["protocol"] == "TLSv1.3" and hs["key_exchange"] == "ECDHE/DHE"
    assert hs["forward_secrecy"] is True and hs["group"] is None
    assert "does not expose the negotiated group" in hs["group_note"]
    assert (hs["certificate_key"], hs["certificate_signature"]) == ("RSA 2048", "ecdsa-with-SHA256")
    assert by_id(modern, "smtp-starttls-required")[0]["severity"] == "warning"
    assert not by_id(modern, "tls-legacy-versions") and not by_id(modern, "tls-no-forward-secrecy")


def test_tls_scan_is_opt_in(lab: MxLab) -> None:
    _, doc = run_mx(lab, "legacy.tls.test", "--allow-private")
    assert doc["tls_scan"] == []
    assert not [f for f in doc["findings"] if f["id"].startswith("tls-")]
    r = CliRunner().invoke(cli, ["mx", "legacy.tls.test", "--tls-scan", "--no-connect"])
    assert r.exit_code == 64
    line = r.output.strip()
    assert "\n" not in line and line.startswith(
        "smtp-probe: error: --tls-scan needs --connect: it scans the addresses the probe connects "
        "to (see '"
    )
    assert line.endswith(" mx --help')")


def test_tls_scan_facts_in_text(lab: MxLab) -> None:
    _, out = mx_text(lab, "legacy.tls.test", "--tls-scan")
    assert "TLS scan (--tls-scan: extra connections to each address)" in out
    assert "  mx.legacy.tls.test [127.0.0.16]  (5 extra connection(s))" in out
    assert (
        "    TLS versions: TLSv1 accepted, TLSv1.1 accepted, TLSv1.2 accepted, TLSv1.3 refused ("
        in out
    )
    assert "    MAIL before STARTTLS: accepted (250 2.1.0 Sender OK)" in out
    _, out = mx_text(lab, "modern.tls.test", "--tls-scan")
    assert "    Handshake: TLSv1.3, TLS_AES_256_GCM_SHA384 (key exchange ECDHE/DHE)" in out
    assert "    Key exchange group: unknown (Python's ssl module" in out
    assert "    Certificate key: RSA 2048, signed with ecdsa-with-SHA256" in out
    assert "MAIL before STARTTLS: refused (530 " in out
    _, de = mx_text(lab, "modern.tls.test", "--tls-scan", "--lang", "de")
    assert "TLS-Versionen: TLSv1 abgelehnt" in de and "MAIL vor STARTTLS: abgelehnt (530 " in de


def test_sessions_to_a_domains_addresses_are_a_few_at_a_time() -> None:
    """Eight MX addresses whose greeting takes a while: the scan's sessions overlap (it is not
    one by one), but never more than `SESSIONS_AT_ONCE` are open at once."""
    from probe.mxscan import SESSIONS_AT_ONCE

    addresses = [f"127.0.1.{i}" for i in range(1, 9)]
    zone = "burst.test. 60 IN MX 10 mx.burst.test.\n"
    zone += "".join(f"mx.burst.test. 60 IN A {a}\n" for a in addresses)
    open_now, most, total = 0, 0, 0

    async def slow_refusal(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most, total
        open_now, total = open_now + 1, total + 1
        most = max(most, open_now)
        try:
            await asyncio.sleep(0.3)
            writer.write(b"554 5.7.1 not here\r\n")
            await writer.drain()
            await reader.readline()  # QUIT
            writer.write(b"221 bye\r\n")
            await writer.drain()
        finally:
            open_now -= 1

    lt = LoopThread()
    dns = ZoneDNS(zone)
    servers: list[Any] = []
    try:
        dns_port = lt.run(dns.start())
        first = lt.run(start_raw(slow_refusal, host=addresses[0]))
        servers.append(first)
        port = port_of(first)
        servers += [lt.run(start_raw(slow_refusal, host=a, port=port)) for a in addresses[1:]]
        args = ["mx", "burst.test", "--nameserver", f"127.0.0.1:{dns_port}", "--port", str(port)]
        args += ["-4", "--helo", "checker.test", "--timeout", "5", "--format", "json"]
        r = CliRunner().invoke(cli, args)
    finally:
        for s in servers:
            lt.loop.call_soon_threadsafe(s.close)
        lt.run(dns.stop())
        lt.close()
    assert "Traceback" not in r.output
    doc = valid(json.loads(r.stdout))
    assert sorted(row["address"] for row in doc["addresses"]) == addresses
    assert total == len(addresses)  # a session with every address
    assert 1 < most <= SESSIONS_AT_ONCE < len(addresses)
