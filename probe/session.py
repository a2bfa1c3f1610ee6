"""I/O: one SMTP session with one address, every exchange recorded as a `Step`.

The dialogue reads as its phases, each a short function that either lets the session go on
(None) or says how it ended (an `Outcome`):

    greet (connect, greeting) -> hello (EHLO/HELO) -> secure (STARTTLS) -> transaction

Network trouble is recorded in the steps and never raised. The connection itself is
`probe.wire`; the TLS context, resumption and trust are `probe.tls`; what the sessions of a run
share is `probe.context`. Kept connections are made and reused here, and managed by
`probe.pool`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from probe.certs import Judgement
from probe.config import QuitAfter, SessionOptions, StartTls
from probe.context import RunContext
from probe.messages import msg
from probe.result import (
    ErrorKind,
    Outcome,
    Session,
    Step,
    StepError,
    TlsInfo,
    WireReply,
)
from probe.target import is_ip
from probe.tls import Offer, SessionKey, unverified_chain
from probe.wire import Connection, Failure, elapsed_ms

REUSED_NOTE = msg("session.reused")
PLAIN_NOTE = msg("session.plain")
NO_TLS = TlsInfo(offered=False, attempted=False)


def default_helo(fqdn: str, sockname: Sequence[object] | None) -> str:
    """An FQDN when the machine has one, else an address literal (RFC 5321 §4.1.3)."""
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


class Again(Enum):
    """An attempt that failed in a way that calls for another on a new connection."""

    # STARTTLS failed and took the connection down: go on in plaintext on a new one, as an
    # opportunistic MTA does.
    PLAINTEXT = "plaintext"


Ending = Outcome | Again | None


@dataclass(eq=False)
class KeptConnection:
    """A connection left open after a transaction and its RSET, for another target's."""

    conn: Connection
    host: str
    address: str
    port: int
    prologue: tuple[Step, ...]  # the connection's own steps: greeting, EHLO, TLS
    tls: TlsInfo
    extensions: tuple[tuple[str, str], ...]
    helo: str
    opts: SessionOptions  # what it was opened with: its timeouts bound the QUIT that ends it
    uses: int = 1  # transactions run on it so far
    rejections: int = 0  # 4xx and 5xx replies drawn so far (servers count errors per connection)

    @property
    def alive(self) -> bool:
        return self.conn.alive


