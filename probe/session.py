"""I/O: one SMTP session against one address, every exchange recorded as a `Step`.

Built on aiosmtplib's protocol object, driven command by command, so that the greeting, non-2xx
replies and TLS failures are recorded instead of raised. Nothing here interprets beyond asking
the pure interpreter to annotate each reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache

from aiosmtplib.errors import (
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from probe.interpret import interpret_reply
from probe.reply import reply_from_lines
from probe.result import Certificate, ErrorKind, Session, Step, StepError, TlsInfo, WireReply

WIRE_LIMIT = 64 * 1024  # bytes of unsolicited data kept per session; the rest is counted
QUIT_AFTER = ("connect", "ehlo", "tls", "mail", "rcpt")


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """How to talk to one server; the CLI fills it from its options."""

    helo: str | None = None
    mail_from: str = ""
    rcpts: tuple[str, ...] = ()
    starttls: str = "auto"  # auto | require | never
    implicit_tls: bool = False
    cafile: str | None = None
    quit_after: str | None = None
    connect_timeout: float = 10.0
    greeting_timeout: float = 30.0
    command_timeout: float = 30.0
    budget: float = 120.0
    resume_tls: bool = True  # offer a TLS session saved from this run's last visit


class RecordingProtocol(SMTPProtocol):
    """aiosmtplib's protocol, keeping the exact bytes of each reply it parses."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lost = asyncio.Event()
        super().__init__(loop=loop, connection_lost_callback=lambda _p: self.lost.set())
        self.last_raw = b""
        self.unsolicited = bytearray()
        self.unsolicited_total = 0

    def data_received(self, data: bytes) -> None:
        waiter = self._response_waiter
        if waiter is not None and (not self._response_pending or waiter.done()):
            # aiosmtplib drops data nobody asked for; keep a bounded copy for the record.
            self._keep_unsolicited(data)
        super().data_received(data)

    def _read_response_from_buffer(self) -> SMTPResponse | None:
        before = bytes(self._buffer)
        response = super()._read_response_from_buffer()
        if response is not None:
            self.last_raw = before[: len(before) - len(self._buffer)]
            if self._buffer:
                # We never pipeline, so bytes past the reply were not asked for; left in the
                # buffer they would be taken as the answer to our next command.
                self._keep_unsolicited(bytes(self._buffer))
                del self._buffer[:]
        return response

    def _keep_unsolicited(self, data: bytes) -> None:
        self.unsolicited_total += len(data)
        room = WIRE_LIMIT - len(self.unsolicited)
        if room > 0:
            self.unsolicited += data[:room]


def _lines(raw: bytes) -> tuple[str, ...]:
    text = raw.decode("utf-8", "backslashreplace")
    return tuple(line.rstrip("\r") for line in text.split("\n") if line != "")


def _wire_reply(raw: bytes, resp: SMTPResponse, command: str) -> WireReply:
    if len(raw) > 1024:  # a long reply is rarely seen twice; keeping it would only cost memory
        return _wire_reply_cached.__wrapped__(raw, resp.code, resp.message, command)
    return _wire_reply_cached(raw, resp.code, resp.message, command)


# A batch sees the same greetings, EHLO lists and 250s thousands of times; parsing and
# interpreting is pure, so a bounded cache keeps it to once per distinct reply.
@lru_cache(maxsize=4096)
def _wire_reply_cached(raw: bytes, code: int, message: str, command: str) -> WireReply:
    lines = _lines(raw) or (f"{code} {message}",)
    reply = reply_from_lines(lines, command)
    if reply is None:
        return WireReply(code, None, lines, None)
    return WireReply(
        code,
        str(reply.enhanced) if reply.enhanced else None,
        lines,
        interpret_reply(reply, "\n".join(lines)),
    )


@lru_cache(maxsize=1)
def _fqdn() -> str:
    # getfqdn() may ask the resolver: once per process is enough.
    return socket.getfqdn()


