"""Live sessions against aiosmtpd and raw servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme

from probe.config import SessionOptions, Timeouts
from probe.context import RunContext
from probe.lab.smtp import Scripted, port_of, start_raw, start_smtp
from probe.result import ErrorKind, Session
from probe.session import run_session

FAST = {"connect": 2.0, "greeting": 2.0, "command": 2.0, "budget": 10.0}


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


def server_ctx(ca: trustme.CA, *names: str, **kw: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names, **kw).configure_cert(ctx)
    return ctx


@pytest.fixture
def cafile(ca: trustme.CA, tmp_path: Any) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


Starter = Callable[..., Any]


@pytest.fixture
async def smtp() -> AsyncIterator[Starter]:
    servers: list[asyncio.Server] = []

    async def start(handler: Any = None, **kw: Any) -> int:
        srv = await start_smtp(handler or Scripted(), **kw)
        servers.append(srv)
        return port_of(srv)

    yield start
    for s in servers:
        s.close()


def options(**kw: Any) -> SessionOptions:
    """SessionOptions with fast timeouts; `*_timeout` and `budget` keywords override them."""
    named = {k: kw.pop(k) for k in list(kw) if k.endswith("_timeout") or k == "budget"}
    waits = {k.removesuffix("_timeout"): v for k, v in named.items()}
    return SessionOptions(timeouts=Timeouts(**{**FAST, **waits}), **kw)


async def run(port: int, ctx: RunContext | None = None, **kw: Any) -> Session:
    """One session; sessions given the same `ctx` share TLS sessions and verdicts."""
    return await run_session("mx.test", "127.0.0.1", port, options(**kw), ctx)


def commands(s: Session) -> list[str]:
    return [st.command for st in s.steps]


def codes(s: Session) -> list[int | None]:
    return [st.reply.code if st.reply else None for st in s.steps]


async def test_full_session_with_starttls_trusted(
    smtp: Starter, ca: trustme.CA, cafile: str
) -> None:
    handler = Scripted(
        rcpt={"nobody": "550 5.1.1 <nobody@mx.test>: Recipient address rejected: User unknown"}
    )
    port = await smtp(handler, tls_context=server_ctx(ca, "mx.test"))
    s = await run(
        port, cafile=cafile, rcpts=("alice@mx.test", "nobody@mx.test"), helo="probe.example"
    )
    assert commands(s) == [
        "CONNECT",
        "EHLO",
        "STARTTLS",
        "EHLO",
        "MAIL",
        "RCPT",
        "RCPT",
        "RSET",
        "QUIT",
    ]
    assert codes(s) == [220, 250, 220, 250, 250, 250, 550, 250, 221]
    assert s.completed
    assert s.steps[0].reply is not None and s.steps[0].reply.lines[0].startswith("220 mx.test")
    ehlo = s.steps[1].reply
    assert ehlo is not None and ehlo.lines[-1].startswith("250 ")
    assert len(ehlo.lines) > 1 and all(line.startswith("250-") for line in ehlo.lines[:-1])
    assert [st.tls for st in s.steps] == [False, False, False, True, True, True, True, True, True]
    t = s.tls
    assert t.offered and t.ok and t.trusted and t.name_matches
    assert t.protocol in ("TLSv1.2", "TLSv1.3")
    assert t.certificate is not None and "mx.test" in t.certificate.sans
    assert len(t.certificate.sha256) == 64
    # The verified path uses ssl's decoding; it must agree with the full X.509 parse.
    from probe.certs import certificate_facts

    assert certificate_facts(t.certificate.der) == t.certificate
    rcpt = s.steps[6].reply
    assert rcpt is not None and rcpt.interpretation is not None
    assert rcpt.interpretation.category == "user_unknown"
    assert rcpt.interpretation.retryable is False
    assert handler.seen[0] == "EHLO probe.example"


async def test_a_finished_session_leaves_no_garbage_cycle(
    smtp: Starter, ca: trustme.CA, cafile: str
) -> None:
    """What a session built is freed when it ends, by reference counting: a cycle (the
    connection holding a method of its dialogue) kept every session's steps until the next
    collection, and made the collector a visible part of a batch's CPU."""
    import gc

    port = await smtp(Scripted(), tls_context=server_ctx(ca, "mx.test"))
    ctx = RunContext()
    await run(port, ctx, cafile=cafile, rcpts=("alice@mx.test",))  # caches warm
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        s = await run(port, ctx, cafile=cafile, rcpts=("alice@mx.test",))
        await asyncio.sleep(0.05)  # the transport's last callbacks
        gc.collect()
        ours = [
            type(o).__qualname__
            for o in gc.garbage
            if type(o).__module__.startswith("probe.")
            and not type(o).__module__.startswith("probe.lab")  # the server's side
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert s.completed and s.tls.ok
    assert ours == []


async def test_untrusted_certificate_is_recorded_and_session_goes_on(
    smtp: Starter, ca: trustme.CA, cafile: str
) -> None:
    other = trustme.CA()
    port = await smtp(tls_context=server_ctx(other, "mx.test"))
    s = await run(port, cafile=cafile, rcpts=("a@mx.test",))
    assert s.completed
    assert s.tls.ok and s.tls.trusted is False
    assert s.tls.verify_error and "certificate" in s.tls.verify_error
    assert commands(s)[:3] == ["CONNECT", "EHLO", "STARTTLS"]
    assert "RCPT" in commands(s)
    assert any(st.note and "without certificate verification" in st.note for st in s.steps)


async def test_wrong_name_and_expired(smtp: Starter, ca: trustme.CA, cafile: str) -> None:
    port = await smtp(tls_context=server_ctx(ca, "other.test"))
    s = await run(port, cafile=cafile)
    assert s.tls.trusted is True and s.tls.name_matches is False
    past = datetime.now(UTC) - timedelta(days=10)
    port2 = await smtp(
        tls_context=server_ctx(ca, "mx.test", not_before=past - timedelta(days=90), not_after=past)
    )
    s2 = await run(port2, cafile=cafile)
    assert s2.tls.trusted is False and "expired" in (s2.tls.verify_error or "")
    assert s2.tls.certificate is not None and s2.tls.certificate.days_left < 0


async def test_self_signed(smtp: Starter) -> None:
    from cryptography import x509  # noqa: F401  (trustme's root is self-signed; use it as the leaf)

    own = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    own.issue_cert("mx.test").configure_cert(ctx)
    port = await smtp(tls_context=ctx)
    s = await run(port)  # system CAs only: the test CA is unknown
    assert s.tls.ok and s.tls.trusted is False


@pytest.mark.parametrize(
    ("greeting", "code"),
    [
        ("421 4.3.2 mx.test busy, try later", 421),
        ("554 5.7.1 No SMTP service here", 554),
        ("521 5.3.2 mx.test does not accept mail", 521),
    ],
)
async def test_refusing_greetings_are_results(smtp: Starter, greeting: str, code: int) -> None:
    port = await smtp(greeting=greeting)
    s = await run(port)
    assert s.steps[0].command == "CONNECT"
    assert s.steps[0].reply is not None and s.steps[0].reply.code == code
    assert not s.completed
    assert s.steps[0].reply.interpretation is not None
    if code != 421:
        assert commands(s) == ["CONNECT", "QUIT"]


async def test_ehlo_refused_falls_back_to_helo(smtp: Starter) -> None:
    handler = Scripted(ehlo_reply="502 5.5.1 EHLO not implemented")
    port = await smtp(handler)
    s = await run(port, rcpts=("a@mx.test",))
    assert commands(s)[:3] == ["CONNECT", "EHLO", "HELO"]
    assert codes(s)[:3] == [220, 502, 250]
    assert s.completed


async def test_greylisting_reply(smtp: Starter) -> None:
    handler = Scripted(
        rcpt={
            "grey": "450 4.2.0 <grey@mx.test>: Recipient address rejected: Greylisted, see "
            "http://postgrey.schweikert.ch/help/mx.test.html"
        }
    )
    port = await smtp(handler)
    s = await run(port, rcpts=("grey@mx.test",), starttls="never")
    rcpt = next(st for st in s.steps if st.command == "RCPT")
    assert rcpt.reply is not None and rcpt.reply.interpretation is not None
    assert rcpt.reply.interpretation.category == "greylisted"
    assert rcpt.reply.interpretation.retryable


async def test_quit_after_and_null_sender(smtp: Starter) -> None:
    handler = Scripted()
    port = await smtp(handler)
    s = await run(port, quit_after="ehlo", starttls="never")
    assert commands(s) == ["CONNECT", "EHLO", "QUIT"]
    s2 = await run(port, quit_after="mail", starttls="never")
    assert commands(s2) == ["CONNECT", "EHLO", "MAIL", "RSET", "QUIT"]
    assert "MAIL " in handler.seen[-1] or handler.seen[-1].startswith("MAIL")
    mail = next(st for st in s2.steps if st.command == "MAIL")
    assert mail.sent == "MAIL FROM:<>"


async def test_starttls_required_but_not_offered(smtp: Starter) -> None:
    port = await smtp()
    s = await run(port, starttls="require")
    assert not s.completed
    assert s.steps[2].error is not None and s.steps[2].error.kind is ErrorKind.NOT_OFFERED


async def test_connection_refused_and_timeout() -> None:
    srv = await start_raw(lambda r, w: asyncio.sleep(0))
    port = port_of(srv)
    srv.close()
    await srv.wait_closed()
    s = await run(port)
    assert s.steps[0].error is not None and s.steps[0].error.kind is ErrorKind.REFUSED

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    srv2 = await start_raw(silent)
    s2 = await run(port_of(srv2), greeting_timeout=0.3)
    assert s2.steps[0].error is not None and s2.steps[0].error.kind is ErrorKind.NO_GREETING
    srv2.close()


async def test_each_reply_gets_its_whole_timeout() -> None:
    """The command timeout counts from each command: a slow but timely EHLO reply does not
    shorten the wait for the next one (the connection's one timer is set again)."""

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 slow.test ESMTP\r\n")
        await reader.readline()  # EHLO
        await asyncio.sleep(0.3)
        writer.write(b"250 slow.test\r\n")
        await reader.readline()  # MAIL: never answered
        await asyncio.sleep(5)

    srv = await start_raw(slow)
    try:
        s = await run(port_of(srv), greeting_timeout=3.0, command_timeout=0.5, starttls="never")
    finally:
        srv.close()
    assert commands(s)[:3] == ["CONNECT", "EHLO", "MAIL"]
    ehlo, mail = s.steps[1], s.steps[2]
    assert ehlo.reply is not None and ehlo.reply.code == 250 and ehlo.elapsed_ms >= 250
    assert mail.error is not None and mail.error.kind is ErrorKind.TIMEOUT
    # Its own 0.5 s: not what was left of a timer armed for the reply before it, nor the
    # greeting's longer timeout.
    assert 450 <= mail.elapsed_ms < 1500, mail.elapsed_ms


async def test_non_ascii_sender_refused_without_smtputf8(smtp: Starter) -> None:
    handler = Scripted(ehlo=["250-mx.test", "250 PIPELINING"])
    port = await smtp(handler)
    s = await run(port, mail_from="jörg@example.com", starttls="never")
    mail = next(st for st in s.steps if st.command == "MAIL")
    assert mail.error is not None and mail.error.kind is ErrorKind.REFUSED_LOCALLY
    assert not any(x.startswith("MAIL") for x in handler.seen)


async def test_implicit_tls(ca: trustme.CA, cafile: str, smtp: Starter) -> None:
    port = await smtp(ssl_context=server_ctx(ca, "mx.test"))
    s = await run(port, implicit_tls=True, cafile=cafile, rcpts=("a@mx.test",))
    assert s.completed and s.tls.implicit and s.tls.ok and s.tls.trusted
    assert s.steps[0].tls


async def test_starttls_refused_goes_on_in_plaintext(smtp: Starter) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw.test ESMTP\r\n")
        replies = {
            b"EHLO": b"250-raw.test\r\n250 STARTTLS\r\n",
            b"STARTTLS": b"454 4.7.0 TLS not available due to local problem\r\n",
            b"QUIT": b"221 bye\r\n",
        }
        while line := await reader.readline():
            verb = line.split()[0].upper() if line.split() else b""
            writer.write(replies.get(verb, b"250 2.0.0 ok\r\n"))
            await writer.drain()
            if verb == b"QUIT":
                break

    srv = await start_raw(script)
    s = await run(port_of(srv), rcpts=("a@raw.test",))
    assert commands(s) == ["CONNECT", "EHLO", "STARTTLS", "MAIL", "RCPT", "RSET", "QUIT"]
    assert s.completed and not s.tls.ok and "454" in (s.tls.error or "")
    s2 = await run(port_of(srv), starttls="require")
    assert not s2.completed and s2.outcome == "tls_failed"
    srv.close()


async def test_failed_handshake_reconnects_without_starttls() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line.split()[0].upper() if line.split() else b""
            if verb == b"EHLO":
                writer.write(b"250-raw.test\r\n250 STARTTLS\r\n")
            elif verb == b"STARTTLS":
                writer.write(b"220 go ahead\r\nthis is not TLS at all\r\n")
                await writer.drain()
                await asyncio.sleep(0.2)
                return
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()

    srv = await start_raw(script)
    s = await run(port_of(srv), rcpts=("a@raw.test",))
    assert s.tls.attempted and not s.tls.ok
    assert s.completed
    assert commands(s).count("CONNECT") == 2
    assert any(st.note == "retrying without STARTTLS" for st in s.steps)
    srv.close()


def test_cafile_adds_to_the_system_trust_instead_of_replacing_it(cafile: str) -> None:
    from probe.tls import trust_context

    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    both = trust_context(cafile).cert_store_stats()["x509_ca"]
    assert both == system + 1
    assert trust_context(None).cert_store_stats()["x509_ca"] == system


async def test_a_server_met_again_resumes_the_tls_session(
    smtp: Starter, ca: trustme.CA, cafile: str
) -> None:
    port = await smtp(tls_context=server_ctx(ca, "mx.test"))
    ctx = RunContext()
    first = await run(port, ctx, cafile=cafile, rcpts=("a@mx.test",))
    second = await run(port, ctx, cafile=cafile, rcpts=("a@mx.test",))
    fresh = await run(port, ctx, cafile=cafile, rcpts=("a@mx.test",), resume_tls=False)
    assert first.tls.ok and not first.tls.resumed
    assert second.tls.ok and second.tls.resumed
    assert not fresh.tls.resumed
    # A resumed session reports what the full handshake established: same certificate, trust
    # and name check, the same replies.
    for s in (second, fresh):
        assert s.tls.trusted is True and s.tls.name_matches is True
        assert s.tls.certificate == first.tls.certificate
        assert codes(s) == codes(first)


async def test_an_untrusted_server_resumes_without_losing_the_verify_error(
    smtp: Starter, cafile: str
) -> None:
    port = await smtp(tls_context=server_ctx(trustme.CA(), "mx.test"))
    ctx = RunContext()
    first = await run(port, ctx, cafile=cafile)
    second = await run(port, ctx, cafile=cafile)
    assert second.tls.resumed and not first.tls.resumed
    assert first.tls.trusted is False and second.tls.trusted is False
    assert second.tls.verify_error == first.tls.verify_error and first.tls.verify_error


async def test_implicit_tls_resumes_too(ca: trustme.CA, cafile: str, smtp: Starter) -> None:
    port = await smtp(ssl_context=server_ctx(ca, "mx.test"))
    ctx = RunContext()
    first = await run(port, ctx, implicit_tls=True, cafile=cafile)
    second = await run(port, ctx, implicit_tls=True, cafile=cafile)
    assert first.tls.ok and second.tls.ok and second.tls.resumed and second.tls.trusted


async def test_a_server_that_forgot_the_session_gets_a_full_handshake(
    ca: trustme.CA, cafile: str
) -> None:
    # Same address and port, new server (new ticket keys, new certificate): the session
    # offered is refused, the handshake is a full one and the new certificate is reported.
    srv = await start_smtp(Scripted(), tls_context=server_ctx(ca, "mx.test"))
    port = port_of(srv)
    ctx = RunContext()
    first = await run(port, ctx, cafile=cafile)
    srv.close()
    await srv.wait_closed()
    srv = await start_smtp(Scripted(), port=port, tls_context=server_ctx(ca, "mx.test"))
    try:
        second = await run(port, ctx, cafile=cafile)
    finally:
        srv.close()
    assert first.tls.certificate is not None and second.tls.certificate is not None
    assert second.tls.ok and not second.tls.resumed and second.tls.trusted
    assert second.tls.certificate.sha256 != first.tls.certificate.sha256


async def test_a_server_without_tickets_is_never_offered_one(
    smtp: Starter, ca: trustme.CA, cafile: str
) -> None:
    ctx = server_ctx(ca, "mx.test")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.num_tickets = 0
    port = await smtp(tls_context=ctx)
    ctx = RunContext()
    sessions = [await run(port, ctx, cafile=cafile) for _ in range(2)]
    assert all(s.tls.ok and not s.tls.resumed for s in sessions)


async def test_a_server_named_by_its_address_resumes_too(
    ca: trustme.CA, cafile: str, smtp: Starter
) -> None:
    # No name to send: the loop fills in the address itself; the session must still be found.
    port = await smtp(ssl_context=server_ctx(ca, "127.0.0.1"))
    opts = options(implicit_tls=True, cafile=cafile)
    ctx = RunContext()
    first = await run_session("127.0.0.1", "127.0.0.1", port, opts, ctx)
    second = await run_session("127.0.0.1", "127.0.0.1", port, opts, ctx)
    assert first.tls.ok and not first.tls.resumed
    assert second.tls.ok and second.tls.resumed