@dataclass(eq=False)
class _Dialogue:
    """The running state of one session: its connection, steps, and what it learnt."""

    host: str
    address: str
    port: int
    opts: SessionOptions
    run: RunContext
    steps: list[Step] = field(default_factory=list)
    conn: Connection | None = None
    tls: TlsInfo = NO_TLS
    extensions: tuple[tuple[str, str], ...] = ()
    helo: str = ""
    plain: bool = False  # STARTTLS failed once: this attempt stays in plaintext
    keep: bool = False  # end a clean transaction with RSET and keep the connection
    kept: KeptConnection | None = None
    _holder: Offer | None = None
    _sni: str | None = None  # "" once known to be an address
    _tls_key: SessionKey | None = None
    _offered: Judgement | None = None  # the verdict saved with the TLS session offered
    _judged: Judgement | None = None

    # -- recording -------------------------------------------------------------------------

    def add(self, step: Step) -> None:
        self.steps.append(step)
        if self.run.observer is not None:
            self.run.observer.step(step)

    def failed(self, command: str, sent: str | None, start: float, why: Failure) -> None:
        tls = self.conn.tls if self.conn is not None else False
        self.add(Step(command, sent, None, elapsed_ms(start), StepError(why.kind, why.detail), tls))

    def refuse_locally(self, command: str, detail: str) -> None:
        self.add(Step(command, None, None, 0.0, StepError(ErrorKind.REFUSED_LOCALLY, detail)))

    def _unasked(self, before: int) -> str | None:
        """A note when the server sent more than the reply (we never pipeline)."""
        conn = self.conn
        if conn is None or conn.unsolicited_total <= before:
            return None
        n = conn.unsolicited_total - before
        text = conn.unsolicited_tail(n)[:80].decode("utf-8", "backslashreplace")
        return msg("session.unasked", count=n, text=repr(text))

    def session(self, outcome: Outcome) -> Session:
        return Session(
            self.host,
            self.address,
            self.port,
            tuple(self.steps),
            self.tls,
            self.extensions,
            outcome,
            self.helo,
        )

    def ended_by_error(self, otherwise: Outcome) -> Outcome:
        """The outcome named by the last step's error, if the last step has one."""
        err = self.steps[-1].error if self.steps else None
        return Outcome.of_error(err.kind) if err else otherwise

    # -- exchanges -------------------------------------------------------------------------

    @property
    def sni(self) -> str | None:
        """The name sent in the TLS handshake: none for an address, or for a name the
        handshake cannot carry (a label over 63 characters; library callers may pass one)."""
        if self._sni is None:
            self._sni = "" if is_ip(self.host) or not _sni_ready(self.host) else self.host
        return self._sni or None

    def _offer(self) -> None:
        """Offer the TLS session saved from this run's last visit (RFC 5077 / RFC 8446)."""
        self._tls_key = (self.address, self.port, self.sni, self.opts.cafile)
        saved = self.run.tls.offer(self._tls_key) if self.opts.resume_tls else None
        self._offered = saved.verdict if saved else None
        if self._holder is not None:
            self._holder.session = saved.session if saved else None

    def _keep_tls_session(self, conn: Connection) -> None:
        obj = conn.ssl_object() if conn.tls and self.opts.resume_tls else None
        if obj is None or self._tls_key is None or self._judged is None:
            return
        if not self.run.tls.needs_fresh(self._tls_key, obj.session_reused):
            return  # the kept session still resumes (see probe.tls.OFFERS_PER_SESSION)
        try:
            sess = obj.session
            # TLS 1.3 sends its tickets after the handshake; a session without one cannot
            # resume.
            keep = sess is not None and (sess.has_ticket or bool(sess.id))
        except (ssl.SSLError, OSError, ValueError):
            # OpenSSL cannot always serialise what a server sent (a certificate over 64 KB
            # fails i2d): the next visit then simply makes a full handshake.
            return
        if keep and sess is not None:
            self.run.tls.save(self._tls_key, sess, self._judged)

    async def connect(self) -> WireReply | None:
        """Open the connection (TLS first with --tls) and read the greeting."""
        t = self.opts.timeouts
        wants_tls = self.opts.implicit_tls or self.opts.starttls is not StartTls.NEVER
        if wants_tls:  # before the connection exists: uvloop copies the context then
            self._holder = self.run.tls.context.holder()
        ctx = self.run.tls.context if self.opts.implicit_tls else None
        if ctx is not None:
            self._offer()
        start = time.perf_counter()
        conn, got = await Connection.open(
            self.address,
            self.port,
            tls=ctx,
            server_hostname=self.sni,
            connect_timeout=t.connect,
            greeting_timeout=t.greeting,
            local_address=self.opts.source_address,
            known=self.run.replies.known,
        )
        if conn is None or isinstance(got, Failure):
            self.failed("CONNECT", None, start, got if isinstance(got, Failure) else _GONE)
            return None
        self.conn = conn
        conn.before_close = self._keep_tls_session
        self.helo = self.opts.helo or default_helo(self.run.fqdn(), conn.sockname)
        note = self._unasked(0)
        if conn.tls:
            self.tls = self.tls_facts(offered=False, injected=0)
            note = _joined(note, self._untrusted_note())
        reply = self.run.replies.get(got, "CONNECT")
        self.add(
            Step("CONNECT", None, reply, elapsed_ms(start), None, conn.tls, note, conn.connect_ms)
        )
        return reply

    async def command(self, name: str, *args: str) -> WireReply | None:
        """Send one command; record the reply or the failure."""
        sent = " ".join((name, *args)) if args else name
        start = time.perf_counter()
        conn = self.conn
        if conn is None:
            gone = Failure(ErrorKind.DISCONNECTED, msg("wire.already_closed"))
            self.failed(name, sent, start, gone)
            return None
        before = conn.unsolicited_total
        # A connection that is gone sends nothing: send_line says so as this did.
        got = await conn.send_line(sent, self.opts.timeouts.command)
        if isinstance(got, Failure):
            self.failed(name, sent, start, got)
            return None
        reply = self.run.replies.get(got, name)
        # (The note's own call only when there is something to say: this runs for every
        # command of every session.)
        note = self._unasked(before) if conn.unsolicited_total > before else None
        self.add(Step(name, sent, reply, elapsed_ms(start), None, conn.tls, note))
        if reply.code == 421:  # the server is closing the channel (RFC 5321 §3.8)
            await conn.close()
        return reply

    async def starttls(self, offered: bool) -> bool:
        """STARTTLS and the handshake; True when the session is now encrypted."""
        start = time.perf_counter()
        conn = self.conn
        if conn is None or not conn.alive:
            self.failed("STARTTLS", "STARTTLS", start, _GONE)
            self.tls = TlsInfo(offered, True, ok=False, error=_GONE.detail)
            return False
        before = conn.unsolicited_total
        self._offer()
        timeout = self.opts.timeouts.command
        got = await conn.starttls(self.run.tls.context, self.sni, timeout)
        reply = self.run.replies.get(got.reply, "STARTTLS") if got.reply else None
        if reply is None or reply.code != 220 or got.failure is not None:
            error = StepError(got.failure.kind, got.failure.detail) if got.failure else None
            shook = conn.handshake_ms if reply is not None and reply.code == 220 else None
            self.add(
                Step("STARTTLS", "STARTTLS", reply, elapsed_ms(start), error, False, None, shook)
            )
            why = (
                error.detail
                if error
                else msg("session.starttls_refused", code=reply.code)
                if reply
                else msg("session.starttls_no_reply")
            )
            self.tls = TlsInfo(offered, True, ok=False, error=why)
            return False
        self.tls = self.tls_facts(offered, conn.unsolicited_total - before)
        note = self._untrusted_note()
        shake = conn.handshake_ms
        self.add(Step("STARTTLS", "STARTTLS", reply, elapsed_ms(start), None, False, note, shake))
        return True

    def tls_facts(self, offered: bool, injected: int) -> TlsInfo:
        """What the handshake established, and whether the certificate is trusted."""
        obj = self.conn.ssl_object() if self.conn is not None else None
        implicit = self.opts.implicit_tls
        if obj is None:
            return TlsInfo(
                offered,
                True,
                implicit,
                False,
                error=msg("session.no_tls_session"),
                injected_plaintext=injected,
            )
        resumed = obj.session_reused
        judged = self._offered if resumed and self._offered else None
        chain = () if judged is not None else unverified_chain(obj)
        if judged is None:
            judged = self.run.tls.judge(chain, self.opts.cafile)
        self._judged = judged
        cert = judged.certificate
        cipher = obj.cipher()
        info = TlsInfo(
            offered=offered,
            attempted=True,
            implicit=implicit,
            ok=True,
            protocol=obj.version(),
            cipher=cipher[0] if cipher else None,
            certificate=cert,
            trusted=judged.trusted,
            verify_error=judged.error,
            name_matches=self.run.tls.names(self.host, cert)
            if cert and judged.names_known
            else None,
            injected_plaintext=injected,
            resumed=resumed,
            chain=chain,
        )
        if self.run.observer is not None:
            self.run.observer.tls(info)
        return info

    def _untrusted_note(self) -> str | None:
        if not self.tls.ok or self.tls.trusted:
            return None
        return msg("session.untrusted", why=self.tls.verify_error or msg("session.no_reason"))

    async def finish(self, rset: bool = True) -> None:
        """End politely: RSET (when a transaction may be open) and QUIT, then close."""
        if rset and self.opened:
            await self.command("RSET")
        if self.opened:
            await self.command("QUIT")
        await self.close()

    @property
    def alive(self) -> bool:
        """Open on both ends."""
        return self.conn is not None and self.conn.alive

    @property
    def opened(self) -> bool:
        """Not closed by us (the server may have gone; a command then records that)."""
        return self.conn is not None and not self.conn.closed

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    def abort(self) -> None:
        if self.conn is not None:
            self.conn.abort()


