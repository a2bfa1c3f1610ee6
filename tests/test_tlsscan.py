"""`mx --tls-scan`'s room on loopback: the TLS versions a server accepts, MAIL before
STARTTLS (then RSET and QUIT, never DATA), and the facts of the handshake."""

from __future__ import annotations

import asyncio
import ssl
import warnings

import pytest
import trustme

from probe.config import Timeouts
from probe.lab.smtp import Scripted, port_of, start_raw, start_smtp
from probe.result import TlsInfo
from probe.tlsfacts import GROUP_UNKNOWN, VersionState, handshake, key_exchange
from probe.tlsscan import local_problem, scan_address

CA = trustme.CA()
T = Timeouts(2)
# What the probe's own session saw: the scan runs only where STARTTLS was offered.
OFFERED = TlsInfo(
    offered=True, attempted=True, ok=True, protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384"
)


def server_ctx(lowest: str, highest: str, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    CA.issue_cert("mx.scan.test").configure_cert(ctx)
    if ciphers:
        ctx.set_ciphers(ciphers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # naming TLS 1.0 is deprecated
        ctx.minimum_version = ssl.TLSVersion[lowest]
        ctx.maximum_version = ssl.TLSVersion[highest]
    return ctx


def states(scan: object) -> dict[str, str]:
    return {v.version: v.state.value for v in scan.versions}  # type: ignore[attr-defined]


def test_tls_1_0_works_on_this_machine_at_security_level_0() -> None:
    """The premise of the lab below: this machine's OpenSSL offers TLS 1.0 and 1.1 when the
    scan's cipher string lowers the security level."""
    assert local_problem("TLSv1") is None
    assert local_problem("TLSv1.1") is None
    assert local_problem("TLSv1.2") is None and local_problem("TLSv1.3") is None


async def test_every_version_accepted_and_mail_before_starttls_taken() -> None:
    handler = Scripted()
    ctx = server_ctx("TLSv1", "TLSv1_3", "DEFAULT:@SECLEVEL=0")
    srv = await start_smtp(handler, tls_context=ctx)
    try:
        scan = await scan_address(
            "127.0.0.1", port_of(srv), "mx.scan.test", "checker.test", T, OFFERED
        )
    finally:
        srv.close()
    assert states(scan) == dict.fromkeys(("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"), "accepted")
    ciphers = {v.version: v.cipher for v in scan.versions}
    assert ciphers["TLSv1.3"] == "TLS_AES_256_GCM_SHA384"
    assert ciphers["TLSv1"] and ciphers["TLSv1"].startswith("ECDHE-ECDSA-")
    assert scan.legacy() == ("TLSv1", "TLSv1.1")
    assert scan.mail is not None and scan.mail.accepted is True
    assert scan.mail.reply == "250 2.1.0 Sender OK"
    assert scan.connections == 5
    # Four handshakes after EHLO, then one MAIL FROM:<> in plaintext; no RCPT, no DATA.
    assert handler.seen == ["EHLO checker.test"] * 5 + ["MAIL <>"]


async def test_only_tls_1_2_and_up_and_starttls_required() -> None:
    srv = await start_smtp(
        Scripted(), tls_context=server_ctx("TLSv1_2", "TLSv1_3"), require_starttls=True
    )
    try:
        scan = await scan_address(
            "127.0.0.1", port_of(srv), "mx.scan.test", "checker.test", T, OFFERED
        )
    finally:
        srv.close()
    assert states(scan) == {
        "TLSv1": "refused",
        "TLSv1.1": "refused",
        "TLSv1.2": "accepted",
        "TLSv1.3": "accepted",
    }
    refused = [v for v in scan.versions if v.state is VersionState.REFUSED]
    assert all(v.detail.startswith("TLS handshake failed: ") for v in refused)
    assert scan.legacy() == ()
    assert scan.mail is not None and scan.mail.accepted is False
    assert scan.mail.reply.startswith("530 ") and "STARTTLS" in scan.mail.reply


async def test_mail_is_followed_by_rset_and_quit_and_a_refused_starttls_is_no_verdict() -> None:
    """A server that answers STARTTLS with 454: no version is called refused or accepted."""
    lines: list[list[str]] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen: list[str] = []
        lines.append(seen)
        w.write(b"220 raw.scan.test ESMTP\r\n")
        while line := await r.readline():
            seen.append(line.decode().strip())
            verb = seen[-1].split(" ")[0].upper()
            reply = {
                "EHLO": b"250-raw.scan.test\r\n250 STARTTLS\r\n",
                "STARTTLS": b"454 4.7.0 TLS not available now\r\n",
                "QUIT": b"221 bye\r\n",
            }.get(verb, b"250 ok\r\n")
            w.write(reply)
            await w.drain()
            if verb == "QUIT":
                return

    srv = await start_raw(script)
    try:
        scan = await scan_address(
            "127.0.0.1", port_of(srv), "mx.scan.test", "checker.test", T, OFFERED
        )
    finally:
        srv.close()
    assert states(scan) == dict.fromkeys(("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"), "failed")
    assert all(v.detail == "STARTTLS 454 4.7.0 TLS not available now" for v in scan.versions)
    assert lines[:4] == [["EHLO checker.test", "STARTTLS", "QUIT"]] * 4
    assert lines[4] == ["EHLO checker.test", "MAIL FROM:<>", "RSET", "QUIT"]
    assert len(lines) == 5 == scan.connections
    assert scan.mail is not None and scan.mail.accepted is True


async def test_a_version_the_local_openssl_cannot_offer_is_not_testable_and_not_tried() -> None:
    """With Python's default cipher list (no suite TLS 1.0 or 1.1 can use) those versions
    cannot be offered at all: the scan says so instead of calling them refused, and opens no
    connection for them."""
    if local_problem("TLSv1", None) is None:
        pytest.skip("this OpenSSL offers TLS 1.0 with Python's default cipher list")
    srv = await start_smtp(
        Scripted(), tls_context=server_ctx("TLSv1", "TLSv1_3", "DEFAULT:@SECLEVEL=0")
    )
    try:
        scan = await scan_address(
            "127.0.0.1", port_of(srv), "mx.scan.test", "checker.test", T, OFFERED, None
        )
    finally:
        srv.close()
    got = states(scan)
    assert got["TLSv1"] == got["TLSv1.1"] == "not-testable"
    assert got["TLSv1.2"] == got["TLSv1.3"] == "accepted"
    assert "cannot offer TLSv1" in scan.versions[0].detail
    assert scan.connections == 3  # two versions and MAIL


async def test_nothing_is_scanned_without_starttls() -> None:
    plain = TlsInfo(offered=False, attempted=False)
    scan = await scan_address("127.0.0.1", 9, "mx.scan.test", "checker.test", T, plain)
    assert scan.connections == 0 and scan.versions == () and scan.mail is None
    assert scan.skipped == "STARTTLS not offered"


def test_key_exchange_from_the_suite_and_the_certificate_key() -> None:
    assert key_exchange("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384") == ("ECDHE", True)
    assert key_exchange("TLSv1.2", "DHE-RSA-AES128-SHA256") == ("DHE", True)
    assert key_exchange("TLSv1.2", "AES256-GCM-SHA384") == ("RSA", False)
    assert key_exchange("TLSv1", "AES256-SHA") == ("RSA", False)
    assert key_exchange("TLSv1.3", "TLS_AES_128_GCM_SHA256") == ("ECDHE/DHE", True)
    der = CA.issue_cert("mx.scan.test").cert_chain_pems[0].bytes()
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = x509.load_pem_x509_certificate(der).public_bytes(Encoding.DER)
    hs = handshake(OFFERED, leaf)
    assert hs is not None
    assert (hs.key_exchange, hs.forward_secret) == ("ECDHE/DHE", True)
    assert hs.key == "EC secp256r1" and hs.signature == "ecdsa-with-SHA256"
    assert hs.group is None and hs.group_note == GROUP_UNKNOWN
    assert handshake(TlsInfo(offered=True, attempted=True), leaf) is None