def default_helo(sockname: Sequence[object] | None) -> str:
    """An FQDN when the machine has one, else an address literal (RFC 5321 §4.1.3)."""
    fqdn = _fqdn()
    if "." in fqdn and not fqdn.startswith("localhost") and not fqdn.endswith(".localdomain"):
        return fqdn
    if sockname:
        try:
            ip = ipaddress.ip_address(str(sockname[0]))
        except ValueError:
            ip = None
        if ip is not None:
            return f"[IPv6:{ip}]" if ip.version == 6 else f"[{ip}]"
    return "smtp-probe.invalid"


def parse_extensions(lines: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """EHLO keywords and their parameters (the first line is the server's name)."""
    out: list[tuple[str, str]] = []
    for line in lines[1:]:
        body = line[4:].strip()
        if not body:
            continue
        keyword, _, params = body.partition(" ")
        out.append((keyword.upper(), params.strip()))
    return tuple(out)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


def certificate_facts(der: bytes) -> Certificate | None:
    """Subject, issuer, names and validity of a DER certificate."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(n) for n in ext.get_values_for_type(x509.DNSName)]
        sans += [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    not_after = cert.not_valid_after_utc
    days = (not_after - datetime.now(UTC)).days
    return Certificate(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=tuple(sans),
        not_before=cert.not_valid_before_utc.isoformat(),
        not_after=not_after.isoformat(),
        days_left=days,
        sha256=hashlib.sha256(der).hexdigest(),
        der=der,
    )


_RDN = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "domainComponent": "DC",
}


def _rfc4514(name: object) -> str:
    """ssl's decoded name (RDNs in certificate order) as an RFC 4514 string (reversed order)."""
    parts = []
    if isinstance(name, tuple):
        for rdn in name:
            for key, value in rdn:
                esc = str(value).replace("\\", "\\\\").replace(",", "\\,")
                parts.append(f"{_RDN.get(str(key), str(key))}={esc}")
    return ",".join(reversed(parts))


def verified_facts(decoded: Mapping[str, object] | None, der: bytes) -> Certificate | None:
    """Certificate facts from ssl's own decoding of a verified peer certificate."""
    if not decoded or "notAfter" not in decoded:
        return None
    sans = decoded.get("subjectAltName", ())
    names = (
        [str(v) for k, v in sans if k in ("DNS", "IP Address")] if isinstance(sans, tuple) else []
    )
    not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(str(decoded["notAfter"])), UTC)
    not_before = datetime.fromtimestamp(ssl.cert_time_to_seconds(str(decoded["notBefore"])), UTC)
    return Certificate(
        subject=_rfc4514(decoded.get("subject")),
        issuer=_rfc4514(decoded.get("issuer")),
        sans=tuple(names),
        not_before=not_before.isoformat(),
        not_after=not_after.isoformat(),
        days_left=(not_after - datetime.now(UTC)).days,
        sha256=hashlib.sha256(der).hexdigest(),
        der=der,
    )


def name_matches(host: str, cert: Certificate) -> bool:
    """Whether the certificate names `host` (RFC 6125: one leftmost wildcard label)."""
    host = host.rstrip(".").lower()
    names = [n.lower().rstrip(".") for n in cert.sans]
    if not names:
        cn = [p[3:] for p in cert.subject.split(",") if p.upper().startswith("CN=")]
        names = [c.lower() for c in cn]
    for name in names:
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