_GONE = Failure(ErrorKind.DISCONNECTED, msg("wire.closed"))


def _sni_ready(host: str) -> bool:
    """Whether ssl accepts `host` as server_hostname (it encodes it with the idna codec)."""
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def _joined(a: str | None, b: str | None) -> str | None:
    return msg("join.two", first=a, second=b) if a and b else a or b


# -- the phases --------------------------------------------------------------------------------


async def _greet(d: _Dialogue) -> Ending:
    greeting = await d.connect()
    if greeting is None:
        return d.ended_by_error(Outcome.NO_GREETING)
    if greeting.code // 100 != 2:
        # RFC 5321 §3.1: after a 554 greeting the server waits for QUIT; 421 closes at once.
        if greeting.code != 421 and d.alive:
            await d.command("QUIT")
        await d.close()
        return Outcome.of_greeting(greeting.code)
    if d.opts.quit_after is QuitAfter.CONNECT:
        await d.finish(rset=False)
        return Outcome.QUIT_AFTER_CONNECT
    return None


async def _ehlo(d: _Dialogue) -> bool:
    """EHLO (HELO where EHLO is not known); True when the server said yes."""
    reply = await d.command("EHLO", d.helo)
    if reply is not None and reply.code in (500, 501, 502, 504, 550) and d.opened:
        # RFC 5321 §3.2: a server that does not know EHLO may still speak HELO.
        reply = await d.command("HELO", d.helo)
    if reply is None or reply.code // 100 != 2:
        await d.close()
        return False
    d.extensions = d.run.replies.extensions(reply.lines)
    return True


