"""I/O: TLS for one run: the client context, sessions to resume, the trust store and the
verdicts on the chains servers send.

Every handshake completes without verification; trust is judged afterwards from the chain
the server sent, against the same store (`probe.certs.judge`). So a server with an untrusted
certificate sees one connection and one clean handshake, as it would from an MTA that
delivers opportunistically, and the probe still reports why the certificate is not trusted.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import ssl
import sys
import time
import warnings
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification as xv

from probe.cache import Bounded
from probe.certs import Judgement, counted_until, judge, name_matches, with_days_left
from probe.result import Certificate

SessionKey = tuple[str, int, str | None, str | None]  # address, port, SNI name, cafile
# "X509 CERTIFICATE" is the old label, which OpenSSL and cryptography read as well.
_PEM = re.compile(
    rb"-----BEGIN (?:X509 )?CERTIFICATE-----.+?-----END (?:X509 )?CERTIFICATE-----", re.DOTALL
)


class Offer:
    """The TLS session the next handshake of a connection offers, if any."""

    __slots__ = ("session",)

    def __init__(self) -> None:
        self.session: ssl.SSLSession | None = None


class ResumingContext(ssl.SSLContext):
    """A client context whose connections offer the current task's saved TLS session.

    The event loop builds the SSL object itself (in create_connection or start_tls) and
    passes no session, so the context looks it up. A holder in a context variable rather
    than the session: asyncio builds the object in the task's context, uvloop in a copy made
    when the connection was started, and both copies hold the same holder.
    """

    offer: ContextVar[Offer | None]

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        holder = None if server_side or session else self.offer.get()
        if holder is not None:
            session, holder.session = holder.session, None
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def holder(self) -> Offer:
        """A holder for the current task's connections; set before the connection is made
        (uvloop copies the context then), filled just before each handshake."""
        holder = Offer()
        self.offer.set(holder)
        return holder


def client_context() -> ResumingContext:
    """A context that completes every handshake; trust is judged after it."""
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.offer = ContextVar(f"smtp-probe-offer-{id(ctx)}", default=None)
    return ctx


def trust_context(cafile: str | None) -> ssl.SSLContext:
    """A verifying client context (HTTPS): the system's CAs, and those of `cafile` too."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # certificate and name checks on
    ctx.load_default_certs()
    if cafile:
        ctx.load_verify_locations(cafile=cafile)
    return ctx


def _pem_certificates(data: bytes) -> list[x509.Certificate]:
    out = []
    with warnings.catch_warnings():
        # Some roots in distribution bundles have quirks cryptography warns about.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        try:  # the whole bundle in one call: half the time of a call per certificate
            return x509.load_pem_x509_certificates(data)
        except ValueError:
            pass  # no certificate at all, or one that cannot be read: each on its own
        for block in _PEM.findall(data):
            try:
                out.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue  # one unreadable root must not cost the others
    return out


def _system_pem() -> bytes:
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile):
        return Path(paths.cafile).read_bytes()
    if paths.capath and os.path.isdir(paths.capath):
        files = sorted(Path(paths.capath).iterdir())
        return b"\n".join(p.read_bytes() for p in files if p.is_file())
    return b""


def load_store(cafile: str | None) -> xv.Store:
    """The system's CAs plus those of `cafile`, as `--cafile` promises."""
    data = _system_pem()
    if cafile:
        data += b"\n" + Path(cafile).read_bytes()
    return xv.Store(_pem_certificates(data))


def _recounted(judged: Judgement) -> Judgement:
    """The verdict with its certificate's `days_left` counted from now."""
    cert = judged.certificate
    fresh = with_days_left(cert) if cert is not None else None
    return judged if fresh is cert else replace(judged, certificate=fresh)