class _Conversation:
    """State of one TCP connection; every exchange appends a Step."""

    def __init__(self, host: str, address: str, port: int, opts: SessionOptions) -> None:
        self.host, self.address, self.port, self.opts = host, address, port, opts
        self.steps: list[Step] = []
        self.proto: RecordingProtocol | None = None
        self.tls_active = False
        self.sockname: Sequence[object] | None = None
        self.offer = _Offer()
        self.tls_key: tuple[ssl.SSLContext, str, int, str | None] | None = None

    def _err(
        self, command: str, sent: str | None, start: float, kind: ErrorKind, detail: str
    ) -> None:
        self.steps.append(
            Step(command, sent, None, _ms(start), StepError(kind, detail), self.tls_active)
        )

    async def connect(self, tls_ctx: ssl.SSLContext | None) -> WireReply | None:
        loop = asyncio.get_running_loop()
        proto = RecordingProtocol(loop)
        start = time.perf_counter()
        server_hostname = None if _is_ip(self.host) else self.host
        _OFFER.set(self.offer)  # before the connection exists: uvloop copies the context then
        if tls_ctx is not None:
            self._offer(tls_ctx, server_hostname)
        try:
            # asyncio.timeout rather than wait_for: no extra task per connection.
            async with asyncio.timeout(self.opts.connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: proto,
                    host=self.address,
                    port=self.port,
                    ssl=tls_ctx,
                    server_hostname=server_hostname if tls_ctx else None,
                    ssl_handshake_timeout=self.opts.connect_timeout if tls_ctx else None,
                )
        except TimeoutError:
            self._err(
                "CONNECT",
                None,
                start,
                ErrorKind.TIMEOUT,
                f"no TCP connection within {self.opts.connect_timeout:g} s",
            )
            return None
        except ConnectionRefusedError:
            self._err("CONNECT", None, start, ErrorKind.REFUSED, "connection refused")
            return None
        except ssl.SSLError as e:
            self._err("CONNECT", None, start, ErrorKind.TLS_FAILED, _ssl_detail(e))
            return None
        except OSError as e:
            self._err("CONNECT", None, start, ErrorKind.UNREACHABLE, e.strerror or str(e))
            return None
        self.proto = proto
        self.tls_active = tls_ctx is not None
        self.sockname = transport.get_extra_info("sockname")
        try:
            resp = await proto.read_response(timeout=self.opts.greeting_timeout)
        except SMTPTimeoutError:
            self._err(
                "CONNECT",
                None,
                start,
                ErrorKind.NO_GREETING,
                f"connected, but no greeting within {self.opts.greeting_timeout:g} s",
            )
            await self.close()
            return None
        except (SMTPException, OSError) as e:
            self._record_failure("CONNECT", None, start, e)
            await self.close()
            return None
        reply = _wire_reply(proto.last_raw, resp, "CONNECT")
        self.steps.append(
            Step("CONNECT", None, reply, _ms(start), None, self.tls_active, self._unasked(0))
        )
        return reply

    def _unasked(self, before: int) -> str | None:
        """A note when the server sent more than the reply (we never pipeline)."""
        proto = self.proto
        if proto is None or proto.unsolicited_total <= before:
            return None
        n = proto.unsolicited_total - before
        preview = proto.unsolicited[-min(n, len(proto.unsolicited)) :][:80]
        text = preview.decode("utf-8", "backslashreplace")
        return f"the server also sent {n} bytes nobody asked for (discarded): {text!r}"

    def _record_failure(
        self, command: str, sent: str | None, start: float, e: BaseException
    ) -> None:
        if isinstance(e, SMTPTimeoutError):
            self._err(
                command,
                sent,
                start,
                ErrorKind.TIMEOUT,
                f"no reply within {self.opts.command_timeout:g} s",
            )
        elif isinstance(e, SMTPServerDisconnected):
            self._err(
                command, sent, start, ErrorKind.DISCONNECTED, "the server closed the connection"
            )
        elif isinstance(e, SMTPResponseException) and e.code == -1:
            kind = ErrorKind.TOO_LONG if "too long" in e.message.lower() else ErrorKind.PROTOCOL
            detail = (
                "reply too long"
                if kind is ErrorKind.TOO_LONG
                else "the server sent something that is not an SMTP reply"
            )
            self._err(command, sent, start, kind, detail)
        elif isinstance(e, ssl.SSLError):
            self._err(command, sent, start, ErrorKind.TLS_FAILED, _ssl_detail(e))
        else:
            self._err(command, sent, start, ErrorKind.PROTOCOL, type(e).__name__)

    async def command(self, name: str, *args: str) -> WireReply | None:
        """Send one command; record the reply or the failure."""
        sent = " ".join((name, *args)) if args else name
        start = time.perf_counter()
        if self.proto is None or not self.proto.is_connected:
            self._err(name, sent, start, ErrorKind.DISCONNECTED, "the connection is already closed")
            return None
        before = self.proto.unsolicited_total
        try:
            resp = await self.proto.execute_command(
                *(a.encode("utf-8") for a in (name, *args)), timeout=self.opts.command_timeout
            )
        except (SMTPException, OSError) as e:
            self._record_failure(name, sent, start, e)
            await self.close()
            return None
        reply = _wire_reply(self.proto.last_raw, resp, name)
        self.steps.append(
            Step(name, sent, reply, _ms(start), None, self.tls_active, self._unasked(before))
        )
        if resp.code == 421:
            await self.close()
        return reply

    async def starttls(self, ctx: ssl.SSLContext) -> tuple[WireReply | None, BaseException | None]:
        """STARTTLS and the handshake; returns the 220 reply and any handshake error."""
        start = time.perf_counter()
        if self.proto is None or not self.proto.is_connected:
            self._err(
                "STARTTLS", "STARTTLS", start, ErrorKind.DISCONNECTED, "the connection is closed"
            )
            return None, None
        proto = self.proto
        server_hostname = None if _is_ip(self.host) else self.host
        self._offer(ctx, server_hostname)
        try:
            resp = await proto.start_tls(
                ctx, server_hostname=server_hostname, timeout=self.opts.command_timeout
            )
        except SMTPResponseException as e:
            if e.code > 0:
                reply = _wire_reply(proto.last_raw, SMTPResponse(e.code, e.message), "STARTTLS")
                self.steps.append(Step("STARTTLS", "STARTTLS", reply, _ms(start)))
                return reply, None
            self._record_failure("STARTTLS", "STARTTLS", start, e)
            await self.close()
            return None, e
        except (SMTPException, OSError) as e:
            reply = None
            if proto.last_raw.startswith(b"220"):
                reply = _wire_reply(proto.last_raw, SMTPResponse(220, ""), "STARTTLS")
                self.steps.append(
                    Step(
                        "STARTTLS",
                        "STARTTLS",
                        reply,
                        _ms(start),
                        StepError(
                            ErrorKind.TLS_FAILED,
                            _ssl_detail(e)
                            if isinstance(e, ssl.SSLError)
                            else f"TLS handshake failed: {e}",
                        ),
                    )
                )
            else:
                self._record_failure("STARTTLS", "STARTTLS", start, e)
            await self.close()
            return reply, e
        reply = _wire_reply(proto.last_raw, resp, "STARTTLS")
        self.steps.append(Step("STARTTLS", "STARTTLS", reply, _ms(start)))
        self.tls_active = True
        return reply, None

    def _offer(self, ctx: ssl.SSLContext, server_hostname: str | None) -> None:
        # Kept for the save: the loop may fill in the name (the address, when there is none)
        # or encode it, and the session must go back under the key it is looked up by.
        self.tls_key = (ctx, self.address, self.port, server_hostname)
        if self.opts.resume_tls:
            self.offer.session = _TLS_SESSIONS.get(self.tls_key)

    def _keep_tls_session(self) -> None:
        obj = self.ssl_object() if self.tls_active and self.opts.resume_tls else None
        if obj is None:
            return
        # Kept after a resumption too: the server gave a fresh ticket, and RFC 8446 (C.4) asks
        # clients not to offer one ticket twice (servers with single-use tickets refuse it).
        sess = obj.session
        # TLS 1.3 sends its tickets after the handshake; a session without one cannot resume.
        if sess is not None and (sess.has_ticket or sess.id) and self.tls_key is not None:
            _TLS_SESSIONS.put(self.tls_key, sess)

    def ssl_object(self) -> ssl.SSLObject | None:
        if self.proto is None or self.proto.transport is None:
            return None
        obj = self.proto.transport.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    def abort(self) -> None:
        """Drop the connection at once, if it is still there."""
        proto, self.proto = self.proto, None
        if proto is not None and proto.transport is not None:
            _abort(proto.transport)

    async def close(self) -> None:
        """Close and wait until the transport is really gone (TLS shutdown included)."""
        self._keep_tls_session()
        proto, self.proto = self.proto, None
        if proto is None or proto.transport is None:
            return
        transport = proto.transport
        transport.close()
        try:
            async with asyncio.timeout(1.0):
                await proto.lost.wait()
        except TimeoutError:
            _abort(transport)