def _offers(d: _Dialogue, keyword: str) -> bool:
    for k, _ in d.extensions:  # noqa: SIM110  (a loop, not any(): asked several times a session)
        if k == keyword:
            return True
    return False


async def _hello(d: _Dialogue) -> Ending:
    if not await _ehlo(d):
        return Outcome.EHLO_FAILED
    if not d.opts.implicit_tls and not d.plain:
        d.tls = TlsInfo(offered=_offers(d, "STARTTLS"), attempted=False)
    if d.opts.quit_after is QuitAfter.EHLO:
        await d.finish(rset=False)
        return Outcome.QUIT_AFTER_EHLO
    return None


async def _secure(d: _Dialogue) -> Ending:
    offered = _offers(d, "STARTTLS")
    mode = d.opts.starttls
    wanted = mode is StartTls.REQUIRE or (mode is StartTls.AUTO and offered and not d.plain)
    if d.opts.implicit_tls or not wanted:
        return await _quit_after_tls(d)
    if not offered:
        refusal = StepError(ErrorKind.NOT_OFFERED, msg("session.starttls_not_offered"))
        d.add(Step("STARTTLS", None, None, 0.0, refusal))
        await d.finish(rset=False)
        return Outcome.STARTTLS_NOT_OFFERED
    secured = await d.starttls(offered)
    if not secured:
        if mode is StartTls.REQUIRE:
            await d.finish(rset=False)
            return Outcome.TLS_FAILED
        if not d.alive:
            d.steps[-1] = d.steps[-1]._replace(note=PLAIN_NOTE)
            return Again.PLAINTEXT
        # Refused with a reply: opportunistic TLS goes on in plaintext on this connection.
    if (ended := await _quit_after_tls(d)) is not None:
        return ended
    if secured and not await _ehlo(d):  # RFC 3207 §4.2: the server forgot the first EHLO
        return Outcome.EHLO_FAILED
    return None


async def _quit_after_tls(d: _Dialogue) -> Ending:
    if d.opts.quit_after is QuitAfter.TLS:
        await d.finish(rset=False)
        return Outcome.QUIT_AFTER_TLS
    return None