def unverified_chain(obj: ssl.SSLObject) -> tuple[bytes, ...]:
    """The certificates the server sent, leaf first."""
    # Public from Python 3.13; asked by version, not by getattr: a missing attribute costs
    # an AttributeError with its message, once per session.
    if sys.version_info >= (3, 13):
        getter = obj.get_unverified_chain
    else:
        getter = obj._sslobj.get_unverified_chain  # type: ignore[attr-defined]
    chain = getter() or []
    out = []
    for cert in chain:
        der = cert if isinstance(cert, bytes) else cert.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
        out.append(bytes(der))
    if not out and (leaf := obj.getpeercert(binary_form=True)):
        out.append(leaf)
    return tuple(out)


@dataclass(eq=False)
class Saved:
    """A TLS session kept for resumption, the verdict on the chain it was made with, and how
    often it has been offered."""

    session: ssl.SSLSession
    verdict: Judgement
    offered: int = 0


# Reading a TLS session out of OpenSSL (SSLObject.session) costs about 6.5 KB of native memory
# that is never given back (CPython 3.11 with OpenSSL 3.0): a batch that read one after every
# connection grew by that much per target. So a session that still resumes is offered again,
# up to this many times, before a fresh one is read. (Servers with single-use tickets refuse
# the second offer; the full handshake that follows reads a fresh session.)
OFFERS_PER_SESSION = 100


class TlsState:
    """What the TLS handshakes of one run share; nothing outlives the run."""

    def __init__(self, size: int = 1024) -> None:
        self._context: ResumingContext | None = None
        self._stores: dict[str | None, xv.Store] = {}
        self.sessions: Bounded[SessionKey, Saved] = Bounded(size)
        # Each verdict with the time up to which its certificate's `days_left` holds.
        self.verdicts: Bounded[tuple[bytes, str | None], tuple[Judgement, float]] = Bounded(size)
        self._names: Bounded[tuple[str, str], bool] = Bounded(size)

    @property
    def context(self) -> ResumingContext:
        if self._context is None:
            self._context = client_context()
        return self._context

    def store(self, cafile: str | None) -> xv.Store:
        """Loaded once per run: reading the CA bundle costs more than a loopback session."""
        store = self._stores.get(cafile)
        if store is None:
            store = self._stores[cafile] = load_store(cafile)
        return store

    def judge(self, chain: tuple[bytes, ...], cafile: str | None) -> Judgement:
        """The verdict on a chain; one MX shows the same chain to every session of a batch."""
        # By digest: a server may send up to OpenSSL's 100 KB of certificates, and a batch
        # keeps a thousand verdicts.
        digest = hashlib.sha256()
        for der in chain:
            digest.update(len(der).to_bytes(4, "big"))
            digest.update(der)
        key = (digest.digest(), cafile)
        hit = self.verdicts.get(key)
        if hit is not None and time.time() <= hit[1]:
            return hit[0]  # (a batch: every session after the first of each chain)
        judged = judge(self.store(cafile), chain) if hit is None else _recounted(hit[0])
        cert = judged.certificate
        self.verdicts.put(key, (judged, counted_until(cert) if cert is not None else math.inf))
        return judged

    def names(self, host: str, cert: Certificate) -> bool:
        """`certs.name_matches`, once per certificate and host name in a run."""
        key = (cert.sha256, host)
        found = self._names.get(key)
        if found is None:
            found = name_matches(host, cert)
            self._names.put(key, found)
        return found

    def offer(self, key: SessionKey) -> Saved | None:
        """The session to offer for `key`, counted as offered."""
        saved = self.sessions.get(key)
        if saved is not None:
            saved.offered += 1
        return saved

    def needs_fresh(self, key: SessionKey, resumed: bool) -> bool:
        """Whether to read a new session after a handshake: none kept, the kept one did not
        resume, or it has been offered often enough."""
        saved = self.sessions.get(key)
        return saved is None or not resumed or saved.offered >= OFFERS_PER_SESSION

    def save(self, key: SessionKey, session: ssl.SSLSession, verdict: Judgement) -> None:
        self.sessions.put(key, Saved(session, verdict))