def _abort(transport: asyncio.BaseTransport) -> None:
    # uvloop's transports do not subclass asyncio's: ask for the method, not the type.
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _ssl_detail(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        return f"TLS handshake failed: {e.reason or e}"
    return f"TLS handshake failed: {e}"


class _Offer:
    """The TLS session a conversation offers in its next handshake, if any."""

    __slots__ = ("session",)

    def __init__(self) -> None:
        self.session: ssl.SSLSession | None = None


# The event loop builds the SSL object inside start_tls or create_connection and takes no
# session, so the context looks here. A holder rather than the session itself: asyncio builds
# it in the task's context, uvloop in a copy taken when the connection was made, and both
# copies hold the same holder.
_OFFER: ContextVar[_Offer | None] = ContextVar("_OFFER", default=None)


class _ResumingContext(ssl.SSLContext):
    """A client context whose connections offer the task's saved TLS session, if any."""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        holder = None if server_side or session else _OFFER.get()
        if holder is not None:
            session, holder.session = holder.session, None
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)


class TlsSessions:
    """TLS sessions by (context, address, port, name), as an MTA's TLS session cache keeps them.

    A batch meets the same provider's MX again and again; resuming skips the certificate
    exchange and its verification, which is most of a handshake's cost on both sides.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.items: dict[tuple[ssl.SSLContext, str, int, str | None], ssl.SSLSession] = {}

    def get(self, key: tuple[ssl.SSLContext, str, int, str | None]) -> ssl.SSLSession | None:
        return self.items.get(key)

    def put(self, key: tuple[ssl.SSLContext, str, int, str | None], sess: ssl.SSLSession) -> None:
        self.items.pop(key, None)
        if len(self.items) >= self.size:
            del self.items[next(iter(self.items))]
        self.items[key] = sess


_TLS_SESSIONS = TlsSessions()


@lru_cache(maxsize=8)
def _contexts(cafile: str | None) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A verifying context (chain only; the name is checked separately) and a permissive one.

    Cached: loading the system's CA store costs more than a whole loopback session.
    """
    verify = trust_context(cafile, _ResumingContext)
    verify.check_hostname = False
    verify.verify_mode = ssl.CERT_REQUIRED
    # Verification is off here, so the system's CA store would only cost loading time.
    loose = _ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    loose.check_hostname = False
    loose.verify_mode = ssl.CERT_NONE
    return verify, loose