async def _mail(d: _Dialogue) -> WireReply | None:
    sender = d.opts.mail_from
    args = [f"FROM:<{sender}>"]
    if not sender.isascii() and not _offers(d, "SMTPUTF8"):
        d.refuse_locally(
            "MAIL",
            msg("session.sender_not_ascii"),
        )
        await d.command("QUIT")
        await d.close()
        return None
    # RFC 6531 §3.4: a transaction with any non-ASCII address declares SMTPUTF8 on MAIL; a
    # recipient the server cannot take without it is refused locally at its RCPT.
    if not "".join((sender, *d.opts.rcpts)).isascii() and _offers(d, "SMTPUTF8"):
        args.append("SMTPUTF8")
    return await d.command("MAIL", *args)


async def _rcpt(d: _Dialogue, rcpt: str) -> WireReply | None:
    if not rcpt.isascii() and not _offers(d, "SMTPUTF8"):
        d.refuse_locally("RCPT", msg("session.rcpt_not_ascii", rcpt=rcpt))
        return None
    return await d.command("RCPT", f"TO:<{rcpt}>")


async def _rcpts(d: _Dialogue, strict: bool) -> bool:
    """Every RCPT; False when the connection was closed for lack of a reply (`strict`: for
    any reason, a 421 included)."""
    for rcpt in d.opts.rcpts:
        reply = await _rcpt(d, rcpt)
        if not d.opened and (strict or reply is None):
            return False
    return True


def _rejections(steps: Sequence[Step]) -> int:
    return sum(1 for s in steps if s.reply is not None and s.reply.code >= 400)


async def _transaction(d: _Dialogue) -> Ending:
    prologue = tuple(d.steps)
    mail = await _mail(d)
    if mail is None:
        return d.ended_by_error(Outcome.MAIL_FAILED)
    if mail.code // 100 != 2 or d.opts.quit_after is QuitAfter.MAIL:
        await d.finish()
        return Outcome.MAIL_ANSWERED
    if not await _rcpts(d, strict=False):
        return Outcome.RCPT_FAILED
    if d.keep and d.opts.quit_after in (None, QuitAfter.RCPT) and d.opened:
        if await _rset_keeps(d):
            rejections = _rejections(d.steps[len(prologue) :])
            d.kept = KeptConnection(
                d.conn,  # type: ignore[arg-type]  # alive, so there is one
                d.host,
                d.address,
                d.port,
                prologue,
                d.tls,
                d.extensions,
                d.helo,
                d.opts,
                rejections=rejections,
            )
            return Outcome.COMPLETED
        await d.finish(rset=False)
        return Outcome.COMPLETED
    await d.finish()
    return Outcome.COMPLETED


async def _rset_keeps(d: _Dialogue) -> bool:
    """RSET after a transaction: whether the connection can serve another one."""
    reply = await d.command("RSET")
    return reply is not None and reply.code // 100 == 2 and d.opened


PHASES = (_greet, _hello, _secure, _transaction)


async def _converse(d: _Dialogue) -> Outcome:
    """The phases in turn until one ends the session; once more, in plaintext on a new
    connection, when STARTTLS failed and took the first one down. (One coroutine for both
    loops: every reply of the session resumes each coroutine below the task.)"""
    while True:
        for phase in PHASES:
            ended = await phase(d)
            if ended is not None:
                break
        else:
            return Outcome.COMPLETED  # _transaction always ends the session; for the checker
        if ended is Again.PLAINTEXT and not d.plain:
            d.plain = True
            continue
        return ended if isinstance(ended, Outcome) else Outcome.TLS_FAILED


# -- entry points ------------------------------------------------------------------------------


def time_left(opts: SessionOptions) -> float:
    """Seconds a session may take: its budget, or less when the target's deadline is nearer."""
    budget = opts.timeouts.budget
    if opts.deadline is None:
        return budget
    return max(0.0, min(budget, opts.deadline - time.monotonic()))


async def run_session(
    host: str, address: str, port: int, opts: SessionOptions, run: RunContext | None = None
) -> Session:
    """Run one probe session; never raises for anything the network does."""
    session, _ = await open_session(host, address, port, opts, run, keep=False)
    return session