def trust_context(
    cafile: str | None, kind: type[ssl.SSLContext] = ssl.SSLContext
) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, and those of `cafile` too."""
    ctx = kind(ssl.PROTOCOL_TLS_CLIENT)  # certificate and name checks on, as by default
    ctx.load_default_certs()
    if cafile:
        ctx.load_verify_locations(cafile=cafile)
    return ctx


def _tls_facts(
    conv: _Conversation,
    offered: bool,
    implicit: bool,
    trusted: bool,
    verify_error: str | None,
    injected: int,
) -> TlsInfo:
    obj = conv.ssl_object()
    if obj is None:
        return TlsInfo(
            offered=offered,
            attempted=True,
            implicit=implicit,
            ok=False,
            error="no TLS session",
            injected_plaintext=injected,
        )
    der = obj.getpeercert(binary_form=True)
    cert = _certificate(obj, der, trusted) if der else None
    cipher = obj.cipher()
    return TlsInfo(
        offered=offered,
        attempted=True,
        implicit=implicit,
        ok=True,
        protocol=obj.version(),
        cipher=cipher[0] if cipher else None,
        certificate=cert,
        trusted=trusted,
        verify_error=verify_error,
        name_matches=name_matches(conv.host, cert) if cert else None,
        injected_plaintext=injected,
        resumed=obj.session_reused,
    )


_CERTS: dict[tuple[bytes, bool], Certificate | None] = {}


def _certificate(obj: ssl.SSLObject, der: bytes, trusted: bool) -> Certificate | None:
    """Facts of a peer certificate; one MX shows the same one to every session of a batch."""
    key = (der, trusted)
    if key in _CERTS:
        cert = _CERTS[key]
        if cert is None:
            return None
        left = (datetime.fromisoformat(cert.not_after) - datetime.now(UTC)).days
        return replace(cert, days_left=left)
    # A verified handshake already has the certificate decoded by OpenSSL; parse it ourselves
    # only when verification was off (untrusted certificates).
    cert = verified_facts(obj.getpeercert(), der) if trusted else None
    if cert is None:
        cert = certificate_facts(der)
    if len(_CERTS) >= 1024:
        del _CERTS[next(iter(_CERTS))]
    _CERTS[key] = cert
    return cert


@dataclass
class Kept:
    """A connection left open after a transaction and its RSET, for another target's."""

    conv: _Conversation
    prologue: tuple[Step, ...]  # the connection's own steps: greeting, EHLO, TLS
    tls: TlsInfo
    extensions: tuple[tuple[str, str], ...]
    helo: str
    uses: int = 1  # transactions run on it so far

    @property
    def alive(self) -> bool:
        proto = self.conv.proto
        return proto is not None and proto.is_connected


REUSED_NOTE = "connection reused: it was opened, and these first steps ran, for an earlier target"


async def run_session(host: str, address: str, port: int, opts: SessionOptions) -> Session:
    """Run one probe session; never raises for anything the network does."""
    session, _ = await open_session(host, address, port, opts, keep=False)
    return session


async def open_session(
    host: str, address: str, port: int, opts: SessionOptions, *, keep: bool = True
) -> tuple[Session, Kept | None]:
    """A session as `run_session` runs it; with `keep`, a completed transaction ends with RSET
    instead of QUIT and the open connection comes back for `reuse_session`."""
    steps: list[Step] = []
    state: dict[str, object] = {"keep": keep}
    try:
        async with asyncio.timeout(opts.budget):
            session = await _session(host, address, port, opts, steps, state)
        kept = state.get("kept")
        return session, kept if isinstance(kept, Kept) else None
    except BaseException as e:
        # Out of time or cancelled mid-conversation: the connection must not outlive it.
        conv = state.get("conv")
        if isinstance(conv, _Conversation):
            conv.abort()
        if not isinstance(e, TimeoutError):
            raise
        steps.append(
            Step(
                "BUDGET",
                None,
                None,
                opts.budget * 1000,
                StepError(ErrorKind.BUDGET, f"session took longer than {opts.budget:g} s"),
            )
        )
        tls = state.get("tls")
        return Session(
            host,
            address,
            port,
            tuple(steps),
            tls if isinstance(tls, TlsInfo) else TlsInfo(False, False),
            completed=False,
            outcome="budget",
        ), None


async def reuse_session(kept: Kept, opts: SessionOptions) -> tuple[Session | None, Kept | None]:
    """Another target's MAIL and RCPT on a kept connection.

    Only a clean transaction counts: when the connection has gone, or MAIL or a RCPT gets
    anything but an answer about the recipient (421, a refused MAIL, no reply), the connection
    is closed and (None, None) comes back, so that the target gets a fresh connection and its
    record shows what that one says.
    """
    conv = kept.conv
    if not kept.alive:
        await conv.close()
        return None, None
    first, *rest = kept.prologue
    note = f"{REUSED_NOTE}; {first.note}" if first.note else REUSED_NOTE
    steps = [replace(first, note=note), *rest]
    conv.steps = steps
    smtputf8 = any(k == "SMTPUTF8" for k, _ in kept.extensions)
    clean = False
    try:
        async with asyncio.timeout(opts.budget):
            mail = await _mail(conv, opts.mail_from, smtputf8)
            if mail is not None and mail.code // 100 == 2:
                clean = True
                for rcpt in opts.rcpts:
                    r = await _rcpt(conv, rcpt, smtputf8)
                    if conv.proto is None or (r is not None and r.code == 421):
                        clean = False
                        break
            again = clean and await _rset_keeps(conv)
    except TimeoutError:
        clean = again = False
    except BaseException:
        conv.abort()
        raise
    if not clean:
        await conv.close()
        return None, None
    session = Session(
        conv.host,
        conv.address,
        conv.port,
        tuple(steps),
        kept.tls,
        kept.extensions,
        True,
        "completed",
        kept.helo,
        reused=True,
    )
    if not again:  # the transaction stands; the connection ends here
        try:
            await _finish(conv, rset=False)
        except BaseException:
            conv.abort()
            raise
        return session, None
    kept.uses += 1
    return session, kept