async def open_session(
    host: str,
    address: str,
    port: int,
    opts: SessionOptions,
    run: RunContext | None = None,
    *,
    keep: bool = True,
) -> tuple[Session, KeptConnection | None]:
    """A session as `run_session` runs it; with `keep`, a clean transaction ends with RSET
    instead of QUIT and the open connection comes back for `reuse_session`."""
    run = run or RunContext()
    d = _Dialogue(host, address, port, opts, run, keep=keep)
    if run.observer is not None:
        run.observer.session_started(host, address, port)
    budget = time_left(opts)
    try:
        async with asyncio.timeout(budget):
            outcome = await _converse(d)
    except BaseException as e:
        # Out of time or cancelled mid-conversation: the connection must not outlive it.
        d.abort()
        if not isinstance(e, TimeoutError):
            raise
        why = StepError(ErrorKind.BUDGET, msg("session.budget", seconds=round(budget, 2)))
        d.add(Step("BUDGET", None, None, budget * 1000, why))
        outcome, d.kept = Outcome.BUDGET, None
    session = d.session(outcome)
    if run.observer is not None:
        run.observer.session_ended(session)
    return session, d.kept


class SessionRunner(Protocol):
    """Runs one session with one address: directly, within limits, on a kept connection or
    from a cache. The runner, the pool, the limits and the batch's cache meet here."""

    async def session(
        self, host: str, address: str, port: int, opts: SessionOptions
    ) -> Session: ...


class Direct:
    """Each session on a new connection, at once."""

    def __init__(self, run: RunContext | None = None) -> None:
        self.run = run or RunContext()

    async def session(self, host: str, address: str, port: int, opts: SessionOptions) -> Session:
        return await run_session(host, address, port, opts, self.run)


@dataclass(frozen=True, slots=True)
class Reused:
    """A target served on a kept connection; `kept` is it again, unless it ended here."""

    session: Session
    kept: KeptConnection | None


async def reuse_session(
    kept: KeptConnection, opts: SessionOptions, run: RunContext | None = None
) -> Reused | None:
    """Another target's MAIL and RCPT on a kept connection.

    Only a clean transaction counts: when the connection has gone, or MAIL or a RCPT gets
    anything but an answer about the recipient (421, a refused MAIL, no reply), the connection
    is closed and None comes back, so that the target gets a fresh connection and its record
    shows what that one says.
    """
    if not kept.alive:
        await kept.conn.close()
        return None
    d = _reopened(kept, opts, run or RunContext())
    try:
        async with asyncio.timeout(time_left(opts)):
            clean = await _reused_transaction(d)
            again = clean and await _rset_keeps(d)
    except TimeoutError:
        clean = again = False
    except BaseException:
        d.abort()
        raise
    if not clean:
        await d.close()
        return None
    session = d.session(Outcome.COMPLETED)._replace(reused=True)
    kept.rejections += _rejections(d.steps[len(kept.prologue) :])
    if not again:  # the transaction stands; the connection ends here
        try:
            await d.finish(rset=False)
        except BaseException:
            d.abort()
            raise
        return Reused(session, None)
    kept.uses += 1
    return Reused(session, kept)


def _reopened(kept: KeptConnection, opts: SessionOptions, run: RunContext) -> _Dialogue:
    first, *rest = kept.prologue
    steps = [first._replace(note=_joined(REUSED_NOTE, first.note)), *rest]
    d = _Dialogue(kept.host, kept.address, kept.port, opts, run, steps)
    d.conn, d.tls, d.extensions, d.helo = kept.conn, kept.tls, kept.extensions, kept.helo
    return d


async def _reused_transaction(d: _Dialogue) -> bool:
    mail = await _mail(d)
    if mail is None or mail.code // 100 != 2:
        return False
    return await _rcpts(d, strict=True) and d.opened


async def release(kept: KeptConnection, run: RunContext | None = None) -> None:
    """End a kept connection politely: QUIT, then close (cut, if this is cancelled)."""
    d = _Dialogue(kept.host, kept.address, kept.port, kept.opts, run or RunContext())
    d.conn = kept.conn
    try:
        await d.finish(rset=False)
    except BaseException:
        d.abort()
        raise