async def release(kept: Kept) -> None:
    """End a kept connection politely: QUIT, then close (cut, if this is cancelled)."""
    kept.conv.steps = []
    try:
        await _finish(kept.conv, rset=False)
    except BaseException:
        kept.conv.abort()
        raise


async def _rset_keeps(conv: _Conversation) -> bool:
    """RSET after a transaction: whether the connection can serve another one."""
    reply = await conv.command("RSET")
    return reply is not None and reply.code // 100 == 2 and conv.proto is not None


async def _session(
    host: str,
    address: str,
    port: int,
    opts: SessionOptions,
    steps: list[Step],
    state: dict[str, object],
) -> Session:
    verify_ctx, loose_ctx = _contexts(opts.cafile)
    trusted = True
    verify_error: str | None = None
    tls = TlsInfo(offered=False, attempted=False)
    extensions: tuple[tuple[str, str], ...] = ()
    helo = opts.helo or ""

    def done(completed: bool, outcome: str) -> Session:
        return Session(host, address, port, tuple(steps), tls, extensions, completed, outcome, helo)

    plain_fallback = False
    for attempt in range(3):
        conv = _Conversation(host, address, port, opts)
        conv.steps = steps
        state["conv"] = conv
        ctx = verify_ctx if trusted else loose_ctx
        greeting = await conv.connect(ctx if opts.implicit_tls else None)
        if opts.implicit_tls and greeting is None and attempt == 0 and _cert_untrusted(steps):
            trusted, verify_error = False, _last_error(steps)
            steps[-1] = replace(steps[-1], note="retrying without certificate verification")
            continue
        if greeting is None:
            return done(False, steps[-1].error.kind.value if steps[-1].error else "no_greeting")
        helo = opts.helo or default_helo(conv.sockname)
        if opts.implicit_tls:
            tls = _tls_facts(conv, False, True, trusted, verify_error, 0)
            state["tls"] = tls
        if greeting.code // 100 != 2:
            # RFC 5321 §3.1: after a 554 greeting the server waits for QUIT; 421 closes at once.
            if greeting.code != 421 and conv.proto is not None and conv.proto.is_connected:
                await conv.command("QUIT")
            await conv.close()
            return done(False, f"greeting_{greeting.code // 100}xx")
        if opts.quit_after == "connect":
            await _finish(conv, rset=False)
            return done(True, "quit_after_connect")
        ehlo = await _ehlo(conv, helo)
        if ehlo is None or ehlo.code // 100 != 2:
            await conv.close()
            return done(False, "ehlo_failed")
        extensions = parse_extensions(ehlo.lines)
        offered = any(k == "STARTTLS" for k, _ in extensions)
        if not opts.implicit_tls and not plain_fallback:
            tls = TlsInfo(offered=offered, attempted=False)
        state["tls"] = tls
        if opts.quit_after == "ehlo":
            await _finish(conv, rset=False)
            return done(True, "quit_after_ehlo")
        want_tls = opts.starttls == "require" or (
            opts.starttls == "auto" and offered and not plain_fallback
        )
        if not opts.implicit_tls and want_tls:
            if not offered:
                steps.append(
                    Step(
                        "STARTTLS",
                        None,
                        None,
                        0.0,
                        StepError(ErrorKind.NOT_OFFERED, "the server does not offer STARTTLS"),
                    )
                )
                await _finish(conv, rset=False)
                return done(False, "starttls_not_offered")
            before = conv.proto.unsolicited_total if conv.proto else 0
            reply, err = await conv.starttls(verify_ctx if trusted else loose_ctx)
            proto = conv.proto
            injected = proto.unsolicited_total - before if proto is not None else 0
            if err is not None and attempt == 0 and isinstance(err, ssl.SSLCertVerificationError):
                trusted, verify_error = (
                    False,
                    _ssl_detail(err).removeprefix("certificate not trusted: "),
                )
                steps[-1] = replace(steps[-1], note="retrying without certificate verification")
                continue
            failed = reply is None or reply.code != 220 or err is not None
            if failed:
                tls = TlsInfo(
                    offered=offered,
                    attempted=True,
                    ok=False,
                    error=(
                        steps[-1].error.detail
                        if steps[-1].error
                        else f"STARTTLS refused with {reply.code if reply else 'no reply'}"
                    ),
                )
                state["tls"] = tls
                if opts.starttls == "require":
                    await _finish(conv, rset=False)
                    return done(False, "tls_failed")
                # Opportunistic TLS, as MTAs do it: go on in plaintext, on a new connection
                # when the failed handshake took this one down.
                if conv.proto is None or not conv.proto.is_connected:
                    plain_fallback = True
                    steps[-1] = replace(steps[-1], note="retrying without STARTTLS")
                    continue
            else:
                tls = _tls_facts(conv, offered, False, trusted, verify_error, injected)
                state["tls"] = tls
            if opts.quit_after == "tls":
                await _finish(conv, rset=False)
                return done(True, "quit_after_tls")
            if not failed:
                ehlo = await _ehlo(conv, helo)
                if ehlo is None or ehlo.code // 100 != 2:
                    await conv.close()
                    return done(False, "ehlo_failed")
                extensions = parse_extensions(ehlo.lines)
        elif opts.quit_after == "tls":
            await _finish(conv, rset=False)
            return done(True, "quit_after_tls")
        smtputf8 = any(k == "SMTPUTF8" for k, _ in extensions)
        prologue = tuple(steps)
        mail = await _mail(conv, opts.mail_from, smtputf8)
        if mail is None:
            return done(False, steps[-1].error.kind.value if steps[-1].error else "mail_failed")
        if mail.code // 100 != 2 or opts.quit_after == "mail":
            await _finish(conv)
            return done(True, "mail_answered")
        for rcpt in opts.rcpts:
            r = await _rcpt(conv, rcpt, smtputf8)
            if r is None and conv.proto is None:
                return done(False, "rcpt_failed")
        if state.get("keep") and opts.quit_after in (None, "rcpt") and conv.proto is not None:
            if await _rset_keeps(conv):
                state["kept"] = Kept(conv, prologue, tls, extensions, helo)
                return done(True, "completed")
            await _finish(conv, rset=False)
            return done(True, "completed")
        await _finish(conv)
        return done(True, "completed")
    return done(False, "tls_failed")


def _cert_untrusted(steps: list[Step]) -> bool:
    err = steps[-1].error if steps else None
    return bool(
        err
        and err.kind is ErrorKind.TLS_FAILED
        and err.detail.startswith("certificate not trusted")
    )


def _last_error(steps: list[Step]) -> str | None:
    err = steps[-1].error if steps else None
    return err.detail.removeprefix("certificate not trusted: ") if err else None


async def _ehlo(conv: _Conversation, helo: str) -> WireReply | None:
    reply = await conv.command("EHLO", helo)
    if reply is not None and reply.code in (500, 501, 502, 504, 550) and conv.proto is not None:
        # RFC 5321 §3.2: a server that does not know EHLO may still speak HELO.
        return await conv.command("HELO", helo)
    return reply


def _refuse_locally(conv: _Conversation, command: str, detail: str) -> None:
    conv.steps.append(Step(command, None, None, 0.0, StepError(ErrorKind.REFUSED_LOCALLY, detail)))


async def _mail(conv: _Conversation, sender: str, smtputf8: bool) -> WireReply | None:
    args = [f"FROM:<{sender}>"]
    if not sender.isascii():
        if not smtputf8:
            _refuse_locally(
                conv,
                "MAIL",
                "not sent: the sender address is not ASCII and the server does not offer SMTPUTF8",
            )
            await conv.command("QUIT")
            return None
        args.append("SMTPUTF8")
    return await conv.command("MAIL", *args)


async def _rcpt(conv: _Conversation, rcpt: str, smtputf8: bool) -> WireReply | None:
    if not rcpt.isascii() and not smtputf8:
        _refuse_locally(
            conv, "RCPT", f"not sent: {rcpt} is not ASCII and the server does not offer SMTPUTF8"
        )
        return None
    return await conv.command("RCPT", f"TO:<{rcpt}>")


async def _finish(conv: _Conversation, rset: bool = True) -> None:
    """End politely: RSET (when a transaction may be open) and QUIT, then close."""
    if rset and conv.proto is not None:
        await conv.command("RSET")
    if conv.proto is not None:
        await conv.command("QUIT")
    await conv.close()
